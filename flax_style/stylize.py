"""Stylization with a trained or converted model: the library behind `infer.py`.

Two layers:
  `Stylizer` (from `load_stylizer(checkpoint_dir)`) turns arrays into arrays. Every entry point
  runs one jit-compiled function (compiled once per input shape and option set): encode,
  transform, blend decoder inputs (content-style trade-off, style mixes, masks), decode at the
  content's exact size, and optionally put the content's colours back.
  `stylize_files` runs every content x style pair of image files, encoding each image once,
  batching contents of equal shape, and reporting bad images without stopping.

Controls (none exists in the official release), all as blends of decoder inputs `T(c, s)`:
  alpha          `alpha * T(c, s) + (1 - alpha) * T(c, c)`.
  style weights  `sum_i w_i T(c, s_i)` with the weights normalised to sum 1.
  mask           `m * T(c, s_1) + (1 - m) * T(c, s_2)`, `m` area-resized to each decoder-input
                 resolution (soft edges; the decoder smooths the seam).
  preserve_color output luminance (BT.601 Y) with the content's chroma:
                 `content + (Y(out) - Y(content))` per channel, so Cb/Cr equal the content's.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from flax_style import checkpoint, image_io, models

# Content positions per attention chunk. At relu4_1 with a 65,536-position style subset a
# chunk's logits take 4096 * 65536 * 4 B = 1 GiB; the official code (no chunks) holds the whole
# (n_content x n_style) matrix, e.g. 16 GiB at 2048x2048.
DEFAULT_QUERY_CHUNK = 4096
# relu5_1 is 1/16 of the input (ceil): reflection padding and unbiased variance need >= 2.
MIN_SIDE = 17
LUMA = (0.299, 0.587, 0.114)  # BT.601
MAKE_CHECKPOINT_HINT = (
    "make one with `python -m flax_style.convert --model {adaattn,proposed} --torch-dir DIR "
    "--vgg vgg_normalised.pth --out CKPT_DIR` or `python train.py ...`"
)

Features = list  # [relu1_1 .. relu5_1], each (b, h, w, c)


class StylizeError(ValueError):
    """Unusable stylization input (size, mask, weights); the message is one line."""


def load_stylizer(checkpoint_dir: str, query_chunk: int | None = DEFAULT_QUERY_CHUNK) -> Stylizer:
    """A `Stylizer` for the model in a convert or train checkpoint directory.

    Args:
      checkpoint_dir: checkpoint root written by `python -m flax_style.convert` or `train.py`
        (a train work dir with `checkpoints/` works too).
      query_chunk: content positions per attention chunk (bounds memory); None for one pass.

    Raises:
      checkpoint.CheckpointError: no readable model checkpoint there; the message says how to
        make one.
    """
    try:
        params, encoder_params, config = checkpoint.load_model(checkpoint_dir)
    except checkpoint.CheckpointError as error:
        message = str(error)
        if "python -m flax_style.convert" not in message:
            message = f"{message}; {MAKE_CHECKPOINT_HINT}"
        raise checkpoint.CheckpointError(message) from error
    except Exception as error:  # orbax raises many types for a foreign directory
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise checkpoint.CheckpointError(
            f"{checkpoint_dir}: not a readable flax-style checkpoint "
            f"({type(error).__name__}: {detail}); {MAKE_CHECKPOINT_HINT}"
        ) from error
    return Stylizer(params, encoder_params, config, query_chunk)


def luminance(image: jax.Array) -> jax.Array:
    """BT.601 luma of (..., 3) RGB."""
    return image @ jnp.asarray(LUMA, image.dtype)


def _area_resize(mask: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(b, h, w) mask -> (b, h', w', 1), antialiased (area-like) so edges stay soft."""
    b = mask.shape[0]
    resized = jax.image.resize(mask, (b, *size), method="linear", antialias=True)
    return jnp.clip(resized, 0.0, 1.0)[..., None]


class _Program:
    """The jitted functions of one model config; shared by every `Stylizer` of that config, so
    that a new `Stylizer` (another checkpoint, another `infer.main` call) reuses compilations."""

    def __init__(self, model_config: dict[str, Any], query_chunk: int | None):
        self.encoder = models.build_encoder(model_config, models.encoder_depth(model_config))
        self.network = models.build_network(model_config, query_chunk=query_chunk)
        self.traces = collections.Counter()  # traces per entry point (recompile tests)
        static = ("output_size", "with_content")
        self.encode = jax.jit(self._encode)
        self.render = jax.jit(self._render, static_argnames=static)
        self.fused = jax.jit(self._fused, static_argnames=static)

    def _encode(self, encoder_params, images):
        return self.encoder.apply({"params": encoder_params}, images)

    def _transform(self, params, content_feats, style_feats, key):
        b = content_feats[0].shape[0]
        style_feats = [jnp.broadcast_to(f, (b, *f.shape[1:])) for f in style_feats]
        return self.network.apply(
            {"params": params},
            content_feats,
            style_feats,
            method="transform",
            rngs={"sample": key},
        )

    def _render(
        self,
        params,
        content,
        content_feats,
        styles_feats,
        weights,
        mask,
        alpha,
        key,
        preserve_color,
        *,
        output_size,
        with_content,
    ):
        """Decoder-input blend of `T(c, s_i)` (and `T(c, c)`), decoded at `output_size`."""
        self.traces["render"] += 1
        mix = None
        for i, style_feats in enumerate(styles_feats):
            t = self._transform(params, content_feats, style_feats, key)
            if mask is not None:
                m = {name: _area_resize(mask, x.shape[1:3]) for name, x in t.items()}
                t = {name: (m[name] if i == 0 else 1.0 - m[name]) * x for name, x in t.items()}
            elif len(styles_feats) > 1:
                t = {name: weights[i] * x for name, x in t.items()}
            mix = t if mix is None else {name: mix[name] + x for name, x in t.items()}
        if with_content:
            own = self._transform(params, content_feats, content_feats, key)
            mix = {name: alpha * mix[name] + (1.0 - alpha) * own[name] for name in mix}
        out = self.network.apply({"params": params}, mix, output_size, method="decode")
        # Traced, not static: one compilation serves both settings (the cost is elementwise).
        recolored = content + (luminance(out) - luminance(content))[..., None]
        return jnp.where(preserve_color, recolored, out)

    def _fused(
        self, params, encoder_params, content, styles, weights, mask, alpha, key, preserve, **static
    ):
        """The whole stylization as one function: encode both, transform, blend, decode."""
        self.traces["fused"] += 1
        content_feats = self._encode(encoder_params, content)
        styles_feats = [self._encode(encoder_params, style) for style in styles]
        return self._render(
            params,
            content,
            content_feats,
            styles_feats,
            weights,
            mask,
            alpha,
            key,
            preserve,
            **static,
        )


def _unwrap(tree: Any) -> Any:
    """Parameters as checkpoints hold them: without the `{"params": ...}` variables wrapper."""
    return tree["params"] if isinstance(tree, dict) and set(tree) == {"params"} else tree


@functools.lru_cache(maxsize=8)
def _program(config_json: str, query_chunk: int | None) -> _Program:
    return _Program(json.loads(config_json), query_chunk)


class Stylizer:
    """A model with its weights, stylizing numpy images.

    Attributes:
      model_config: the checkpoint's model config (variant, widths, fusion weights, ...).
      params: trainable network parameters.
      encoder_params: VGG encoder parameters.
      query_chunk: content positions per attention chunk, or None.
    """

    def __init__(
        self,
        params: Any,
        encoder_params: Any,
        model_config: dict[str, Any],
        query_chunk: int | None = DEFAULT_QUERY_CHUNK,
    ):
        self.model_config = models.model_config(model_config)
        self.params = _unwrap(params)
        self.encoder_params = _unwrap(encoder_params)
        self.query_chunk = query_chunk
        self._program = _program(json.dumps(self.model_config, sort_keys=True), query_chunk)

    @property
    def traces(self) -> collections.Counter:
        """How often each jitted entry point was traced (shared by Stylizers of one config)."""
        return self._program.traces

    # ------------------------------------------------------------------ public API
    def stylize(
        self,
        content: np.ndarray,
        style: np.ndarray,
        seed: int = 0,
        alpha: float = 1.0,
        preserve_color: bool = False,
    ) -> np.ndarray:
        """Stylizes one image with one style.

        Args:
          content: (h, w, 3) float RGB in [0, 1].
          style: (h', w', 3) float RGB in [0, 1]; any size.
          seed: seed of the style-position subset (used only when a style exceeds max_sample).
          alpha: content-style trade-off in [0, 1]; 1 is the plain model.
          preserve_color: keep the content's chroma (transfer luminance only).

        Returns:
          float32 (h, w, 3), not clipped.
        """
        return self.stylize_mix(
            content, [style], seed=seed, alpha=alpha, preserve_color=preserve_color
        )

    def stylize_mix(
        self,
        content: np.ndarray,
        styles: Sequence[np.ndarray],
        weights: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        seed: int = 0,
        alpha: float = 1.0,
        preserve_color: bool = False,
    ) -> np.ndarray:
        """Stylizes one image or a batch with a weighted mix of styles, or two styles by mask.

        Args:
          content: (h, w, 3) or a batch (b, h, w, 3), float RGB in [0, 1].
          styles: style images, each (h_i, w_i, 3) (shared by the batch) or (b, h_i, w_i, 3).
          weights: one non-negative weight per style (normalised to sum 1); equal by default.
          mask: (H, W) in [0, 1] (any size, stretched onto the content): `styles[0]` where it is
            1, `styles[1]` where it is 0. Needs exactly two styles; excludes `weights`.
          seed: seed of the style-position subset.
          alpha: content-style trade-off in [0, 1].
          preserve_color: keep the content's chroma.

        Returns:
          float32 (h, w, 3) or (b, h, w, 3) like `content`, not clipped.
        """
        single = np.ndim(content) == 3
        content = _batched(content, "content")
        styles = [_batched(s, f"style {i}") for i, s in enumerate(styles)]
        out = self._run(
            self._program.fused,
            (self.params, self.encoder_params, content, styles),
            content,
            len(styles),
            weights,
            mask,
            seed,
            alpha,
            preserve_color,
        )
        return out[0] if single else out

    def encode(self, images: np.ndarray) -> Features:
        """Encoder features [relu1_1 .. relu5_1] of (h, w, 3) or (b, h, w, 3) images."""
        return self._program.encode(self.encoder_params, _batched(images, "image"))

    def render(
        self,
        content: np.ndarray,
        content_feats: Features,
        styles_feats: Sequence[Features],
        weights: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        seed: int = 0,
        alpha: float = 1.0,
        preserve_color: bool = False,
    ) -> np.ndarray:
        """`stylize_mix` from features made by `encode` (encode each image once, reuse it).

        Args:
          content: the (b, h, w, 3) images of `content_feats` (for the output size and colour).
          content_feats: `encode(content)`.
          styles_feats: `encode(style)` per style; batch 1 (shared) or b.
          weights, mask, seed, alpha, preserve_color: as in `stylize_mix`.

        Returns:
          float32 (b, h, w, 3), not clipped.
        """
        content = _batched(content, "content")
        return self._run(
            self._program.render,
            (self.params, content, content_feats, list(styles_feats)),
            content,
            len(styles_feats),
            weights,
            mask,
            seed,
            alpha,
            preserve_color,
        )

    def _run(self, fn, args, content, num_styles, weights, mask, seed, alpha, preserve_color):
        _check_size(content.shape[1:3], "content")
        if not 0.0 <= alpha <= 1.0:
            raise StylizeError(f"alpha {alpha}: must lie in [0, 1]")
        if num_styles < 1:
            raise StylizeError("no style given")
        if mask is not None:
            if num_styles != 2:
                raise StylizeError(f"a mask needs exactly two styles, got {num_styles}")
            if weights is not None:
                raise StylizeError("give either a mask or style weights, not both")
            mask = np.asarray(mask, np.float32)
            if mask.ndim == 3:  # an RGB mask image: its luminance
                mask = mask @ np.asarray(LUMA, np.float32)
            if mask.ndim != 2:
                raise StylizeError(f"mask of shape {mask.shape}: expected (h, w)")
            mask = np.broadcast_to(mask[None], (content.shape[0], *mask.shape))
        weights = normalize_weights(weights, num_styles)
        out = fn(
            *args,
            weights,
            mask,
            np.float32(alpha),
            jax.random.key(seed),
            np.bool_(preserve_color),
            output_size=tuple(content.shape[1:3]),
            with_content=alpha != 1.0,
        )
        return np.asarray(out, np.float32)


def normalize_weights(weights: Sequence[float] | None, num_styles: int) -> np.ndarray:
    """Style weights as float32 summing to 1 (equal when None)."""
    if weights is None:
        return np.full((num_styles,), 1.0 / num_styles, np.float32)
    weights = np.asarray(weights, np.float64)
    if weights.shape != (num_styles,):
        raise StylizeError(f"{weights.size} style weight(s) for {num_styles} style(s)")
    if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise StylizeError(f"style weights {weights.tolist()}: need >= 0 with a positive sum")
    return (weights / weights.sum()).astype(np.float32)


def _batched(images: Any, what: str) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise StylizeError(f"{what} of shape {images.shape}: expected (h, w, 3) or (b, h, w, 3)")
    _check_size(images.shape[1:3], what)
    return images


def _check_size(hw: Sequence[int], what: str) -> None:
    if min(hw) < MIN_SIDE:
        raise StylizeError(
            f"{what} is {hw[1]}x{hw[0]} pixels; at least {MIN_SIDE} per side needed (try --size)"
        )


# ====================================================================== files and folders
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


def target_shape(path: str, size: int | None) -> tuple[int, int]:
    """(h, w) an image will have after EXIF orientation and `--size`, without decoding it."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        image_io.load_image(path)  # raises its one-line message for these
    try:
        with Image.open(path) as image:
            w, h = image.size
            if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
                w, h = h, w
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise image_io.ImageError(
            f"{path}: cannot decode image ({error}); replace or remove it"
        ) from error
    return _scaled(h, w, size)


def _scaled(h: int, w: int, size: int | None) -> tuple[int, int]:
    if size is None:
        return h, w
    scale = size / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def load_resized(path: str, size: int | None) -> np.ndarray:
    """`image_io.load_image`, shorter side resized to `size` (Lanczos on float data)."""
    image = image_io.load_image(path)
    h, w = _scaled(*image.shape[:2], size)
    if (h, w) == image.shape[:2]:
        return image
    channels = [
        np.asarray(Image.fromarray(image[..., c]).resize((w, h), Image.LANCZOS)) for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def output_name(content_path: str, style_paths: Sequence[str], ext: str) -> str:
    """`{content}_stylized_{style}.{ext}`; a mix of styles joins their names with '+'."""
    stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
    return f"{stem(content_path)}_stylized_{'+'.join(stem(s) for s in style_paths)}.{ext}"


def save_output(path: str, image: np.ndarray) -> None:
    """`.npy`: float32 (h, w, 3) before clipping; images: clipped, x255 truncated to uint8."""
    if path.lower().endswith(".npy"):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        np.save(path, np.asarray(image, np.float32))
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


def stylize_files(
    stylizer: Stylizer,
    contents: Sequence[str],
    styles: Sequence[str],
    output: str | None = None,
    output_dir: str | None = None,
    ext: str = "png",
    mix: bool = False,
    weights: Sequence[float] | None = None,
    mask_path: str | None = None,
    size: int | None = None,
    style_size: int | None = None,
    seed: int = 0,
    alpha: float = 1.0,
    preserve_color: bool = False,
    batch_size: int = 4,
    batch_pixels: int = 1 << 20,
    cache_bytes: int = 2 << 30,
    log: Callable[[str], None] | None = None,
) -> FileReport:
    """Stylizes every content x style pair (or every content with one mix of all styles).

    Each image is read and encoded once (styles are cached, contents are processed in batches
    of equal shape), and a bad image is reported in `errors` while the rest still run.

    Args:
      stylizer: the model.
      contents: content image paths.
      styles: style image paths.
      output: single output path (only when there is exactly one output).
      output_dir: folder for `{content}_stylized_{style}.{ext}` files.
      ext: output extension in `output_dir` (png, jpg, webp, bmp, npy).
      mix: one output per content mixing all styles (with `weights` or `mask_path`).
      weights: style weights of the mix.
      mask_path: image whose white part takes `styles[0]` and black part `styles[1]`.
      size: shorter side of the contents (and of styles unless `style_size`); None keeps it.
      style_size: shorter side of the styles; None keeps their native size (or `size`).
      seed: style-position subset seed; alpha, preserve_color: see `Stylizer.stylize_mix`.
      batch_size: most contents per batch; batch_pixels: most pixels per batch.
      cache_bytes: memory budget of the encoded-style cache.
      log: progress callback (one line per output, and `error: ...` lines as they happen).

    Returns:
      A `FileReport` with the written paths and one-line error messages.
    """
    log = log or (lambda line: None)
    report = FileReport(errors=_LoggedList(lambda line: log(f"error: {line}")))
    style_size = size if style_size is None else style_size
    jobs = [tuple(styles)] if mix else [(s,) for s in styles]
    total = len(contents) * len(jobs)
    if output is not None and total != 1:
        report.errors.append(
            f"--output names one file but there are {total} outputs; use --output-dir"
        )
        return report
    mask = None
    if mask_path is not None:
        try:
            mask = image_io.load_image(mask_path) @ np.asarray(LUMA, np.float32)
        except image_io.ImageError as error:
            report.errors.append(f"mask {error}")
            return report
    names = {}
    for content in contents:
        for job in jobs:
            name = output or os.path.join(output_dir or ".", output_name(content, job, ext))
            if name in names:
                report.errors.append(
                    f"{content}: output {name} would overwrite the one of {names[name]}; "
                    "rename one of them"
                )
            names.setdefault(name, content)

    bad: dict[str, str] = {}

    def encode_style(path: str):
        try:
            return stylizer.encode(load_resized(path, style_size))
        except (image_io.ImageError, StylizeError) as error:
            bad[path] = f"style {error}"
            return None

    cache = _FeatureCache(encode_style, cache_bytes)
    groups: dict[tuple[int, int], list[str]] = {}
    for content in contents:
        try:
            groups.setdefault(target_shape(content, size), []).append(content)
        except image_io.ImageError as error:
            report.errors.append(f"content {error}")
    done = len(contents) * len(jobs) - sum(map(len, groups.values())) * len(jobs)
    for (h, w), paths in groups.items():
        per_batch = max(1, min(batch_size, batch_pixels // (h * w)))
        for start in range(0, len(paths), per_batch):
            batch_paths, images = [], []
            for path in paths[start : start + per_batch]:
                try:
                    image = load_resized(path, size)
                    _check_size(image.shape[:2], f"content {path}")
                except (image_io.ImageError, StylizeError) as error:
                    report.errors.append(f"content {error}")
                    done += len(jobs)
                    continue
                batch_paths.append(path)
                images.append(image)
            if not images:
                continue
            batch = np.stack(images)
            feats = stylizer.encode(batch)
            for job in jobs:
                tic = time.perf_counter()
                styles_feats = [cache.get(s) for s in job]
                failed = [s for s in job if s in bad]
                done += len(batch_paths)
                if failed:
                    message = bad[failed[0]]
                    if message not in report.errors:
                        report.errors.append(message)
                    continue
                try:
                    out = stylizer.render(
                        batch,
                        feats,
                        styles_feats,
                        weights=weights,
                        mask=mask,
                        seed=seed,
                        alpha=alpha,
                        preserve_color=preserve_color,
                    )
                except StylizeError as error:
                    report.errors.append(str(error))
                    continue
                except jax.errors.JaxRuntimeError as error:
                    if "RESOURCE_EXHAUSTED" not in str(error):
                        raise
                    report.errors.append(
                        f"{batch_paths[0]}: out of memory at {w}x{h} with "
                        f"{'+'.join(job)}; try --size, --style-size or a smaller --query-chunk"
                    )
                    continue
                seconds = (time.perf_counter() - tic) / len(batch_paths)
                for i, (path, image) in enumerate(zip(batch_paths, out, strict=True)):
                    name = output or os.path.join(output_dir or ".", output_name(path, job, ext))
                    try:
                        save_output(name, image)
                    except (image_io.ImageError, OSError) as error:
                        report.errors.append(f"{name}: cannot write output ({error})")
                        continue
                    report.written.append(name)
                    count = done - len(batch_paths) + i + 1
                    log(f"[{count}/{total}] {name} ({w}x{h}, {seconds:.2f} s/image)")
    return report
