"""Stylization of image files and folders: the plumbing between paths and the `Stylizer`.

`stylize_files` runs every content x style pair of image files (or every content with one mix
of all styles). One output runs the single-pair program (`Stylizer.stylize_mix`, the one the
benchmarks time); several outputs encode each image once, batch contents of equal shape, reuse
the encoded styles (`Stylizer.encode` + `Stylizer.render`), and report a bad image without
stopping the others.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from flax_style import atomic, image_io
from flax_style.stylize import Controls, StylizeError, Stylizer, check_size

OUTPUT_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "npy")


@dataclasses.dataclass
class FileReport:
    """Outcome of `stylize_files`."""

    written: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def resolve_images(specs: Sequence[str], what: str, errors: list[str]) -> list[str]:
    """Image paths from files, folders (recursive) and globs; problems are appended to errors."""
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            found = image_io.list_images(spec)
            if not found:
                kinds = ", ".join(image_io.IMAGE_EXTENSIONS)
                errors.append(f"{spec}: {what} folder holds no images ({kinds})")
        elif os.path.isfile(spec):
            found = [spec]
        elif glob.has_magic(spec):
            found = sorted(
                p
                for p in glob.glob(spec, recursive=True)
                if os.path.isfile(p) and p.lower().endswith(image_io.IMAGE_EXTENSIONS)
            )
            if not found:
                errors.append(f"{spec}: no {what} image matches this pattern")
        else:
            errors.append(f"{spec}: no such {what} file or folder")
            found = []
        paths.extend(p for p in found if p not in paths)
    return paths


def output_name(content_path: str, style_paths: Sequence[str], ext: str) -> str:
    """`{content}_stylized_{style}.{ext}`; a mix of styles joins their names with '+'."""
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
    return f"{stem(content_path)}_stylized_{'+'.join(stem(s) for s in style_paths)}.{ext}"


def save_output(path: str, image: np.ndarray) -> None:
    """`.npy`: float32 (h, w, 3) before clipping; images: clipped, x255 truncated to uint8."""
    if path.lower().endswith(".npy"):
        with atomic.write(path) as temporary, open(temporary, "wb") as f:
            np.save(f, np.asarray(image, np.float32))
    else:
        image_io.save_image(path, image)


class _LoggedList(list):
    """A list that reports each appended line as it comes (errors show up next to progress)."""

    def __init__(self, emit: Callable[[str], None]):
        super().__init__()
        self._emit = emit

    def append(self, line: str) -> None:
        super().append(line)
        self._emit(line)


class _FeatureCache:
    """Encoded styles by path, least recently used evicted beyond a byte budget."""

    def __init__(self, encode: Callable[[str], Any], budget_bytes: int):
        self._encode, self._budget, self._items = encode, budget_bytes, collections.OrderedDict()

    def get(self, path: str):
        if path in self._items:
            self._items.move_to_end(path)
            return self._items[path]
        value = self._encode(path)
        self._items[path] = value
        nbytes = lambda v: sum(x.nbytes for x in jax.tree.leaves(v))  # noqa: E731
        while len(self._items) > 1 and sum(nbytes(v) for v in self._items.values()) > self._budget:
            self._items.popitem(last=False)
        return value


def check_destination_and_sizes(options: Any) -> None:
    """The checks every output-options class shares (images here, clips in `stylize_video`):
    exactly one of `output` and `output_dir`, and positive `size`, `style_size`, `batch_size`.

    Raises:
      StylizeError: naming the flag and what it must be.
    """
    if (options.output is None) == (options.output_dir is None):
        raise StylizeError("give exactly one of --output and --output_dir")
    for name in ("size", "style_size", "batch_size"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise StylizeError(f"--{name} {value}: must be positive")


@dataclasses.dataclass(frozen=True)
class FileOptions:
    """Where outputs go and how images are read; checked here, once, on creation.

    Attributes:
      output: the output path when there is exactly one output (.png/.jpg/.webp/.bmp, .npy).
      output_dir: folder for `{content}_stylized_{style}.{ext}` files (when `output` is None).
      ext: output type in `output_dir`: png, jpg, jpeg, webp, bmp or npy.
      size: shorter side of the contents (and of the styles unless `style_size`); None keeps it.
      style_size: shorter side of the styles; None: as `size`.
      mask_path: mask image of a two-style mix (white: the first style, black: the second).
      batch_size: most contents per batch; batch_pixels: most pixels per batch.
      cache_bytes: memory budget of the encoded-style cache.
    """

    output: str | None = None
    output_dir: str | None = None
    ext: str = "png"
    size: int | None = None
    style_size: int | None = None
    mask_path: str | None = None
    batch_size: int = 4
    batch_pixels: int = 1 << 20
    cache_bytes: int = 2 << 30

    def __post_init__(self):
        object.__setattr__(self, "ext", self.ext.lower().lstrip("."))
        check_destination_and_sizes(self)
        kinds = ", ".join(OUTPUT_EXTENSIONS)
        if self.ext not in OUTPUT_EXTENSIONS:
            raise StylizeError(f"--ext {self.ext}: choose one of {kinds}")
        if self.output and os.path.splitext(self.output)[1].lower()[1:] not in OUTPUT_EXTENSIONS:
            raise StylizeError(f"--output {self.output}: end it in one of {kinds}")

    def path(self, content: str, styles: Sequence[str]) -> str:
        """Where the output of `content` stylized with `styles` goes."""
        return self.output or os.path.join(self.output_dir, output_name(content, styles, self.ext))


def stylize_files(
    stylizer: Stylizer,
    contents: Sequence[str],
    styles: Sequence[str],
    options: FileOptions,
    controls: Controls | None = None,
    log: Callable[[str], None] | None = None,
) -> FileReport:
    """Stylizes every content x style pair, or every content with one mix of all styles.

    A mix (one output per content) is made when `controls.weights` or `options.mask_path` is
    given. A bad image is reported in `errors` while the rest still run.

    Args:
      stylizer: the model.
      contents: content image paths.
      styles: style image paths.
      options: outputs, sizes and batching.
      controls: the blend (alpha, weights, preserve_color, seed); the mask comes from
        `options.mask_path`. None: the plain model.
      log: progress callback (one line per output, and `error: ...` lines as they happen).

    Returns:
      A `FileReport` with the written paths and one-line error messages.

    Raises:
      StylizeError: a mix whose style count does not fit its weights or mask.
    """
    log = log or (lambda line: None)
    controls = controls or Controls()
    report = FileReport(errors=_LoggedList(lambda line: log(f"error: {line}")))
    mix = controls.weights is not None or options.mask_path is not None
    jobs = [tuple(styles)] if mix else [(s,) for s in styles]
    total = len(contents) * len(jobs)
    if mix:
        flag = "--mask" if options.mask_path else "--style_weights"
        needed = 2 if options.mask_path else len(controls.weights)
        if len(styles) != needed:
            raise StylizeError(
                f"{flag} needs {needed} style images, found {len(styles)}: "
                f"{', '.join(styles) or 'none'}"
            )
    if options.output is not None and total != 1:
        report.errors.append(
            f"--output names one file but there are {total} outputs; use --output_dir"
        )
        return report
    if options.mask_path is not None:
        try:
            mask = image_io.luminance(image_io.load_image(options.mask_path))
        except image_io.ImageError as error:
            report.errors.append(f"mask {error}")
            return report
        controls = dataclasses.replace(controls, mask=mask)
    _check_unique_outputs(contents, jobs, options, report)
    if total == 1:
        _stylize_one(stylizer, contents[0], jobs[0], options, controls, report, log)
    else:
        _FolderRun(stylizer, jobs, options, controls, report, log).run(contents, total)
    return report


def _check_unique_outputs(contents, jobs, options: FileOptions, report: FileReport) -> None:
    """Reports outputs that would overwrite each other (same file names from two folders)."""
    names: dict[str, str] = {}
    for content in contents:
        for job in jobs:
            name = options.path(content, job)
            if name in names:
                report.errors.append(
                    f"{content}: output {name} would overwrite the one of {names[name]}; "
                    "rename one of them"
                )
            names.setdefault(name, content)


def _write(name: str, image: np.ndarray, report: FileReport) -> bool:
    if not np.isfinite(image).all():  # would be written as a black or garbled image
        report.errors.append(
            f"{name}: not written, the stylized image holds NaN/Inf (the model overflowed at "
            "this input; try float32 weights or another --size)"
        )
        return False
    try:
        save_output(name, image)
    except (image_io.ImageError, OSError) as error:
        report.errors.append(f"{name}: cannot write output ({error})")
        return False
    report.written.append(name)
    return True


def _stylize_one(stylizer, content, styles, options, controls, report, log) -> None:
    """One output: the single-pair program, from pixels to pixels (`Stylizer.stylize_mix`)."""
    style_size = options.size if options.style_size is None else options.style_size
    try:
        content_image = _load(content, options.size, "content")
        style_images = [_load(s, style_size, "style") for s in styles]
    except (image_io.ImageError, StylizeError) as error:
        report.errors.append(str(error))
        return
    tic = time.perf_counter()
    try:
        out = stylizer.stylize_mix(content_image, style_images, **_fields(controls))
    except StylizeError as error:
        report.errors.append(f"{content}: {error}")
        return
    seconds = time.perf_counter() - tic
    name = options.path(content, styles)
    if _write(name, out, report):
        h, w = out.shape[:2]
        log(f"[1/1] {name} ({w}x{h}, {seconds:.2f} s/image)")


def _load(path: str, size: int | None, role: str) -> np.ndarray:
    """`image_io.load_resized`, refusing an image too small for the network (one line naming
    the file and its role).

    Raises:
      image_io.ImageError: unreadable; StylizeError: too small.
    """
    try:
        image = image_io.load_resized(path, size)
    except image_io.ImageError as error:
        raise image_io.ImageError(f"{role} {error}") from None
    check_size(image.shape, f"{role} {path}")
    return image


def _fields(controls: Controls) -> dict[str, Any]:
    return {f.name: getattr(controls, f.name) for f in dataclasses.fields(controls)}


class _FolderRun:
    """Several outputs: each image encoded once, contents of equal shape batched."""

    def __init__(self, stylizer, jobs, options: FileOptions, controls, report, log):
        self.stylizer, self.jobs, self.options = stylizer, jobs, options
        self.controls, self.report, self.log = controls, report, log
        self.bad_styles: dict[str, str] = {}
        self.styles = _FeatureCache(self._encode_style, options.cache_bytes)
        self.done = 0

    def _encode_style(self, path: str):
        size = self.options.size if self.options.style_size is None else self.options.style_size
        try:
            return self.stylizer.encode(_load(path, size, "style"))
        except (image_io.ImageError, StylizeError) as error:
            self.bad_styles[path] = str(error)
        return None

    def run(self, contents: Sequence[str], total: int) -> None:
        groups: dict[tuple[int, int], list[str]] = {}
        for content in contents:
            try:
                groups.setdefault(image_io.target_shape(content, self.options.size), []).append(
                    content
                )
            except image_io.ImageError as error:
                self.report.errors.append(f"content {error}")
                self.done += len(self.jobs)
        for (h, w), paths in groups.items():
            per_batch = max(1, min(self.options.batch_size, self.options.batch_pixels // (h * w)))
            for start in range(0, len(paths), per_batch):
                self._batch(paths[start : start + per_batch], total)

    def _batch(self, paths: Sequence[str], total: int) -> None:
        batch_paths, images = [], []
        for path in paths:
            try:
                images.append(_load(path, self.options.size, "content"))
                batch_paths.append(path)
            except (image_io.ImageError, StylizeError) as error:
                self.report.errors.append(str(error))
                self.done += len(self.jobs)
        if not images:
            return
        batch = np.stack(images)
        feats = self.stylizer.encode(batch)
        for job in self.jobs:
            self._render(batch_paths, batch, feats, job, total)

    def _render(self, batch_paths, batch, feats, job, total: int) -> None:
        tic = time.perf_counter()
        styles_feats = [self.styles.get(s) for s in job]
        failed = [s for s in job if s in self.bad_styles]
        self.done += len(batch_paths)
        if failed:
            message = self.bad_styles[failed[0]]
            if message not in self.report.errors:
                self.report.errors.append(message)
            return
        h, w = batch.shape[1:3]
        try:
            out = self.stylizer.render(batch, feats, styles_feats, self.controls)
        except StylizeError as error:
            self.report.errors.append(str(error))
            return
        except jax.errors.JaxRuntimeError as error:
            if "RESOURCE_EXHAUSTED" not in str(error):
                raise
            self.report.errors.append(
                f"{batch_paths[0]}: out of memory at {w}x{h} with "
                f"{'+'.join(job)}; try --size, --style_size or a smaller --query_chunk"
            )
            return
        seconds = (time.perf_counter() - tic) / len(batch_paths)
        for i, (path, image) in enumerate(zip(batch_paths, out, strict=True)):
            name = self.options.path(path, job)
            if _write(name, image, self.report):
                count = self.done - len(batch_paths) + i + 1
                self.log(f"[{count}/{total}] {name} ({w}x{h}, {seconds:.2f} s/image)")
