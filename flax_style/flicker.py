"""Flicker of a stylized clip: short- and long-term warping error against the input's motion.

    python -m flax_style.flicker --content clip.mp4 --stylized out.mp4 [--stylized other.mp4] \
        [--long_term_gap 10] [--csv flicker.csv]

The motion is measured on the input clip (where it is real) with OpenCV's DIS optical flow, and
the stylized frames are held to it: a stable stylization moves with the content, a flickering
one does not. For frames `s` and `t = s + gap`, with forward flow `f` (from input frame s to
input frame t) and backward flow `b` (t to s):

  warped(x)  = O_t(x + f(x))                         bilinear, O = stylized frame, RGB in [0, 1]
  valid(x)   = x + f(x) inside the frame, and the forward-backward check holds:
               |f(x) + b(x + f(x))|^2 <= 0.01 (|f(x)|^2 + |b(x + f(x))|^2) + 0.5
               (Sundaram et al. 2010, as in Ruder et al. 2016: pixels that are occluded, or
               whose flow is unreliable, fail it)
  E(s, t)    = mean over valid x and the 3 channels of (O_s(x) - warped(x))^2

The short-term error averages E(s, s + 1) over the clip, the long-term error E(s, s + gap). The
same numbers for the input clip itself (O = input) are reported as the floor the flow's own
error sets. Lower is steadier. Frames are streamed: memory holds `gap + 1` frames.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from absl import flags

from flax_style import cli, errors, video

PROGRAM = "python -m flax_style.flicker"
LONG_TERM_GAP = 10  # frames between the two frames of a long-term pair
CONSISTENCY_RATIO, CONSISTENCY_SLACK = 0.01, 0.5  # the forward-backward check (pixels^2)
FLOW_PRESET = "medium"  # DIS preset: ultrafast, fast or medium


class FlickerError(errors.UserError):
    """Clips that cannot be compared (missing, unreadable, different sizes or lengths)."""


def _cv2() -> Any:
    """OpenCV, imported on first use: only the flicker metric needs it."""
    try:
        import cv2
    except ImportError as error:
        raise FlickerError(
            "the flicker metric needs OpenCV: pip install 'flax-style[video]'"
        ) from error
    return cv2


def optical_flow(source: np.ndarray, target: np.ndarray, preset: str = FLOW_PRESET) -> np.ndarray:
    """DIS optical flow from `source` to `target`: `source(x) ~ target(x + flow(x))`.

    Args:
      source, target: (h, w, 3) RGB in [0, 1] (the flow runs on their 8-bit grey levels).
      preset: DIS preset, "ultrafast", "fast" or "medium".

    Returns:
      float32 (h, w, 2) flow, (dx, dy) in pixels.
    """
    cv2 = _cv2()
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    dis = cv2.DISOpticalFlow_create(presets[preset])
    grey = [cv2.cvtColor(video.to_uint8(x), cv2.COLOR_RGB2GRAY) for x in (source, target)]
    return dis.calc(grey[0], grey[1], None)


def warp(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`image(x + flow(x))`, bilinear, and where `x + flow(x)` lies inside the image.

    Args:
      image: (h, w, c) float.
      flow: (h, w, 2) (dx, dy).

    Returns:
      (warped (h, w, c) float32, inside (h, w) bool).
    """
    cv2 = _cv2()
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(
        np.asarray(image, np.float32), map_x, map_y, cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    return warped.reshape(image.shape), inside


def consistent(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """The valid mask: `x + forward(x)` inside the frame and the forward-backward check holds
    (`|f + b(x + f)|^2 <= 0.01 (|f|^2 + |b(x + f)|^2) + 0.5`; module docstring)."""
    backward_there, inside = warp(backward, forward)
    loop = np.sum((forward + backward_there) ** 2, axis=-1)
    bound = (
        CONSISTENCY_RATIO * (np.sum(forward**2, axis=-1) + np.sum(backward_there**2, axis=-1))
        + CONSISTENCY_SLACK
    )
    return inside & (loop <= bound)


def pair_error(
    stylized_s: np.ndarray, stylized_t: np.ndarray, forward: np.ndarray, valid: np.ndarray
) -> float:
    """E(s, t): mean squared difference of frame s and frame t warped back, over valid pixels."""
    warped, _ = warp(stylized_t, forward)
    if not valid.any():
        return float("nan")
    return float(np.mean((stylized_s[valid] - warped[valid]) ** 2))


@dataclasses.dataclass
class _Pairs:
    """Running sums of one kind of pair (short- or long-term) for each clip."""

    sums: np.ndarray
    count: int = 0
    valid_fraction: float = 0.0

    def add(self, errors_per_clip: Sequence[float], valid: np.ndarray) -> None:
        if not np.isnan(errors_per_clip).any():
            self.sums += np.asarray(errors_per_clip)
            self.count += 1
            self.valid_fraction += float(valid.mean())

    def means(self) -> list[float]:
        return [float(s / self.count) if self.count else float("nan") for s in self.sums]


@dataclasses.dataclass(frozen=True)
class FlickerReport:
    """Warping errors of each clip (index 0: the input clip itself, then the stylized ones).

    Attributes:
      short_term, long_term: mean E over adjacent pairs / pairs `gap` frames apart.
      frames, gap: frames compared, long-term gap.
      short_valid, long_valid: mean fraction of pixels that pass the checks.
    """

    short_term: list[float]
    long_term: list[float]
    frames: int
    gap: int
    short_valid: float
    long_valid: float


def _frames(path: str) -> Iterator[np.ndarray]:
    for batch in video.read_clip(path, 1):
        yield batch.images[0]


def flicker(
    content: str, stylized: Sequence[str], gap: int = LONG_TERM_GAP, preset: str = FLOW_PRESET
) -> FlickerReport:
    """Short- and long-term warping errors of stylized clips, with the flow of `content`.

    Args:
      content: the input clip (the flow is computed on it).
      stylized: stylized versions of it (same frame count and size).
      gap: frames between the two frames of a long-term pair.
      preset: DIS preset.

    Raises:
      FlickerError, video.VideoError: unreadable clips, or clips that do not match.
    """
    if gap < 1:
        raise FlickerError(f"--long_term_gap {gap}: must be at least 1")
    info = video.probe(content)
    for path in stylized:
        other = video.probe(path)
        if (other.width, other.height) != (info.width, info.height):
            raise FlickerError(
                f"{path}: {other.width}x{other.height} frames, the input {content} has "
                f"{info.width}x{info.height}; stylize it at the input's size"
            )
    readers = [_frames(p) for p in (content, *stylized)]
    window: collections.deque = collections.deque(maxlen=gap + 1)
    short = _Pairs(np.zeros(len(readers)))
    long = _Pairs(np.zeros(len(readers)))
    frames = 0
    for group in itertools.zip_longest(*readers):
        if any(frame is None for frame in group):
            ended = [p for p, f in zip((content, *stylized), group, strict=True) if f is None]
            raise FlickerError(
                f"{ended[0]} ends after {frames} frames, before the other clips: compare "
                "stylizations of this very clip"
            )
        window.append(group)
        frames += 1
        for kind, first in ((short, window[-2] if len(window) > 1 else None),
                            (long, window[0] if len(window) == gap + 1 else None)):  # fmt: skip
            if first is None or (kind is long and gap == 1):
                continue
            forward = optical_flow(first[0], group[0], preset)
            valid = consistent(forward, optical_flow(group[0], first[0], preset))
            kind.add(
                [pair_error(a, b, forward, valid) for a, b in zip(first, group, strict=True)], valid
            )
    if gap == 1:
        long = short
    return FlickerReport(
        short.means(),
        long.means(),
        frames,
        gap,
        short.valid_fraction / max(short.count, 1),
        long.valid_fraction / max(long.count, 1),
    )


def _flags() -> flags.FlagValues:
    values = flags.FlagValues()
    define = {"flag_values": values}
    flags.DEFINE_string("content", None, "The input clip (its motion is the reference).", **define)
    flags.DEFINE_multi_string(
        "stylized", None, "Stylized clip(s) of --content (repeat the flag).", **define
    )
    flags.DEFINE_integer(
        "long_term_gap", LONG_TERM_GAP, "Frames between a long-term pair's frames.", **define
    )
    flags.DEFINE_enum(
        "flow_preset", FLOW_PRESET, ["ultrafast", "fast", "medium"], "DIS preset.", **define
    )
    flags.DEFINE_string("csv", None, "Also write the table to this CSV file.", **define)
    flags.mark_flags_as_required(["content", "stylized"], flag_values=values)
    return values


@errors.reports_user_errors
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(_flags(), argv, PROGRAM, __doc__.split("\n\n")[0])
    report = flicker(args.content, args.stylized, args.long_term_gap, args.flow_preset)
    rows = [
        {
            "clip": path,
            "short_term": report.short_term[i],
            "long_term": report.long_term[i],
            "frames": report.frames,
            "gap": report.gap,
        }
        for i, path in enumerate([args.content, *args.stylized])
    ]
    print(
        f"warping error (mean squared, RGB in [0, 1]) over {report.frames} frames; valid pixels "
        f"{report.short_valid:.1%} (adjacent), {report.long_valid:.1%} ({report.gap} apart)"
    )
    for row in rows:
        label = f"{row['clip']} (input: the flow's floor)" if row is rows[0] else row["clip"]
        print(f"  short-term {row['short_term']:.6f}  long-term {row['long_term']:.6f}  {label}")
    if args.csv:
        os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
        with open(args.csv, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
