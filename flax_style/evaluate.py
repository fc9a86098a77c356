"""Evaluation of stylization checkpoints: the content/style balance, measured; comparison sheets.

    python -m flax_style.evaluate --checkpoint A [--checkpoint B ...] --content DIR --style DIR \
        --out DIR [--size N] [--zoom x,y,w,h] [--lpips-weights LIN.pth --lpips-backbone VGG16.pth]

Every content image is stylized with every style image by every checkpoint. Written to `--out`:
  metrics.csv            one row per (checkpoint, content, style) and mean / std rows per checkpoint
  stylized/LABEL/*.png   the stylized images (clipped, 8-bit, as `save_image` writes them)
  sheet_NN.png           comparison sheets: content | style | one column per checkpoint, each pair
                         followed by a row of zoomed crops of the `--zoom` region (red box)
A summary (mean and std per checkpoint) is printed.

Metrics (see README "Evaluation" for the exact definitions):
  content_loss  sum over relu4_1, relu5_1 of MSE(mvn(F_cs), mvn(F_c))       lower = more content
  style_loss    sum over relu1_1..relu5_1 of MSE(mean) + MSE(std) vs style  lower = more style
  ssim          SSIM of the BT.601 luminance of stylized vs content          higher = more structure
  lpips         LPIPS(stylized, content), only with user-supplied weights   lower = closer
  time_s        seconds per stylization, compilation excluded
The VGG features come from each checkpoint's own encoder (the weights its model was trained
with), computed in float32.
"""

import argparse
import csv
import functools
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.metrics import structural_similarity

from flax_style import losses, models, ops, stylize
from flax_style.checkpoint import CheckpointError
from flax_style.image_io import ImageError, list_images, save_image

CONTENT_LAYERS = (4, 5)  # relu4_1, relu5_1
STYLE_LAYERS = (1, 2, 3, 4, 5)  # relu1_1 .. relu5_1
BT601 = np.array([0.299, 0.587, 0.114], np.float32)  # Y' of ITU-R BT.601 (JPEG / PIL "L")
# Wang et al. (2004) settings: 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
# population covariances, K1 = 0.01, K2 = 0.03 (skimage defaults), images in [0, 1].
SSIM_PARAMS: dict[str, Any] = {
    "data_range": 1.0,
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "K1": 0.01,
    "K2": 0.03,
}
SSIM_MIN_SIZE = 11  # the Gaussian window's width; smaller images have no SSIM
METRICS = ("content_loss", "style_loss", "ssim", "lpips", "time_s")
DEFAULT_ZOOM = (0.375, 0.375, 0.25, 0.25)


class EvaluationError(Exception):
    """Unusable evaluation inputs; the message names the file or flag and the fix."""


# ----------------------------------------------------------------------------------- metrics


def luminance(image: np.ndarray) -> np.ndarray:
    """BT.601 luma `0.299 R + 0.587 G + 0.114 B` of an (h, w, 3) image, as float64 (h, w)."""
    return np.asarray(image, np.float64) @ BT601.astype(np.float64)


def ssim(stylized: np.ndarray, content: np.ndarray) -> float:
    """SSIM of the luminance of two (h, w, 3) images in [0, 1] (`SSIM_PARAMS`).

    The score is the mean of skimage's SSIM map after it drops a 5-pixel border (half the window).

    Raises:
      EvaluationError: different sizes, or a side below `SSIM_MIN_SIZE`.
    """
    if stylized.shape != content.shape:
        raise EvaluationError(f"SSIM of different shapes {stylized.shape} and {content.shape}")
    if min(stylized.shape[:2]) < SSIM_MIN_SIZE:
        raise EvaluationError(
            f"SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE}; "
            f"got {stylized.shape[:2]}: raise --size"
        )
    return float(structural_similarity(luminance(stylized), luminance(content), **SSIM_PARAMS))


@functools.partial(jax.jit, static_argnames="layers")
def _content_loss(stylized, content, layers):
    return sum(losses.mse(ops.mvn(stylized[k - 1]), ops.mvn(content[k - 1])) for k in layers)


@functools.partial(jax.jit, static_argnames="layers")
def _style_loss(stylized, style, layers):
    total = 0.0
    for k in layers:
        cs_mean, cs_std = ops.calc_mean_std(stylized[k - 1])
        s_mean, s_std = ops.calc_mean_std(style[k - 1])
        total = total + losses.mse(cs_mean, s_mean) + losses.mse(cs_std, s_std)
    return total


def content_loss(
    stylized: Sequence[jax.Array],
    content: Sequence[jax.Array],
    layers: Sequence[int] = CONTENT_LAYERS,
) -> float:
    """`sum_k MSE(mvn(F_cs^k), mvn(F_c^k))` over `layers` (1-based relu{k}_1), as a float.

    `mvn` uses the model's statistics (SPEC 2: unbiased variance, eps 1e-5 inside the sqrt).
    """
    return float(_content_loss(list(stylized), list(content), tuple(layers)))


def style_loss(
    stylized: Sequence[jax.Array],
    style: Sequence[jax.Array],
    layers: Sequence[int] = STYLE_LAYERS,
) -> float:
    """`sum_k MSE(mean(F_cs^k), mean(F_s^k)) + MSE(std(F_cs^k), std(F_s^k))` over `layers`.

    Channel means and stds are `ops.calc_mean_std` (over H*W, unbiased variance, eps 1e-5), so
    the stylized and the style image may have different sizes.
    """
    return float(_style_loss(list(stylized), list(style), tuple(layers)))


class FeatureExtractor:
    """The VGG encoder of one checkpoint, in float32, jitted: (h, w, 3) -> [relu1_1..relu5_1]."""

    def __init__(self, encoder_params: Any, model_config: Mapping[str, Any]):
        # float32 whatever the checkpoint's compute dtype, so checkpoints compare on equal terms.
        encoder = models.build_encoder({**model_config, "dtype": "float32"})
        self._params = {"params": encoder_params}
        self._apply = jax.jit(encoder.apply)

    def __call__(self, image: np.ndarray) -> list[jax.Array]:
        return self._apply(self._params, jnp.asarray(image, jnp.float32)[None])


# ------------------------------------------------------------------------------------- LPIPS

# LPIPS v0.1 (Zhang et al. 2018, `lpips` package, net="vgg"): torchvision VGG16 `features`
# conv indices per stage; the taps are relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_VGG16_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
LPIPS_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)  # lpips ScalingLayer
LPIPS_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
LPIPS_EPS = 1e-10  # lpips normalize_tensor


def _lpips_distance(params: Mapping[str, Any], a: jax.Array, b: jax.Array) -> jax.Array:
    """LPIPS between two (1, h, w, 3) [0, 1] images (the lpips package's forward, NHWC)."""

    def taps(x):
        x = ((2.0 * x - 1.0) - LPIPS_SHIFT) / LPIPS_SCALE  # [0, 1] -> [-1, 1] -> ScalingLayer
        out = []
        for stage, convs in enumerate(params["backbone"]):
            if stage > 0:  # torchvision MaxPool2d(2, 2): floor mode
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            for kernel, bias in convs:
                x = jax.lax.conv_general_dilated(
                    x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
                x = jax.nn.relu(x + bias)
            out.append(x)
        return out

    total = 0.0
    for fa, fb, lin in zip(taps(a), taps(b), params["lin"], strict=True):
        na = fa / (jnp.sqrt(jnp.sum(fa * fa, axis=-1, keepdims=True)) + LPIPS_EPS)
        nb = fb / (jnp.sqrt(jnp.sum(fb * fb, axis=-1, keepdims=True)) + LPIPS_EPS)
        total = total + jnp.mean(jnp.square(na - nb) @ lin)  # 1x1 conv to one channel, spatial mean
    return total


class LPIPS:
    """LPIPS (VGG variant) from user-supplied files; nothing is downloaded.

    Args:
      lin_path: the linear-layer weights of lpips v0.1 (`lpips/weights/v0.1/vgg.pth`; keys
        `lin{0..4}.model.1.weight`, shape (1, C, 1, 1)).
      backbone_path: torchvision's ImageNet VGG16 state dict (`vgg16-397923af.pth`; keys
        `features.{i}.weight/bias`; `classifier.*` is ignored).

    Raises:
      EvaluationError: a missing file, key or inconsistent shape (naming file and key).
    """

    def __init__(self, lin_path: str, backbone_path: str):
        from flax_style.convert import ConversionError, read_state_dict

        try:
            lin_state = read_state_dict(lin_path)
            vgg_state = read_state_dict(backbone_path)
        except ConversionError as error:
            raise EvaluationError(str(error)) from error
        backbone = []
        channels = 3
        for convs in LPIPS_VGG16_STAGES:
            stage = []
            for index in convs:
                weight = _lookup(
                    vgg_state, backbone_path, (f"features.{index}.weight", f"{index}.weight")
                )
                bias = _lookup(
                    vgg_state, backbone_path, (f"features.{index}.bias", f"{index}.bias")
                )
                if (
                    weight.ndim != 4
                    or weight.shape[1:] != (channels, 3, 3)
                    or bias.shape != weight.shape[:1]
                ):
                    raise EvaluationError(
                        f"{backbone_path}: conv {index} has weight {weight.shape} and bias "
                        f"{bias.shape}; expected ({{out}}, {channels}, 3, 3): is it torchvision "
                        "VGG16?"
                    )
                stage.append((jnp.asarray(weight.transpose(2, 3, 1, 0)), jnp.asarray(bias)))
                channels = weight.shape[0]
            backbone.append(stage)
        lins = []
        for k, stage in enumerate(backbone):
            weight = _lookup(
                lin_state, lin_path, (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight")
            )
            width = stage[-1][0].shape[-1]
            if weight.shape != (1, width, 1, 1):
                raise EvaluationError(
                    f"{lin_path}: lin{k} has shape {weight.shape}, expected (1, {width}, 1, 1) "
                    "to match the VGG16 backbone: is it the lpips 'vgg' weights file?"
                )
            lins.append(jnp.asarray(weight.reshape(width)))
        self.params = {"backbone": backbone, "lin": lins}
        self._distance = jax.jit(_lpips_distance)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS distance of two (h, w, 3) images in [0, 1]."""
        a = jnp.asarray(a, jnp.float32)[None]
        b = jnp.asarray(b, jnp.float32)[None]
        return float(self._distance(self.params, a, b))


def _lookup(state: Mapping[str, np.ndarray], path: str, keys: Sequence[str]) -> np.ndarray:
    for key in keys:
        if key in state:
            return state[key]
    raise EvaluationError(f"{path}: missing key {keys[0]!r}")


# ------------------------------------------------------------------------------- evaluation


@dataclass
class Pair:
    """One content/style pair, images already resized."""

    content_name: str
    style_name: str
    content: np.ndarray
    style: np.ndarray


def _image_name(path: str, root: str) -> str:
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "_")


def load_pairs(content_dir: str, style_dir: str, size: int | None) -> list[Pair]:
    """Every (content, style) pair of two image folders (recursive, sorted).

    Images are resized as `infer.py` does (`stylize.load_resized`: shorter side `size`, Lanczos
    on float data); None keeps their sizes.

    Raises:
      EvaluationError: a folder that is missing or holds no image.
    """
    images = {}
    for flag, directory in (("--content", content_dir), ("--style", style_dir)):
        if not os.path.isdir(directory):
            raise EvaluationError(f"{flag} {directory}: no such directory")
        paths = list_images(directory)
        if not paths:
            raise EvaluationError(f"{flag} {directory}: holds no .jpg/.png/.webp/.bmp image")
        images[flag] = [(_image_name(p, directory), stylize.load_resized(p, size)) for p in paths]
    return [
        Pair(c_name, s_name, content, style)
        for c_name, content in images["--content"]
        for s_name, style in images["--style"]
    ]


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
    """
    features = FeatureExtractor(stylizer.encoder_params, stylizer.model_config)
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
            "content_loss": content_loss(stylized_feats, content_feats[pair.content_name]),
            "style_loss": style_loss(stylized_feats, style_feats[pair.style_name]),
            "ssim": ssim(stylized, pair.content),
            "lpips": lpips(stylized, pair.content) if lpips is not None else None,
            "time_s": seconds,
            "image": "",
        }
        if out_dir is not None:
            path = os.path.join("stylized", label, f"{pair.content_name}__{pair.style_name}.png")
            save_image(os.path.join(out_dir, path), stylized)
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


# ------------------------------------------------------------------------------------ sheet

CELL = 160  # px of the longer side of each image on the sheet
PAD = 6
BOX_COLOUR = (220, 20, 20)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 (bitmap default font without sizes)
        return ImageFont.load_default()


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap of `text` into lines at most `width` pixels wide in `font`."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _fit(image: np.ndarray, cell: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """The image (float [0, 1]) scaled so its longer side is `cell`, as 8-bit RGB."""
    pil = Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))
    scale = cell / max(pil.size)
    size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
    return pil.resize(size, resample)


def zoom_box(shape: Sequence[int], zoom: Sequence[float]) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of fractional `zoom` = (x, y, w, h) in an image."""
    h, w = shape[:2]
    x, y, zw, zh = zoom
    left, top = min(int(x * w), w - 1), min(int(y * h), h - 1)
    right = min(max(left + 1, round((x + zw) * w)), w)
    bottom = min(max(top + 1, round((y + zh) * h)), h)
    return left, top, right, bottom


def _crop(image: np.ndarray, zoom: Sequence[float], cell: int) -> Image.Image:
    left, top, right, bottom = zoom_box(image.shape, zoom)
    # Nearest: a zoom shows the real pixels (artefacts included), not an interpolation.
    return _fit(image[top:bottom, left:right], cell, Image.Resampling.NEAREST)


def _paste_centered(sheet: Image.Image, tile: Image.Image, x: int, y: int, cell: int) -> tuple:
    ox, oy = x + (cell - tile.size[0]) // 2, y + (cell - tile.size[1]) // 2
    sheet.paste(tile, (ox, oy))
    return ox, oy


def _draw_box(draw: ImageDraw.ImageDraw, origin, tile_size, image_shape, zoom) -> None:
    left, top, right, bottom = zoom_box(image_shape, zoom)
    sx, sy = tile_size[0] / image_shape[1], tile_size[1] / image_shape[0]
    ox, oy = origin
    draw.rectangle(
        (ox + left * sx, oy + top * sy, ox + right * sx - 1, oy + bottom * sy - 1),
        outline=BOX_COLOUR,
        width=2,
    )


def comparison_sheet(
    pairs: Sequence[Pair],
    labels: Sequence[str],
    stylized: Sequence[Sequence[np.ndarray]],
    rows: Sequence[Sequence[Mapping[str, Any]]] | None = None,
    zoom: Sequence[float] = DEFAULT_ZOOM,
    cell: int = CELL,
) -> Image.Image:
    """A Fig. 8-style sheet: content | style | one column per checkpoint.

    Each pair takes a caption line, an image row (red box = zoomed region), a metric line under
    each stylized image, and a row of zoomed crops (nearest-neighbour, so pixels stay visible).

    Args:
      pairs: content/style pairs (rows of the sheet).
      labels: checkpoint labels (column headers).
      stylized: `stylized[i][j]` = checkpoint i's output for pair j, clipped to [0, 1].
      rows: `rows[i][j]` = metric row of checkpoint i on pair j, for the captions; optional.
      zoom: fractional (x, y, w, h) region of each image to enlarge.
      cell: size of each image cell in pixels.
    """
    header_font, text_font = _font(16), _font(12)
    header_h, caption_h, metric_h = 28, 18, 16
    columns = 2 + len(labels)
    block_h = caption_h + cell + metric_h + cell + PAD
    width = PAD + columns * (cell + PAD)
    x, y, w, h = zoom
    notes = _wrap(
        "SSIM: luminance vs content (higher = more structure). C: content loss, S: style loss "
        "(lower = closer), on each checkpoint's own VGG encoder. "
        f"Red box: zoomed region x={x:g} y={y:g} w={w:g} h={h:g} (fractions of each image).",
        text_font,
        width - 2 * PAD,
    )
    line_h = 15
    height = header_h + len(pairs) * block_h + line_h * len(notes) + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for col, name in enumerate(["content", "style", *labels]):
        x = PAD + col * (cell + PAD)
        draw.text((x + cell / 2, header_h / 2), name, fill="black", font=header_font, anchor="mm")
    draw.line((0, header_h - 2, width, header_h - 2), fill=(160, 160, 160), width=1)
    for j, pair in enumerate(pairs):
        y = header_h + j * block_h
        draw.text(
            (PAD, y + 3),
            f"{j + 1}. content {pair.content_name}  +  style {pair.style_name}",
            fill="black",
            font=text_font,
        )
        image_y, metric_y = y + caption_h, y + caption_h + cell
        zoom_y = metric_y + metric_h
        images = [pair.content, pair.style, *(out[j] for out in stylized)]
        for col, image in enumerate(images):
            x = PAD + col * (cell + PAD)
            tile = _fit(image, cell)
            origin = _paste_centered(sheet, tile, x, image_y, cell)
            if col == 1:  # the style has no zoom: its own image is a different picture
                draw.text(
                    (x + cell / 2, zoom_y + cell / 2),
                    "<--  zoom of the  -->\nred-boxed region",
                    fill=(90, 90, 90),
                    font=text_font,
                    anchor="mm",
                    align="center",
                )
                continue
            _draw_box(draw, origin, tile.size, image.shape, zoom)
            _paste_centered(sheet, _crop(image, zoom, cell), x, zoom_y, cell)
            if col >= 2 and rows is not None:
                r = rows[col - 2][j]
                text = f"SSIM {r['ssim']:.3f}  C {r['content_loss']:.3g}  S {r['style_loss']:.3g}"
                draw.text(
                    (x + cell / 2, metric_y + metric_h / 2),
                    text,
                    fill="black",
                    font=text_font,
                    anchor="mm",
                )
    footer_y = header_h + len(pairs) * block_h
    for i, line in enumerate(notes):
        draw.text((PAD, footer_y + 2 + i * line_h), line, fill=(60, 60, 60), font=text_font)
    return sheet


# ---------------------------------------------------------------------------------- command


def parse_zoom(text: str) -> tuple[float, float, float, float]:
    """`x,y,w,h` as fractions of the image (each in [0, 1], x + w <= 1, y + h <= 1)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--zoom {text!r}: expected x,y,w,h, e.g. 0.4,0.4,0.2,0.2")
    x, y, w, h = values
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise argparse.ArgumentTypeError(
            f"--zoom {text!r}: fractions of the image with 0 <= x, y < 1, w, h > 0, "
            "x + w <= 1 and y + h <= 1"
        )
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flax_style.evaluate",
        description="Stylize every content/style pair with each checkpoint; write metrics.csv, "
        "the stylized images and comparison sheets.",
    )
    parser.add_argument(
        "--checkpoint", action="append", required=True, help="checkpoint dir (repeat)"
    )
    parser.add_argument("--label", action="append", help="column label per --checkpoint (repeat)")
    parser.add_argument("--content", required=True, help="folder of content images (recursive)")
    parser.add_argument("--style", required=True, help="folder of style images (recursive)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--size",
        type=int,
        default=512,
        help="shorter side of every image in px (default 512; 0 keeps sizes)",
    )
    parser.add_argument(
        "--zoom", type=parse_zoom, default=DEFAULT_ZOOM, help="zoomed region x,y,w,h as fractions"
    )
    parser.add_argument("--seed", type=int, default=0, help="stylization seed")
    parser.add_argument("--sheet-rows", type=int, default=6, help="pairs per comparison sheet")
    parser.add_argument("--lpips-weights", help="lpips v0.1 vgg.pth (linear layers) for LPIPS")
    parser.add_argument("--lpips-backbone", help="torchvision vgg16 state dict for LPIPS")
    args = parser.parse_args(argv)
    if bool(args.lpips_weights) != bool(args.lpips_backbone):
        parser.error("LPIPS needs both --lpips-weights and --lpips-backbone")
    if args.size < 0 or args.sheet_rows < 1:
        parser.error("--size must be >= 0 and --sheet-rows >= 1")

    try:
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
    except (EvaluationError, ImageError, CheckpointError, stylize.StylizeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    flat = [row for rows in all_rows for row in rows]
    summary = summarize(flat)
    write_csv(os.path.join(args.out, "metrics.csv"), flat + summary)
    sheets = []
    for page, start in enumerate(range(0, len(pairs), args.sheet_rows)):
        chunk = slice(start, start + args.sheet_rows)
        sheet = comparison_sheet(
            pairs[chunk],
            labels,
            [outputs[chunk] for outputs in all_outputs],
            [rows[chunk] for rows in all_rows],
            args.zoom,
        )
        sheets.append(os.path.join(args.out, f"sheet_{page + 1:02d}.png"))
        sheet.save(sheets[-1])
    print(format_summary(summary))
    csv_path = os.path.join(args.out, "metrics.csv")
    print(f"wrote {csv_path} and {len(sheets)} sheet(s): {', '.join(sheets)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
