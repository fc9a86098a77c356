"""`python -m flax_style.convert` then `infer.py`, on random PyTorch weights in the official
file layout (written by the independent reference, `tests/torch_reference.py`, with
`torch.save`), and the one-line errors of the converter on broken inputs.

Tiny widths (the converter reads the widths off `vgg_normalised.pth`); the parity of the full
networks is in test_parity.py.
"""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import infer
from flax_style import convert, image_io
from tests import torch_reference as ref

CONTENT_HW = (50, 38)  # not a multiple of 16: the resize rule on both sides
STYLE_HW = (40, 48)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Content and style PNGs, and the float arrays exactly as infer.py reads them."""
    root = tmp_path_factory.mktemp("images")
    paths = {}
    for i, (name, (h, w)) in enumerate({"content": CONTENT_HW, "style": STYLE_HW}.items()):
        image = ref.to_nhwc(ref.smooth_images(1, h, w, seed=i))[0]
        paths[name] = str(root / f"{name}.png")
        image_io.save_image(paths[name], image)
    return paths, {name: image_io.load_image(path) for name, path in paths.items()}


def nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))


@pytest.fixture(scope="module")
def torch_dirs(tmp_path_factory, images):
    """{variant: (dir with the official files and vgg_normalised.pth, torch output image)}."""
    _, arrays = images
    content, style = nchw(arrays["content"]), nchw(arrays["style"])
    dirs = {}
    for seed, variant in enumerate(["proposed", "adaattn"]):
        root = tmp_path_factory.mktemp(variant)
        vgg = ref.init_vgg_(ref.make_vgg(ref.TINY_WIDTHS), seed=seed)
        model = ref.init_model_(ref.make_model(variant, ref.TINY_WIDTHS), seed=seed)
        with torch.no_grad():
            c_feats, s_feats = ref.encode(vgg, content), ref.encode(vgg, style)
            ref.calibrate_output_(model, c_feats, s_feats)
            expected = model(c_feats, s_feats, output_size=CONTENT_HW)
        ref.save_vgg(str(root / ref.VGG_FILE), vgg)
        ref.save_official(str(root), variant, model)
        dirs[variant] = (str(root), ref.to_nhwc(expected)[0])
    return dirs


def run_convert(variant: str, torch_dir: str, out: str, vgg: str | None = None) -> int:
    vgg = vgg or os.path.join(torch_dir, ref.VGG_FILE)
    argv = ["--model", variant, "--torch_dir", torch_dir, "--vgg", vgg, "--out", out]
    return convert.main(argv)


@pytest.mark.parametrize("variant", ["proposed", "adaattn"])
def test_convert_then_infer_matches_torch(variant, torch_dirs, images, tmp_path, capsys):
    torch_dir, expected = torch_dirs[variant]
    paths, _ = images
    ckpt = str(tmp_path / "ckpt")
    assert run_convert(variant, torch_dir, ckpt) == 0
    assert f"wrote {variant} checkpoint" in capsys.readouterr().out

    base = ["--checkpoint", ckpt, "--content", paths["content"], "--style", paths["style"]]
    npy, png = str(tmp_path / "out.npy"), str(tmp_path / "out.png")
    assert infer.main([*base, "--output", npy]) == 0
    assert infer.main([*base, "--output", png]) == 0
    result = np.load(npy)
    assert result.shape == (*CONTENT_HW, 3) and result.dtype == np.float32

    # The image the checkpoint gives is the image the PyTorch weights give (docs/model.md bound).
    rel = np.linalg.norm(result - expected) / np.linalg.norm(expected)
    assert rel < 1e-4, f"{variant}: relative error {rel:.3g} against the torch reference"
    assert 0.05 < expected.std() and ((expected > 0) & (expected < 1)).mean() > 0.9

    # The PNG is the clipped, x255-truncated float result.
    pixels = np.asarray(Image.open(png))
    assert pixels.shape == (*CONTENT_HW, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, (np.clip(result, 0, 1) * 255).astype(np.uint8))


# ----------------------------------------------------------------------------- errors
def _transformer(path):
    return torch.load(os.path.join(path, ref.TRANSFORMER_FILE), weights_only=True)


def _save_transformer(path, state):
    torch.save(state, os.path.join(path, ref.TRANSFORMER_FILE))


def corrupt_file(path):
    file = os.path.join(path, ref.DECODER_FILE)
    data = open(file, "rb").read()
    open(file, "wb").write(data[: len(data) // 2])


def missing_key(path):
    state = _transformer(path)
    del state["merge_conv.bias"]
    _save_transformer(path, state)


def extra_key(path):
    state = _transformer(path)
    state["attn_adain_6_1.f.weight"] = torch.zeros(3, 3, 1, 1)
    _save_transformer(path, state)


def misshaped_key(path):
    state = _transformer(path)
    state["attn_adain_4_1.f.weight"] = torch.zeros(64, 65, 1, 1)
    _save_transformer(path, state)


def missing_file(path):
    os.remove(os.path.join(path, ref.DECODER_FILE))


def vgg_missing_key(path):
    file = os.path.join(path, ref.VGG_FILE)
    state = torch.load(file, weights_only=True)
    del state["42.weight"]
    torch.save(state, file)


CASES = {
    # name: (files of this variant, mutation, --model, fragments of the one-line message)
    "corrupt .pth": ("proposed", corrupt_file, "proposed", [ref.DECODER_FILE, "not a readable"]),
    "missing key": (
        "proposed",
        missing_key,
        "proposed",
        ["missing key 'merge_conv.bias'", "(64,)"],
    ),
    "extra key": ("proposed", extra_key, "proposed", ["unexpected key 'attn_adain_6_1.f.weight'"]),
    "misshaped key": (
        "proposed",
        misshaped_key,
        "proposed",
        ["'attn_adain_4_1.f.weight'", "(64, 65, 1, 1)", "expected (64, 64, 1, 1)"],
    ),
    "missing file": ("proposed", missing_file, "proposed", [ref.DECODER_FILE, "no such file"]),
    "vgg missing key": ("proposed", vgg_missing_key, "proposed", [ref.VGG_FILE, "'42.weight'"]),
    "proposed files as adaattn": (
        "proposed",
        None,
        "adaattn",
        [ref.TRANSFORMER_FILE, "holds 'proposed' weights", "pass --model proposed"],
    ),
    "adaattn files as proposed": (
        "adaattn",
        None,
        "proposed",
        [ref.TRANSFORMER_FILE, "holds 'adaattn' weights", "pass --model adaattn"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_convert_errors_are_one_line(case, torch_dirs, tmp_path, capsys):
    variant, mutate, model, fragments = CASES[case]
    torch_dir = str(tmp_path / "torch")
    shutil.copytree(torch_dirs[variant][0], torch_dir)
    if mutate:
        mutate(torch_dir)
    out = str(tmp_path / "ckpt")
    assert run_convert(model, torch_dir, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert not os.path.exists(out), "no checkpoint may be written from broken weights"
