"""Tests of the evaluation driver and its sheets (flax_style.evaluate, flax_style.sheets): the
summary table, labels and zoom boxes by hand, and an end-to-end run on skimage's sample images
with two converted random-weight checkpoints (the metrics themselves: test_metrics.py)."""

import csv
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
from flax import traverse_util
from PIL import Image

from flax_style import cli, convert, evaluate, models, sheets
from tests.test_metrics import write_random_lpips

torch = pytest.importorskip("torch")


# ---------------------------------------------------------------------------- small pieces


def test_summary_is_mean_and_sample_std_per_checkpoint():
    rows = [
        {
            "checkpoint": "a",
            "content_loss": v,
            "style_loss": 1.0,
            "ssim": 0.5,
            "lpips": None,
            "time_s": 0.1,
        }
        for v in (1.0, 2.0, 3.0)
    ] + [
        {
            "checkpoint": "b",
            "content_loss": 5.0,
            "style_loss": 2.0,
            "ssim": 0.1,
            "lpips": None,
            "time_s": 0.2,
        }
    ]
    summary = evaluate.summarize(rows)
    assert [(r["kind"], r["checkpoint"]) for r in summary] == [
        ("mean", "a"),
        ("std", "a"),
        ("mean", "b"),
        ("std", "b"),
    ]
    assert summary[0]["pairs"] == 3 and summary[2]["pairs"] == 1
    assert summary[0]["content_loss"] == pytest.approx(2.0)
    assert summary[1]["content_loss"] == pytest.approx(1.0)  # ddof=1
    assert summary[3]["content_loss"] == 0.0 and summary[0]["lpips"] is None
    assert "lpips" not in evaluate.format_summary(summary)


def test_zoom_box_and_parse_zoom():
    assert sheets.zoom_box((100, 200, 3), (0.25, 0.5, 0.5, 0.25)) == (50, 50, 150, 75)
    assert sheets.zoom_box((10, 10, 3), (0.95, 0.95, 0.05, 0.05)) == (9, 9, 10, 10)
    assert evaluate.parse_zoom("0.1,0.2,0.3,0.4") == (0.1, 0.2, 0.3, 0.4)
    for bad in ("0.1,0.2,0.3", "a,b,c,d", "0.8,0.1,0.5,0.1", "0.1,0.1,0,0.1"):
        with pytest.raises(cli.UsageError, match="--zoom"):
            evaluate.parse_zoom(bad)


def test_checkpoint_labels():
    assert evaluate.checkpoint_labels(["x/adaattn", "y/proposed/"], None) == ["adaattn", "proposed"]
    assert evaluate.checkpoint_labels(["x/ckpt", "y/ckpt"], None) == ["ckpt_1", "ckpt_2"]
    assert evaluate.checkpoint_labels(["a", "b"], ["A", "B"]) == ["A", "B"]
    with pytest.raises(evaluate.EvaluationError, match="one per checkpoint"):
        evaluate.checkpoint_labels(["a", "b"], ["A"])


# ------------------------------------------------------------------------------ end to end

CONTENTS = ("astronaut", "coffee", "chelsea")
STYLES = ("brick", "grass", "gravel")
SIZE = 64


def write_random_official_weights(directory: str, variant: str, widths, seed: int) -> None:
    """Random state dicts under the official file names and keys (docs/model.md).

    He-normal convs (so features neither vanish nor explode through the random VGG), bias 0; the
    last decoder conv is 3x smaller with bias 0.5, so outputs vary around grey, not saturated.
    """
    gen = torch.Generator().manual_seed(seed)
    config = models.model_config({"variant": variant, "widths": list(widths)})
    files: dict[str, dict] = {}

    def add(file, key, leaf, shape):
        if leaf == "kernel":
            h, w, i, o = shape
            std = math.sqrt(2.0 / (h * w * i)) * (0.3 if key == "decoder_layer_2.24.weight" else 1)
            value = torch.randn(o, i, h, w, generator=gen) * std
        else:
            value = torch.full(tuple(shape), 0.5 if key == "decoder_layer_2.24.bias" else 0.0)
        files.setdefault(file, {})[key] = value

    for path, leaf in traverse_util.flatten_dict(models.abstract_params(config)[0]).items():
        file, key = convert.torch_location(path)
        add(file, key, path[-1], leaf.shape)
    encoder = models.build_encoder(config)
    image = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    shapes = jax.eval_shape(encoder.init, jax.random.key(0), image)["params"]
    index = dict(models.VGG_CONVS)
    for (conv, leaf), value in traverse_util.flatten_dict(shapes).items():
        key = f"{index[conv]}.{'weight' if leaf == 'kernel' else 'bias'}"
        add(convert.VGG_FILE, key, leaf, value.shape)
    for file, state in files.items():
        torch.save(state, os.path.join(directory, file))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two random-weight checkpoints (adaattn, proposed), converted by the command line."""
    root = tmp_path_factory.mktemp("checkpoints")
    out = []
    for seed, variant in enumerate(("adaattn", "proposed")):
        torch_dir = root / f"torch_{variant}"
        torch_dir.mkdir()
        write_random_official_weights(str(torch_dir), variant, models.TINY_WIDTHS, seed)
        ckpt = root / f"random_{variant}"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flax_style.convert",
                "--model",
                variant,
                "--torch_dir",
                str(torch_dir),
                "--vgg",
                str(torch_dir / convert.VGG_FILE),
                "--out",
                str(ckpt),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        out.append(str(ckpt))
    return out


@pytest.fixture(scope="module")
def sample_images(tmp_path_factory):
    """skimage's embedded photos (contents) and textures (styles), downscaled to 64 px."""
    root = tmp_path_factory.mktemp("images")
    for folder, names in (("content", CONTENTS), ("style", STYLES)):
        (root / folder).mkdir()
        for name in names:
            image = Image.fromarray(getattr(skimage.data, name)())
            scale = SIZE / min(image.size)
            image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)))
            image.save(root / folder / f"{name}.png")
    return str(root / "content"), str(root / "style")


def test_end_to_end_on_sample_images_writes_table_and_sheets(
    checkpoints, sample_images, tmp_path, capsys
):
    content_dir, style_dir = sample_images
    lin_path, vgg_path = write_random_lpips(str(tmp_path))
    out = tmp_path / "eval"
    code = evaluate.main(
        [
            *(a for c in checkpoints for a in ("--checkpoint", c)),
            "--content",
            content_dir,
            "--style",
            style_dir,
            "--out",
            str(out),
            "--size",
            str(SIZE),
            "--zoom",
            "0.3,0.2,0.3,0.3",
            "--sheet_rows",
            "3",
            "--lpips_weights",
            lin_path,
            "--lpips_backbone",
            vgg_path,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "random_adaattn" in printed and "random_proposed" in printed and "±" in printed

    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    pair_rows = [r for r in rows if r["kind"] == "pair"]
    assert len(pair_rows) == 2 * len(CONTENTS) * len(STYLES)
    assert [(r["kind"], r["checkpoint"]) for r in rows[len(pair_rows) :]] == [
        ("mean", "random_adaattn"),
        ("std", "random_adaattn"),
        ("mean", "random_proposed"),
        ("std", "random_proposed"),
    ]
    assert all(r["pairs"] == str(len(CONTENTS) * len(STYLES)) for r in rows[len(pair_rows) :])
    for row in pair_rows:
        values = {m: float(row[m]) for m in evaluate.METRICS}
        assert all(np.isfinite(v) for v in values.values()), row
        assert values["content_loss"] >= 0 and values["style_loss"] >= 0
        assert -1 <= values["ssim"] <= 1 and values["lpips"] >= 0 and values["time_s"] > 0
        assert (out / row["image"]).is_file()
    # The two random models differ, so their numbers do.
    a, b = pair_rows[0], pair_rows[len(pair_rows) // 2]
    assert (a["content"], a["style"]) == (b["content"], b["style"])
    assert a["style_loss"] != b["style_loss"]

    sheet_files = sorted(p.name for p in out.glob("sheet_*.png"))
    assert sheet_files == ["sheet_01.png", "sheet_02.png", "sheet_03.png"]  # 9 pairs, 3 per sheet
    sheet = np.asarray(Image.open(out / "sheet_01.png").convert("RGB"))
    columns = 2 + len(checkpoints)
    assert sheet.shape[1] == sheets.PAD + columns * (sheets.CELL + sheets.PAD)
    red = (sheet[..., 0] == 220) & (sheet[..., 1] == 20) & (sheet[..., 2] == 20)
    # A zoom box on content and on each stylized column, in each of the three pairs.
    col_of = lambda x: (x - sheets.PAD) // (sheets.CELL + sheets.PAD)  # noqa: E731
    assert sorted(set(col_of(np.nonzero(red)[1]).tolist())) == [0, 2, 3]


def test_command_line_errors_are_one_line_with_exit_code_2(sample_images, tmp_path, capsys):
    content_dir, style_dir = sample_images
    empty = tmp_path / "empty"
    empty.mkdir()
    common = ["--style", style_dir, "--out", str(tmp_path / "out")]
    assert evaluate.main(["--checkpoint", "x", "--content", str(empty), *common]) == 2
    assert "holds no image (.jpg/.jpeg/.png" in capsys.readouterr().err
    missing = str(tmp_path / "no_checkpoint")
    assert evaluate.main(["--checkpoint", missing, "--content", content_dir, *common]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no_checkpoint" in err and err.count("\n") == 1
    assert (
        evaluate.main(["--checkpoint", "x", "--content", content_dir, *common, "--zoom", "1,2"])
        == 2
    )
    assert "--zoom '1,2': expected x,y,w,h" in capsys.readouterr().err
    # LPIPS needs both of its files.
    argv = ["--checkpoint", "x", "--content", content_dir, *common, "--lpips_weights", "w"]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: LPIPS needs both --lpips_weights and --lpips_backbone\n"
