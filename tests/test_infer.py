"""`infer.py`: files, folders and outputs, the controls as flags, and one-line user errors.

A tiny random model saved as a real checkpoint; all images share two shapes so that the few
compilations are reused (the numbers of the controls are in test_stylize.py, the converted
official weights in test_convert.py).
"""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import infer
from flax_style import image_io, stylize
from tests.test_stylize import HW, random_image

STYLE_HW = (29, 40)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """contents/: c0, c1 (37x45) and two broken files; styles/: s0, s1 (29x40)."""
    root = tmp_path_factory.mktemp("images")
    os.makedirs(root / "contents" / "sub")
    os.makedirs(root / "styles")
    image_io.save_image(str(root / "contents" / "c0.png"), random_image(0))
    image_io.save_image(str(root / "contents" / "sub" / "c1.jpg"), random_image(1))
    (root / "contents" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "contents" / "empty.webp").write_bytes(b"")
    for i in range(2):
        image_io.save_image(str(root / "styles" / f"s{i}.png"), random_image(10 + i, STYLE_HW))
    return root


def run(ckpt, *args) -> int:
    return infer.main(["--checkpoint", str(ckpt), *map(str, args)])


def test_one_pair_png_and_npy(ckpt, folders, tmp_path):
    """Content size kept (37x45, not a multiple of 16); .npy is the float result before
    clipping, the PNG its clipped, x255-truncated uint8 image."""
    pair = ["--content", folders / "contents" / "c0.png", "--style", folders / "styles" / "s0.png"]
    stylizer = stylize.load_stylizer(ckpt)  # shares its compiled programs with infer.py's
    before = dict(stylizer.traces)
    assert run(ckpt, *pair, "--output", tmp_path / "out.npy", "--batch_size", 1) == 0
    assert run(ckpt, *pair, "--output", tmp_path / "out.png") == 0
    # One pair runs the single-pair program (traced once for both runs), never encode + render.
    assert stylizer.traces["fused"] == before.get("fused", 0) + 1
    assert stylizer.traces["render"] == before.get("render", 0)
    result = np.load(tmp_path / "out.npy")
    assert result.shape == (*HW, 3) and result.dtype == np.float32
    pixels = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(pixels, (np.clip(result, 0, 1) * 255).astype(np.uint8))
    # Exactly the library's single-pair call on the same pixels: one compiled program, the one
    # the benchmarks time.
    content = image_io.load_image(str(folders / "contents" / "c0.png"))
    style = image_io.load_image(str(folders / "styles" / "s0.png"))
    traces = stylizer.traces["fused"]
    np.testing.assert_array_equal(result, stylizer.stylize(content, style))
    assert stylizer.traces["fused"] == traces  # infer.py compiled the very same program


def test_folder_x_folder_skips_bad_images(ckpt, folders, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--content", folders / "contents", "--style", str(folders / "styles" / "*.png")]
    assert run(ckpt, *args, "--output_dir", out, "--batch_size", 1) == 1
    written = sorted(os.listdir(out))
    assert written == [f"c{c}_stylized_s{s}.png" for c in range(2) for s in range(2)]
    for name in written:
        assert Image.open(out / name).size == (HW[1], HW[0])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, err
    assert any("broken.png" in line and "cannot decode" in line for line in errors)
    assert any("empty.webp" in line and "empty file" in line for line in errors)
    assert "[8/8]" in err  # progress over the 4 x 2 pairs (broken ones count as done)
    assert "Traceback" not in err


def test_style_weights_flag(ckpt, folders, tmp_path):
    c0, s0 = folders / "contents" / "c0.png", folders / "styles" / "s0.png"
    styles = folders / "styles"
    assert run(ckpt, "--content", c0, "--style", s0, "--output", tmp_path / "single.npy") == 0
    mixed = tmp_path / "mixed.npy"
    assert (
        run(ckpt, "--content", c0, "--style", styles, "--style_weights", "1,0", "--output", mixed)
        == 0
    )
    np.testing.assert_allclose(np.load(mixed), np.load(tmp_path / "single.npy"), atol=1e-5)


def test_mask_alpha_preserve_color_flags(ckpt, folders, tmp_path):
    mask = np.zeros((*HW, 3), np.float32)
    mask[:, : HW[1] // 2] = 1.0
    image_io.save_image(str(tmp_path / "mask.png"), mask)
    c0 = folders / "contents" / "c0.png"
    flags = ["--mask", tmp_path / "mask.png", "--alpha", 0.7, "--preserve_color", "--ext", "npy"]
    args = ["--content", c0, "--style", folders / "styles", "--output_dir", tmp_path, *flags]
    assert run(ckpt, *args) == 0
    out = np.load(tmp_path / "c0_stylized_s0+s1.npy")
    content = image_io.load_image(str(c0))
    luma = lambda x: x @ np.asarray(image_io.LUMA, np.float32)  # noqa: E731
    np.testing.assert_allclose(
        out - luma(out)[..., None], content - luma(content)[..., None], atol=1e-5
    )


def test_resize_and_exif_orientation(tmp_path):
    """--size: shorter side; EXIF orientation 6 (rotated) swaps height and width."""
    image = Image.fromarray((random_image(0, (30, 50)) * 255).astype(np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    path = str(tmp_path / "rotated.jpg")
    image.save(path, exif=exif)
    assert image_io.target_shape(path, None) == (50, 30) == image_io.load_image(path).shape[:2]
    assert image_io.target_shape(path, 20) == (33, 20) == image_io.load_resized(path, 20).shape[:2]


def test_bad_checkpoint_is_one_line(folders, tmp_path, capsys):
    pair = ["--content", folders / "contents" / "c0.png", "--style", folders / "styles" / "s0.png"]
    garbage = tmp_path / "garbage"
    os.makedirs(garbage / "0")
    (garbage / "0" / "params").write_text("not a checkpoint")
    for bad in (tmp_path / "missing", garbage):
        assert run(bad, *pair, "--output", tmp_path / "o.png") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(bad) in err, err
        assert "python -m flax_style.convert" in err and "python train.py" in err


def test_script_user_errors_without_traceback(folders, tmp_path):
    """The real script, as users run it: a missing checkpoint and a missing input."""
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "infer.py")
    base = [sys.executable, script, "--output", str(tmp_path / "o.png")]
    style = ["--style", str(folders / "styles" / "s0.png")]
    result = subprocess.run(
        [*base, "--checkpoint", str(tmp_path / "nope"), "--content", "missing.jpg", *style],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: missing.jpg: no such content file or folder"


def test_flag_errors(ckpt, folders, tmp_path, capsys):
    pair = ["--content", folders / "contents", "--style", folders / "styles" / "s0.png"]
    assert run(ckpt, *pair, "--output", tmp_path / "o.png", "--alpha", 2) == 2
    assert capsys.readouterr().err == "error: alpha 2.0: must lie in [0, 1]\n"
    assert run(ckpt, *pair, "--output", tmp_path / "o.png", "--no_such_flag") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_such_flag" in err and err.count("\n") == 1
    assert run(ckpt, *pair, "--output", tmp_path / "o.png") == 1
    assert "use --output_dir" in capsys.readouterr().err
    # Options the library checks where they enter it (stylize_files.FileOptions, Controls):
    # refused before the checkpoint is read, in one line.
    missing = tmp_path / "no_checkpoint_needed"
    for flags, message in (
        (["--output_dir", tmp_path, "--ext", "gif"], "--ext gif: choose one of png"),
        (["--output", tmp_path / "o.png", "--size", 0], "--size 0: must be positive"),
        (["--output", tmp_path / "o.png", "--style_weights", "1,-1"], "need >= 0"),
    ):
        assert run(missing, *pair, *flags) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        infer.main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: python infer.py")
    assert "--output_dir" in out and "--[no]preserve_color" in out and "flagfile" not in out


def test_outputs_are_complete_or_absent(tmp_path, monkeypatch):
    """A write that fails halfway leaves the earlier output as it was and no stray file; a
    new output appears only whole."""
    from flax_style import stylize_files

    old = [tmp_path / "out.png", tmp_path / "out.npy"]
    for path in old:
        stylize_files.save_output(str(path), random_image(0))
    before = [path.read_bytes() for path in old]

    def write_half_then_fail(file, *args, **kwargs):
        with open(file, "wb") if isinstance(file, str) else contextlib.nullcontext(file) as f:
            f.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", lambda self, file, *a, **k: write_half_then_fail(file))
    monkeypatch.setattr(np, "save", write_half_then_fail)
    for path in [*old, tmp_path / "sub" / "new.png"]:
        with pytest.raises(OSError, match="disk full"):
            stylize_files.save_output(str(path), random_image(1))
    assert [path.read_bytes() for path in old] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy", "out.png", "sub"]
    assert list((tmp_path / "sub").iterdir()) == []
