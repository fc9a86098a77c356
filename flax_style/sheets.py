"""Comparison sheets like Fig. 8 of the paper: content | style | one column per checkpoint."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DEFAULT_ZOOM = (0.375, 0.375, 0.25, 0.25)  # fractional (x, y, w, h) of the zoomed region


@dataclass
class Pair:
    """One content/style pair, images already resized."""

    content_name: str
    style_name: str
    content: np.ndarray
    style: np.ndarray


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


_HEADER_H, _CAPTION_H, _METRIC_H, _LINE_H = 28, 18, 16, 15


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
    columns = 2 + len(labels)
    block_h = _CAPTION_H + cell + _METRIC_H + cell + PAD
    width = PAD + columns * (cell + PAD)
    x, y, w, h = zoom
    notes = _wrap(
        "SSIM: luminance vs content (higher = more structure). C: content loss, S: style loss "
        "(lower = closer), on each checkpoint's own VGG encoder. "
        f"Red box: zoomed region x={x:g} y={y:g} w={w:g} h={h:g} (fractions of each image).",
        text_font,
        width - 2 * PAD,
    )
    height = _HEADER_H + len(pairs) * block_h + _LINE_H * len(notes) + PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for col, name in enumerate(["content", "style", *labels]):
        x = PAD + col * (cell + PAD)
        draw.text((x + cell / 2, _HEADER_H / 2), name, fill="black", font=header_font, anchor="mm")
    draw.line((0, _HEADER_H - 2, width, _HEADER_H - 2), fill=(160, 160, 160), width=1)
    for j, pair in enumerate(pairs):
        y = _HEADER_H + j * block_h
        draw.text(
            (PAD, y + 3),
            f"{j + 1}. content {pair.content_name}  +  style {pair.style_name}",
            fill="black",
            font=text_font,
        )
        images = [pair.content, pair.style, *(out[j] for out in stylized)]
        metric_lines = (
            [_caption(r[j]) for r in rows] if rows is not None else [None] * len(stylized)
        )
        captions = [None, None, *metric_lines]
        _draw_block(sheet, draw, images, captions, y + _CAPTION_H, zoom, cell, text_font)
    footer_y = _HEADER_H + len(pairs) * block_h
    for i, line in enumerate(notes):
        draw.text((PAD, footer_y + 2 + i * _LINE_H), line, fill=(60, 60, 60), font=text_font)
    return sheet


def _caption(row: Mapping[str, Any]) -> str:
    return f"SSIM {row['ssim']:.3f}  C {row['content_loss']:.3g}  S {row['style_loss']:.3g}"


def _draw_block(sheet, draw, images, captions, image_y, zoom, cell, font) -> None:
    """One pair: the image row, the metric line and the row of zoomed crops."""
    metric_y = image_y + cell
    zoom_y = metric_y + _METRIC_H
    for col, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x = PAD + col * (cell + PAD)
        tile = _fit(image, cell)
        origin = _paste_centered(sheet, tile, x, image_y, cell)
        if col == 1:  # the style has no zoom: its own image is a different picture
            draw.text(
                (x + cell / 2, zoom_y + cell / 2),
                "<--  zoom of the  -->\nred-boxed region",
                fill=(90, 90, 90),
                font=font,
                anchor="mm",
                align="center",
            )
            continue
        _draw_box(draw, origin, tile.size, image.shape, zoom)
        _paste_centered(sheet, _crop(image, zoom, cell), x, zoom_y, cell)
        if caption is not None:
            draw.text(
                (x + cell / 2, metric_y + _METRIC_H / 2),
                caption,
                fill="black",
                font=font,
                anchor="mm",
            )
