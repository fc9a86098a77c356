"""User mistakes at every entry point: one line `error: ...` naming the thing and the fix, exit
status 2, no traceback; and checkpoints whose parameters are not finite are refused.

In-process (`main(argv)`) where the behaviour is the tool's; a subprocess where it is the
process's (`train.py --help`'s exit status). A tiny random model, 37x45 images.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import infer
import train
from flax_style import checkpoint, convert, evaluate, export, image_io, stylize_files
from tests.test_stylize import CONFIG, make_stylizer, random_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def error_line(capsys) -> str:
    """The one stderr line of a refused command (fails if there are more, or a traceback)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    image_io.save_image(str(root / "content.png"), random_image(0))
    image_io.save_image(str(root / "style.png"), random_image(1))
    image_io.save_image(str(root / "dot.png"), np.zeros((1, 1, 3)))
    return root


@pytest.fixture(scope="module")
def nan_ckpt(tmp_path_factory):
    """A model checkpoint with 2 of its parameter arrays NaN (as a diverged run would be);
    and the count of its arrays, network and encoder."""
    stylizer = make_stylizer()
    leaves, treedef = jax.tree.flatten(jax.device_get(stylizer.params))
    leaves = [np.full_like(x, np.nan) if i in (0, 3) else x for i, x in enumerate(leaves)]
    root = str(tmp_path_factory.mktemp("nan_ckpt"))
    checkpoint.save_model(
        root, jax.tree.unflatten(treedef, leaves), stylizer.encoder_params, CONFIG, step=7
    )
    return root, len(leaves) + len(jax.tree.leaves(stylizer.encoder_params))


def test_infer_refuses_a_nan_checkpoint(nan_ckpt, images, tmp_path, capsys):
    root, count = nan_ckpt
    pair = ["--content", images / "content.png", "--style", images / "style.png"]
    argv = ["--checkpoint", root, *map(str, pair), "--output", str(tmp_path / "o.png")]
    assert infer.main(argv) == 2
    line = error_line(capsys)
    assert f"{root} step 7: 2 of {count} parameter arrays hold NaN/Inf" in line, line
    assert not os.path.exists(tmp_path / "o.png")  # no black image written


def test_evaluation_refuses_a_nan_checkpoint(nan_ckpt, images, tmp_path, capsys):
    folder = tmp_path / "pairs"
    folder.mkdir()
    image_io.save_image(str(folder / "a.png"), random_image(2))
    argv = ["--checkpoint", nan_ckpt[0], "--content", str(folder), "--style", str(folder)]
    assert evaluate.main([*argv, "--out", str(tmp_path / "eval")]) == 2
    assert f"{nan_ckpt[0]} step 7: 2 of" in error_line(capsys)


def test_export_refuses_a_nan_checkpoint(nan_ckpt, tmp_path, capsys):
    out = tmp_path / "model.jaxexport"
    assert export.main(["--checkpoint", nan_ckpt[0], "--out", str(out)]) == 2
    assert f"{nan_ckpt[0]} step 7: 2 of" in error_line(capsys)
    assert not out.exists()


def test_checkpoint_given_a_file_says_so(images, tmp_path, capsys):
    argv = ["--checkpoint", str(images / "content.png"), "--content", str(images / "content.png")]
    assert infer.main([*argv, "--style", str(images / "style.png"), "--output", "o.png"]) == 2
    line = error_line(capsys)
    assert "content.png: is a file, not a checkpoint directory" in line, line


@pytest.mark.parametrize(
    ("weights", "problem"),
    [(["-1", "nan", "5"], "finite numbers >= 0"), (["0", "0", "0"], "positive sum")],
)
def test_convert_validates_fusion_weights_before_reading_files(weights, problem, tmp_path, capsys):
    argv = ["--model", "proposed", "--torch_dir", "missing", "--vgg", "missing.pth"]
    argv += ["--out", str(tmp_path / "out"), "--fusion_weights", ",".join(weights)]
    assert convert.main(argv) == 2
    line = error_line(capsys)
    assert "--fusion_weights" in line and problem in line, line


def _read_only_folder(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    os.chmod(folder, 0o555)
    if os.access(folder, os.W_OK):
        pytest.skip("running as root: permissions do not stop writes")
    return folder


CONVERT_ARGV = ["--model", "proposed", "--torch_dir", "missing", "--vgg", "missing.pth"]


def test_convert_out_below_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert convert.main([*CONVERT_ARGV, "--out", str(tmp_path / "a_file" / "ckpt")]) == 2
    assert "cannot write there (Not a directory)" in error_line(capsys)


def test_convert_out_in_a_read_only_folder(tmp_path, capsys):
    folder = _read_only_folder(tmp_path)
    assert convert.main([*CONVERT_ARGV, "--out", str(folder / "ckpt")]) == 2
    assert "cannot write there (Permission denied)" in error_line(capsys)


def train_main(tmp_path, *overrides) -> int:
    argv = ["--config", os.path.join(ROOT, "configs", "tiny.py"), *overrides]
    if not any(arg.startswith("--workdir") for arg in overrides):
        argv.append(f"--workdir={tmp_path / 'run'}")
    return train.main(argv)


def test_train_config_typo_keeps_the_suggestion(tmp_path, capsys):
    assert train_main(tmp_path, "--config.optim.lrr=1") == 2
    line = error_line(capsys)
    assert line.startswith("error: --config.optim.lrr: the config has no field 'lrr'"), line
    assert "did you mean 'lr'?" in line
    assert train_main(tmp_path, "--config.optim.lr=fast") == 2
    assert "--config.optim.lr=fast" in error_line(capsys)


def test_train_missing_config_file(tmp_path, capsys):
    assert train.main(["--config", "configs/nope.py", f"--workdir={tmp_path}"]) == 2
    assert "--config configs/nope.py: no such config file" in error_line(capsys)


def test_train_workdir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert train_main(tmp_path, f"--workdir={tmp_path / 'a_file'}") == 2
    assert "a_file: is a file, not a folder" in error_line(capsys)


def test_train_workdir_read_only(tmp_path, capsys):
    folder = _read_only_folder(tmp_path)
    assert train_main(tmp_path, f"--workdir={folder}") == 2
    assert "cannot write there (Permission denied)" in error_line(capsys)


def test_train_help_exits_0_and_lists_config_fields():
    result = subprocess.run(
        [sys.executable, "train.py", "--help", "--config", "configs/tiny.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python train.py")
    assert "--config.optim.lr=0.001" in result.stdout  # tiny.py's value, not default.py's
    assert "--config.checkpoint.every_steps=10" in result.stdout
    assert "intentionally" not in result.stdout and "flax_style.training" not in result.stdout


def test_too_small_images_are_named_once(images, tmp_path):
    """The content, then the style, 1x1: each error names the file and its role once."""
    stylizer = make_stylizer()
    dot, content, style = (str(images / n) for n in ("dot.png", "content.png", "style.png"))
    options = stylize_files.FileOptions(output=str(tmp_path / "o.png"))
    for contents, styles, named in [([dot], [style], "content"), ([content], [dot], "style")]:
        report = stylize_files.stylize_files(stylizer, contents, styles, options)
        assert report.errors == [
            f"{named} {dot} is 1x1 pixels; at least 17 per side needed (try --size)"
        ]


def test_gif_files_and_folders_are_accepted_alike(tmp_path):
    pixels = (random_image(3) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "frame.gif")
    problems = []
    from_folder = stylize_files.resolve_images([str(tmp_path)], "content", problems)
    from_file = stylize_files.resolve_images([str(tmp_path / "frame.gif")], "content", problems)
    assert problems == [] and from_folder == from_file == [str(tmp_path / "frame.gif")]
    assert image_io.load_image(from_file[0]).shape == (*pixels.shape[:2], 3)
