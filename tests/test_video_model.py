"""The release's video model (`adaattn-video`): parity with the independent PyTorch reading
(`tests/torch_reference_video.py`) and the converter's one-line errors for its files.

Parity: random full-width weights written as the release's two files, read back with the real
converter, float32 on both sides; sizes that are not multiples of 16 (the decoder output is
resized to the input), a sampled style subset, and one frame at the release's 512x256 with its
512x512 style (the only expensive case: ~15 s, the (8192 x 16384) weight matrix of the
reference). The PyTorch side forms that matrix; the JAX side never does (linear form).
"""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

import infer
from flax_style import convert, image_io, models, ops
from tests import torch_reference as ref
from tests import torch_reference_video as vref

torch.set_num_threads(2)

RTOL = 1e-4  # ||jax - torch|| / ||torch||
MAX_RTOL = 5e-4  # max|jax - torch| / max|torch|
TRAINABLE = 2_793_411  # attention 468,096 + decoder 2,325,315
SIZES = [(50, 38), (72, 56)]  # relu3_1 13x10 (decoder 52x40, resized) and 18x14
VIDEO = models.VIDEO


def nhwc(x: torch.Tensor) -> jax.Array:
    return jnp.asarray(ref.to_nhwc(x))


def assert_close(actual, expected, what: str):
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    rel = np.linalg.norm(a - b) / np.linalg.norm(b)
    max_rel = np.abs(a - b).max() / np.abs(b).max()
    print(f"{what}: relative error {rel:.3g}, max-abs {max_rel:.3g}")
    assert rel <= RTOL, f"{what}: relative error {rel:.3g} > {RTOL}"
    assert max_rel <= MAX_RTOL, f"{what}: max abs error / max |ref| {max_rel:.3g} > {MAX_RTOL}"


def assert_informative(image_nchw: np.ndarray, what: str):
    """A parity check on a constant or clipped image would prove nothing."""
    assert float(image_nchw.std(axis=(2, 3)).min()) > 0.05, f"{what}: nearly constant"
    assert float(((image_nchw > 0) & (image_nchw < 1)).mean()) > 0.9, f"{what}: clipped"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Full-width torch VGG and video model, saved as the release's files and converted."""
    root = tmp_path_factory.mktemp("attn_adain_video")
    vgg = ref.init_vgg_(ref.make_vgg(ref.VGG_WIDTHS), seed=0).eval()
    vgg_path = ref.save_vgg(str(root / ref.VGG_FILE), vgg)
    model = vref.init_video_model_(vref.VideoModel(ref.VGG_WIDTHS), seed=5).eval()
    with torch.no_grad():
        c = vref.encode(vgg, ref.smooth_images(2, 64, 64, seed=1))
        s = vref.encode(vgg, ref.smooth_images(2, 64, 64, seed=2))
        vref.calibrate_output_(model, c, s)
    vref.save_official_video(str(root), model)
    params, encoder_params, config = convert.load_official(VIDEO, str(root), vgg_path)
    encoder = models.build_encoder(config, models.encoder_depth(config))
    encode = jax.jit(lambda x: encoder.apply({"params": encoder_params}, x))
    return {"vgg": vgg, "model": model, "params": params, "config": config, "encode": encode}


def run_both(world, content, style, config=None, sample_indices=None, rng=None):
    """(jax image, torch image), both NCHW numpy, for NCHW torch inputs."""
    config = config or world["config"]
    net = models.build_network(config)
    size = tuple(content.shape[-2:])
    apply = jax.jit(lambda p, c, s, k: net.apply(p, c, s, size, rngs={"sample": k}))
    actual = apply(
        {"params": world["params"]},
        world["encode"](nhwc(content)),
        world["encode"](nhwc(style)),
        jax.random.key(0) if rng is None else rng,
    )
    model = world["model"]
    with torch.no_grad():
        c, s = vref.encode(world["vgg"], content), vref.encode(world["vgg"], style)
        expected = model(c, s, output_size=size, sample_indices=sample_indices)
    return np.asarray(actual).transpose(0, 3, 1, 2), expected.numpy()


def test_converted_checkpoint(world):
    config = world["config"]
    assert config["variant"] == VIDEO and tuple(config["widths"]) == ref.VGG_WIDTHS
    count = sum(int(np.size(p)) for p in jax.tree.leaves(world["params"]))
    assert count == TRAINABLE
    assert models.encoder_depth(config) == 3
    feats = world["encode"](jnp.zeros((1, 32, 48, 3)))
    assert [f.shape for f in feats] == [(1, 32, 48, 64), (1, 16, 24, 128), (1, 8, 12, 256)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_parity_odd_sizes(world, size):
    content = ref.smooth_images(2, *size, seed=3)
    style = ref.smooth_images(2, 40, 44, seed=4)
    actual, expected = run_both(world, content, style)
    assert actual.shape == expected.shape == (2, 3, *size)
    assert_informative(expected, "torch")
    assert_close(actual, expected, f"adaattn-video image {size}")


def test_forward_parity_sampled_style(world, monkeypatch):
    """More style positions than max_sample: the positions the JAX block keeps for a key (read
    off `ops.sample_positions`), given to the reference, give the same image; another key
    gives another image."""
    config = {**world["config"], "max_sample_video": 50}  # relu3_1 of 40x44: 110 positions
    kept = []
    sample = ops.sample_positions
    monkeypatch.setattr(
        ops, "sample_positions", lambda *a: kept.append(np.asarray(sample(*a))) or kept[-1]
    )
    net = models.build_network(config)
    content = ref.smooth_images(1, 50, 38, seed=3)
    style = ref.smooth_images(1, 40, 44, seed=4)
    c, s = world["encode"](nhwc(content)), world["encode"](nhwc(style))
    with jax.disable_jit():
        net.apply({"params": world["params"]}, c, s, rngs={"sample": jax.random.key(7)})
    assert len(kept) == 1 and kept[0].shape == (50,) and len(set(kept[0].tolist())) == 50
    monkeypatch.setattr(ops, "sample_positions", sample)
    actual, expected = run_both(
        world, content, style, config, torch.from_numpy(kept[0].copy()), jax.random.key(7)
    )
    assert_close(actual, expected, "adaattn-video image, style subset")
    other, _ = run_both(world, content, style, config, None, jax.random.key(8))
    assert np.abs(other - actual).max() > 1e-3


def test_forward_parity_release_size(world):
    """The release's sizes: a 512x256 frame, a 512x512 style (16,384 positions, all kept)."""
    content = ref.smooth_images(1, *vref.FRAME_HW, seed=5)
    style = ref.smooth_images(1, *vref.STYLE_HW, seed=6)
    actual, expected = run_both(world, content, style)
    assert_informative(expected, "torch 512x256")
    assert_close(actual, expected, "adaattn-video image 512x256")


def test_cosine_attention_against_direct_form():
    """The linear-time form against the direct (n_q x n_k) formula in numpy float64, with
    antiparallel query/key pairs (cos = -1: the relu's edge) and a zero query (the eps)."""
    rng = np.random.default_rng(0)
    query = rng.standard_normal((2, 7, 5))
    key = rng.standard_normal((2, 11, 5))
    value = rng.standard_normal((2, 11, 3))
    query[0, 0] = -3.0 * key[0, 0]
    query[1, 1] = 0.0
    q = query / (np.linalg.norm(query, axis=-1, keepdims=True) + 1e-5)
    k = key / (np.linalg.norm(key, axis=-1, keepdims=True) + 1e-5)
    weights = np.maximum(q @ k.transpose(0, 2, 1) + 1.0, 0.0)
    weights = weights / (weights.sum(-1, keepdims=True) + 1e-5)
    mean = weights @ value
    std = np.sqrt(np.maximum(weights @ value**2 - mean**2, 0.0))
    args = [jnp.asarray(x, jnp.float32) for x in (query, key, value)]
    actual_mean, actual_std = ops.cosine_attention_mean_std(*args)
    np.testing.assert_allclose(actual_mean, mean, rtol=0, atol=2e-6)
    np.testing.assert_allclose(actual_std, std, rtol=0, atol=2e-6)


# ----------------------------------------------------------------------------- conversion
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """Tiny-width release files plus vgg_normalised.pth, and the torch image of one pair."""
    root = tmp_path_factory.mktemp("tiny_video")
    vgg = ref.init_vgg_(ref.make_vgg(ref.TINY_WIDTHS), seed=1).eval()
    ref.save_vgg(str(root / ref.VGG_FILE), vgg)
    model = vref.init_video_model_(vref.VideoModel(ref.TINY_WIDTHS), seed=2).eval()
    content = ref.to_nhwc(ref.smooth_images(1, 45, 37, seed=1))[0]
    style = ref.to_nhwc(ref.smooth_images(1, 40, 48, seed=2))[0]
    image_io.save_image(str(root / "content.png"), content)
    image_io.save_image(str(root / "style.png"), style)
    # The pixels as infer.py reads them back (8-bit).
    tensors = [
        torch.from_numpy(image_io.load_image(str(root / f"{n}.png")).transpose(2, 0, 1)[None])
        for n in ("content", "style")
    ]
    with torch.no_grad():
        c, s = vref.encode(vgg, tensors[0]), vref.encode(vgg, tensors[1])
        vref.calibrate_output_(model, c, s)
        expected = model(c, s, output_size=(45, 37))
    vref.save_official_video(str(root), model)
    return str(root), ref.to_nhwc(expected)[0]


def run_convert(model: str, torch_dir: str, out: str) -> int:
    vgg = os.path.join(torch_dir, ref.VGG_FILE)
    return convert.main(["--model", model, "--torch_dir", torch_dir, "--vgg", vgg, "--out", out])


def test_convert_cli_then_infer(tiny_dir, tmp_path, capsys):
    torch_dir, expected = tiny_dir
    ckpt = str(tmp_path / "ckpt")
    assert run_convert(VIDEO, torch_dir, ckpt) == 0
    assert "wrote adaattn-video checkpoint (" in capsys.readouterr().out
    out = str(tmp_path / "out.npy")
    args = ["--checkpoint", ckpt, "--content", os.path.join(torch_dir, "content.png")]
    args += ["--style", os.path.join(torch_dir, "style.png"), "--output", out]
    assert infer.main(args) == 0
    result = np.load(out)
    assert result.shape == (45, 37, 3)
    rel = np.linalg.norm(result - expected) / np.linalg.norm(expected)
    assert rel < 1e-4, f"relative error {rel:.3g} against the torch reading"


def _edit(name: str, change):
    def mutate(path):
        file = os.path.join(path, name)
        state = torch.load(file, weights_only=True)
        change(state)
        torch.save(state, file)

    return mutate


CASES = {
    # name: (mutation of the release's files, --model, fragments of the one-line message)
    "missing key": (
        _edit(ref.TRANSFORMER_FILE, lambda s: s.pop("h.bias")),
        VIDEO,
        [ref.TRANSFORMER_FILE, "missing key 'h.bias'", "(32,)"],
    ),
    "extra key": (
        _edit(ref.DECODER_FILE, lambda s: s.update({"decoder.30.weight": torch.zeros(3)})),
        VIDEO,
        [ref.DECODER_FILE, "unexpected key 'decoder.30.weight'", "'adaattn-video'"],
    ),
    "misshaped key": (
        _edit(ref.TRANSFORMER_FILE, lambda s: s.update({"g.weight": torch.zeros(56, 55, 1, 1)})),
        VIDEO,
        ["'g.weight'", "(56, 55, 1, 1)", "expected (56, 56, 1, 1)"],
    ),
    "missing decoder": (
        lambda p: os.remove(os.path.join(p, ref.DECODER_FILE)),
        VIDEO,
        [ref.DECODER_FILE, "no such file"],
    ),
    "video files as adaattn": (
        None,
        "adaattn",
        [ref.TRANSFORMER_FILE, "holds 'adaattn-video' weights", "pass --model adaattn-video"],
    ),
    "video files as proposed": (None, "proposed", ["pass --model adaattn-video"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_convert_errors_are_one_line(case, tiny_dir, tmp_path, capsys):
    mutate, model, fragments = CASES[case]
    torch_dir = str(tmp_path / "attn_adain_video")
    shutil.copytree(tiny_dir[0], torch_dir)
    if mutate:
        mutate(torch_dir)
    out = str(tmp_path / "ckpt")
    assert run_convert(model, torch_dir, out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert not os.path.exists(out)


def test_image_model_files_as_video(tmp_path, capsys):
    """The official AdaAttN files given to --model adaattn-video: named in one line."""
    model = ref.init_model_(ref.make_model("adaattn", ref.TINY_WIDTHS), seed=0)
    ref.save_official(str(tmp_path), "adaattn", model)
    ref.save_vgg(str(tmp_path / ref.VGG_FILE), ref.make_vgg(ref.TINY_WIDTHS))
    assert run_convert(VIDEO, str(tmp_path), str(tmp_path / "ckpt")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds 'adaattn' weights" in err and "--model adaattn" in err


def test_video_params_map_to_release_keys():
    """Every parameter has one key of the release's files, no two the same key."""
    config = models.model_config({"variant": VIDEO, "widths": models.TINY_WIDTHS})
    flat = traverse_util.flatten_dict(models.abstract_params(config)[0])
    locations = {convert.torch_location(path, VIDEO) for path in flat}
    assert len(locations) == len(flat)
    assert (ref.TRANSFORMER_FILE, "f.weight") in locations
    assert (ref.DECODER_FILE, "decoder.24.bias") in locations
    assert {file for file, _ in locations} == {ref.TRANSFORMER_FILE, ref.DECODER_FILE}
