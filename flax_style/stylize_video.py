"""Stylizing video clips: the library behind `infer.py --content clip.mp4`.

For every model variant: the style is read and encoded once, and its style-position subset is
drawn once from `seed` (the same for every frame, as the release seeds one subset per style);
frames are decoded, stylized in batches and encoded as a stream, so memory stays flat in the
clip's length; the output keeps the frame size (unless `size`), the timing and the audio
(copied), and appears under its name only when complete (`video.ClipWriter`).
`infer.py --content clip.mp4` runs `stylize_clips`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from flax_style import errors, image_io, stylize_files, video
from flax_style.stylize import Controls, StylizeError, Stylizer


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    """Where output clips go and how frames and styles are read; checked on creation.

    Attributes:
      output: the output video when there is exactly one (container from its extension).
      output_dir: folder for `{clip}_stylized_{style}.{clip's extension}` (when `output` is None).
      size: shorter side of the frames (and of the output, kept even); None keeps the clip's.
      style_size: shorter side of the styles; None: as `size`.
      mask_path: mask image of a two-style mix (white: the first style, black: the second).
      batch_size: frames per compiled call (the last batch is padded: one compilation).
    """

    output: str | None = None
    output_dir: str | None = None
    size: int | None = None
    style_size: int | None = None
    mask_path: str | None = None
    batch_size: int = 4

    def __post_init__(self):
        stylize_files.check_destination_and_sizes(self)
        if self.output is not None and not video.is_video(self.output):
            kinds = ", ".join(video.VIDEO_EXTENSIONS)
            raise StylizeError(f"--output {self.output}: a clip's output ends in one of {kinds}")

    def path(self, clip: str, styles: Sequence[str]) -> str:
        """Where the output of `clip` stylized with `styles` goes."""
        ext = os.path.splitext(clip)[1].lower().lstrip(".")
        return self.output or os.path.join(
            self.output_dir, stylize_files.output_name(clip, styles, ext)
        )


def _frame_size(info: video.ClipInfo, size: int | None) -> tuple[int, int]:
    """(h, w) of the stylized frames; even sides when resizing (4:2:0 video needs them)."""
    if size is None:
        return info.height, info.width
    scale = size / min(info.height, info.width)
    even = lambda x: max(2, 2 * round(x * scale / 2))  # noqa: E731
    return even(info.height), even(info.width)


def _pad(images: np.ndarray, batch_size: int) -> np.ndarray:
    """Repeats the last frame up to `batch_size` frames (same shape, no recompilation)."""
    missing = batch_size - images.shape[0]
    return np.concatenate([images, np.repeat(images[-1:], missing, axis=0)]) if missing else images


def _progress(done: int, total: int, start: float) -> str:
    elapsed = time.perf_counter() - start
    rate = done / elapsed if elapsed > 0 else 0.0
    if total and rate:
        eta = f", ETA {max(total - done, 0) / rate:.0f} s"
        return f"frame {done}/{total}, {rate:.2f} frames/s{eta}"
    return f"frame {done}, {rate:.2f} frames/s"


def stylize_clip(
    stylizer: Stylizer,
    clip: str,
    styles: Sequence[str],
    output: str,
    options: ClipOptions,
    controls: Controls | None = None,
    log: Callable[[str], None] | None = None,
) -> int:
    """Stylizes every frame of a clip with one style (or one mix of styles) into `output`.

    Args:
      stylizer: the model.
      clip: the video (any container FFmpeg reads).
      styles: style image paths (one, or several mixed by `controls.weights` or the mask).
      output: the video file to write (container from its extension: mp4, mkv, mov, webm...).
      options: sizes and batch size.
      controls: the blend (alpha, weights, mask, preserve_color, seed); None: the plain model.
      log: progress callback (one line per batch: frames done, frames/s and ETA).

    Returns:
      The number of frames written.

    Raises:
      errors.UserError: an unreadable clip, frame or style, or controls that do not fit.
    """
    log = log or (lambda line: None)
    controls = controls or Controls()
    info = video.probe(clip)
    height, width = _frame_size(info, options.size)
    style_size = options.size if options.style_size is None else options.style_size
    # Encoded once; the subset of style positions is drawn from `controls.seed` in each call,
    # the same key every time, so every frame attends to the same positions.
    styles_feats = [stylizer.encode(image_io.load_resized(s, style_size)) for s in styles]
    out_info = dataclasses.replace(info, height=height, width=width)
    resize = None if (height, width) == (info.height, info.width) else (height, width)
    start, done = time.perf_counter(), 0
    with video.ClipWriter(output, out_info) as writer:
        for batch in video.read_clip(clip, options.batch_size, resize):
            frames = _pad(batch.images, options.batch_size)
            out = stylizer.render(frames, stylizer.encode(frames), styles_feats, controls)
            writer.write(out[: len(batch.pts)], batch.pts, batch.time_base)
            done += len(batch.pts)
            log(f"{output}: {_progress(done, info.num_frames, start)}")
    return done


def stylize_clips(
    stylizer: Stylizer,
    clips: Sequence[str],
    styles: Sequence[str],
    options: ClipOptions,
    controls: Controls | None = None,
    log: Callable[[str], None] | None = None,
) -> stylize_files.FileReport:
    """Every clip x style, or every clip with one mix of all styles; errors reported per job.

    A mix is made when `controls.weights` or `options.mask_path` is given.

    Args:
      stylizer: the model.
      clips: video paths.
      styles: style image paths.
      options: outputs, sizes and batching.
      controls: the blend; the mask comes from `options.mask_path`. None: the plain model.
      log: progress and `error: ...` lines.

    Returns:
      A `stylize_files.FileReport`: written paths and one-line errors (other jobs still run).
    """
    log = log or (lambda line: None)
    controls = controls or Controls()
    report = stylize_files.FileReport()
    mix = controls.weights is not None or options.mask_path is not None
    jobs = [(clip, tuple(styles) if mix else (style,)) for clip in clips for style in styles]
    jobs = list(dict.fromkeys(jobs))  # a mix is one job per clip

    def fail(line: str) -> None:
        report.errors.append(line)
        log(f"error: {line}")

    if options.output is not None and len(jobs) > 1:
        fail(f"--output names one file but there are {len(jobs)} outputs; use --output_dir")
        return report
    if options.mask_path is not None:
        mask = image_io.luminance(image_io.load_image(options.mask_path))
        controls = dataclasses.replace(controls, mask=mask)
    for clip, job_styles in jobs:
        path = options.path(clip, job_styles)
        try:
            frames = stylize_clip(stylizer, clip, job_styles, path, options, controls, log)
        except errors.UserError as error:
            fail(str(error))
            continue
        report.written.append(path)
        log(f"wrote {path} ({frames} frames)")
    return report
