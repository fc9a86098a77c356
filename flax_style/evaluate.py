"""Evaluation of stylization checkpoints: the content/style balance, measured; comparison sheets.

    python -m flax_style.evaluate --checkpoint A [--checkpoint B ...] --content DIR --style DIR \
        --out DIR [--size N] [--zoom x,y,w,h] [--lpips_weights LIN.pth --lpips_backbone VGG16.pth]

Every content image is stylized with every style image by every checkpoint. Written to `--out`:
  metrics.csv            one row per (checkpoint, content, style) and mean / std rows per checkpoint
  stylized/LABEL/*.png   the stylized images (clipped, 8-bit, as `save_image` writes them)
  sheet_NN.png           comparison sheets (`flax_style.sheets`): content | style | one column per
                         checkpoint, each pair followed by a row of zoomed crops of `--zoom`
A summary (mean and std per checkpoint) is printed. The metrics are `flax_style.metrics`
(content_loss, style_loss, ssim), `flax_style.lpips` (optional) and the time per stylization,
compilation excluded; README "Evaluate" defines each.
"""

import csv
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import flags

from flax_style import cli, errors, image_io, metrics, sheets, stylize
from flax_style.lpips import LPIPS
from flax_style.metrics import EvaluationError
from flax_style.sheets import Pair

METRICS = ("content_loss", "style_loss", "ssim", "lpips", "time_s")
PROGRAM = "python -m flax_style.evaluate"


def _image_name(path: str, root: str) -> str:
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "_")


def load_pairs(content_dir: str, style_dir: str, size: int | None) -> list[Pair]:
    """Every (content, style) pair of two image folders (recursive, sorted).

    Images are resized as `infer.py` does (`image_io.load_resized`: shorter side `size`, Lanczos
    on float data); None keeps their sizes.

    Raises:
      EvaluationError: a folder that is missing or holds no image.
      stylize.StylizeError: an image too small for the network.
    """
    images = {}
    for flag, directory in (("--content", content_dir), ("--style", style_dir)):
        if not os.path.isdir(directory):
            raise EvaluationError(f"{flag} {directory}: no such directory")
        paths = image_io.list_images(directory)
        if not paths:
            kinds = "/".join(image_io.IMAGE_EXTENSIONS)
            raise EvaluationError(f"{flag} {directory}: holds no image ({kinds})")
        images[flag] = [(_image_name(p, directory), _load(p, size, flag)) for p in paths]
    return [
        Pair(c_name, s_name, content, style)
        for c_name, content in images["--content"]
        for s_name, style in images["--style"]
    ]


def _load(path: str, size: int | None, flag: str) -> np.ndarray:
    image = image_io.load_resized(path, size)
    stylize.check_size(image.shape, f"{flag} image {path}")
    return image


def checkpoint_labels(checkpoints: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    """Column labels: `labels` if given, else the checkpoint folder names (made unique)."""
    if labels:
        if len(labels) != len(checkpoints):
            raise EvaluationError(
                f"{len(labels)} --label for {len(checkpoints)} --checkpoint: "
                "give one per checkpoint"
            )
        return list(labels)
    names = [os.path.basename(os.path.normpath(c)) or c for c in checkpoints]
    return [f"{n}_{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def evaluate_checkpoint(
    stylizer: Any,
    label: str,
    pairs: Sequence[Pair],
    out_dir: str | None = None,
    lpips: LPIPS | None = None,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Stylizes every pair with one checkpoint and measures it.

    Args:
      stylizer: a `flax_style.stylize.Stylizer` (`stylize`, `encoder_params`, `model_config`).
      label: the checkpoint's name in the table.
      pairs: content/style pairs.
      out_dir: where `stylized/LABEL/CONTENT__STYLE.png` go; None to write nothing.
      lpips: an `LPIPS` metric, or None to leave the column empty.
      seed: stylization seed (style-position sampling).

    Returns:
      (rows, stylized images clipped to [0, 1]), one per pair.

    Raises:
      EvaluationError: a stylized image holds NaN/Inf (naming the checkpoint and the pair).
    """
    features = metrics.FeatureExtractor(stylizer.encoder_params, stylizer.model_config)
    content_feats: dict[str, list] = {}
    style_feats: dict[str, list] = {}
    warmed: set = set()
    rows, outputs = [], []
    for pair in pairs:
        shapes = (pair.content.shape, pair.style.shape)
        if shapes not in warmed:  # the first call per shape compiles: keep it out of the timing
            stylizer.stylize(pair.content, pair.style, seed=seed)
            warmed.add(shapes)
        start = time.perf_counter()
        stylized = np.asarray(stylizer.stylize(pair.content, pair.style, seed=seed))
        seconds = time.perf_counter() - start
        if not np.isfinite(stylized).all():  # metrics of a NaN image would be NaN or garbage
            raise EvaluationError(
                f"checkpoint {label}: stylizing {pair.content_name} with {pair.style_name} "
                "gives NaN/Inf; this checkpoint cannot be evaluated"
            )
        stylized = np.clip(stylized, 0.0, 1.0)
        if pair.content_name not in content_feats:
            content_feats[pair.content_name] = features(pair.content)
        if pair.style_name not in style_feats:
            style_feats[pair.style_name] = features(pair.style)
        stylized_feats = features(stylized)
        row = {
            "kind": "pair",
            "checkpoint": label,
            "content": pair.content_name,
            "style": pair.style_name,
            "pairs": 1,
            "content_loss": metrics.content_loss(stylized_feats, content_feats[pair.content_name]),
            "style_loss": metrics.style_loss(stylized_feats, style_feats[pair.style_name]),
            "ssim": metrics.ssim(stylized, pair.content),
            "lpips": lpips(stylized, pair.content) if lpips is not None else None,
            "time_s": seconds,
            "image": "",
        }
        if out_dir is not None:
            path = os.path.join("stylized", label, f"{pair.content_name}__{pair.style_name}.png")
            image_io.save_image(os.path.join(out_dir, path), stylized)
            row["image"] = path
        rows.append(row)
        outputs.append(stylized)
    return rows, outputs


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std (sample std, ddof=1; 0 for one pair) of each metric per checkpoint."""
    summary = []
    labels = list(dict.fromkeys(r["checkpoint"] for r in rows))
    for label in labels:
        mine = [r for r in rows if r["checkpoint"] == label]
        mean_row = {"kind": "mean", "checkpoint": label, "pairs": len(mine)}
        std_row = {"kind": "std", "checkpoint": label, "pairs": len(mine)}
        for metric in METRICS:
            values = np.array([r[metric] for r in mine if r[metric] is not None], np.float64)
            if values.size == 0:
                mean_row[metric] = std_row[metric] = None
                continue
            mean_row[metric] = float(values.mean())
            std_row[metric] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        summary += [mean_row, std_row]
    return summary


CSV_FIELDS = ("kind", "checkpoint", "content", "style", "pairs", *METRICS, "image")


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes rows (pair rows, then summary rows) with `CSV_FIELDS`; empty cells for None."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in CSV_FIELDS})


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def format_summary(summary: Sequence[Mapping[str, Any]]) -> str:
    """A printable table: one line per checkpoint, `mean ± std` per metric."""
    metrics = [m for m in METRICS if any(r.get(m) is not None for r in summary)]
    width = max([10, *(len(r["checkpoint"]) for r in summary)])
    lines = [f"{'checkpoint':<{width}}  {'pairs':>5}  " + "  ".join(f"{m:>19}" for m in metrics)]
    for mean_row, std_row in zip(summary[::2], summary[1::2], strict=True):
        cells = [f"{mean_row[m]:.4g} ± {std_row[m]:.2g}" for m in metrics]
        pairs = str(mean_row["pairs"])
        lines.append(
            f"{mean_row['checkpoint']:<{width}}  {pairs:>5}  "
            + "  ".join(f"{c:>19}" for c in cells)
        )
    lines.append(
        "content_loss, style_loss: VGG features from each checkpoint's own encoder; lower is "
        "closer. ssim: higher keeps more structure. time_s: per image, compilation excluded."
    )
    return "\n".join(lines)


def parse_zoom(text: str) -> tuple[float, float, float, float]:
    """`x,y,w,h` as fractions of the image (each in [0, 1], x + w <= 1, y + h <= 1)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise cli.UsageError(f"--zoom {text!r}: expected x,y,w,h, e.g. 0.4,0.4,0.2,0.2")
    x, y, w, h = values
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise cli.UsageError(
            f"--zoom {text!r}: fractions of the image with 0 <= x, y < 1, w, h > 0, "
            "x + w <= 1 and y + h <= 1"
        )
    return values


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_multi_string("checkpoint", None, "Checkpoint directory (repeat)", **define)
    flags.DEFINE_multi_string("label", None, "Column label per --checkpoint (repeat)", **define)
    flags.DEFINE_string("content", None, "Folder of content images (recursive).", **define)
    flags.DEFINE_string("style", None, "Folder of style images (recursive).", **define)
    flags.DEFINE_string("out", None, "Output folder.", **define)
    flags.DEFINE_integer(
        "size", 512, "Shorter side of every image in px (0 keeps sizes).", lower_bound=0, **define
    )
    flags.DEFINE_string(
        "zoom",
        None,
        f"Zoomed region x,y,w,h as fractions (default {sheets.DEFAULT_ZOOM}).",
        **define,
    )
    flags.DEFINE_integer("seed", 0, "Stylization seed.", **define)
    flags.DEFINE_integer("sheet_rows", 6, "Pairs per comparison sheet.", lower_bound=1, **define)
    flags.DEFINE_string("lpips_weights", None, "lpips v0.1 vgg.pth (linear layers).", **define)
    flags.DEFINE_string("lpips_backbone", None, "torchvision vgg16 state dict for LPIPS.", **define)
    flags.mark_flags_as_required(["checkpoint", "content", "style", "out"], flag_values=values)
    return values


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    about = "Stylize every content/style pair with each checkpoint; write metrics.csv, the "
    args = cli.parse(_flags(), argv, PROGRAM, about + "stylized images and comparison sheets.")
    cli.enable_compilation_cache()
    if bool(args.lpips_weights) != bool(args.lpips_backbone):
        raise cli.UsageError("LPIPS needs both --lpips_weights and --lpips_backbone")
    zoom = parse_zoom(args.zoom) if args.zoom else sheets.DEFAULT_ZOOM
    labels = checkpoint_labels(args.checkpoint, args.label)
    pairs = load_pairs(args.content, args.style, args.size or None)
    lpips = LPIPS(args.lpips_weights, args.lpips_backbone) if args.lpips_weights else None
    os.makedirs(args.out, exist_ok=True)
    all_rows, all_outputs = [], []
    for path, label in zip(args.checkpoint, labels, strict=True):
        stylizer = stylize.load_stylizer(path)
        print(f"{label}: {path} ({stylizer.model_config['variant']}), {len(pairs)} pairs")
        rows, outputs = evaluate_checkpoint(stylizer, label, pairs, args.out, lpips, args.seed)
        all_rows.append(rows)
        all_outputs.append(outputs)
    flat = [row for rows in all_rows for row in rows]
    summary = summarize(flat)
    csv_path = os.path.join(args.out, "metrics.csv")
    write_csv(csv_path, flat + summary)
    written = []
    for page, start in enumerate(range(0, len(pairs), args.sheet_rows)):
        chunk = slice(start, start + args.sheet_rows)
        sheet = sheets.comparison_sheet(
            pairs[chunk],
            labels,
            [outputs[chunk] for outputs in all_outputs],
            [rows[chunk] for rows in all_rows],
            zoom,
        )
        written.append(os.path.join(args.out, f"sheet_{page + 1:02d}.png"))
        sheet.save(written[-1])
    print(format_summary(summary))
    print(f"wrote {csv_path} and {len(written)} sheet(s): {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
