"""The stylization library: a model with its weights turns arrays into arrays.

`load_stylizer(checkpoint_dir)` gives a `Stylizer`. Each of its entry points runs one compiled
program (compiled once per input shape and option set):
  `stylize` / `stylize_mix`  one program from pixels to pixels: encode content and styles, attend,
                             blend the decoder inputs, decode at the content's size. What a
                             single pair (infer.py's `--output`, evaluation, the benchmarks) runs.
  `encode` + `render`        the same computation in two programs, so that a folder run encodes
                             each image once and reuses the features (`flax_style.stylize_files`).

Controls (none exists in the official release), all as blends of decoder inputs `T(c, s)`:
  alpha          `alpha * T(c, s) + (1 - alpha) * T(c, c)`.
  weights        `sum_i w_i T(c, s_i)` with the weights normalised to sum 1.
  mask           `m * T(c, s_1) + (1 - m) * T(c, s_2)`, `m` area-resized to each decoder-input
                 resolution (soft edges; the decoder smooths the seam).
  preserve_color output luminance (BT.601 Y) with the content's chroma:
                 `content + (Y(out) - Y(content))` per channel, so Cb/Cr equal the content's.
  seed           the style-position subset of blocks whose `max_sample` the style exceeds.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flax_style import checkpoint, errors, executable_cache, image_io, models

# Content positions per attention chunk. At relu4_1 with a 65,536-position style subset a
# chunk's logits take 4096 * 65536 * 4 B = 1 GiB; the official code (no chunks) holds the whole
# (n_content x n_style) matrix, e.g. 16 GiB at 2048x2048.
DEFAULT_QUERY_CHUNK = 4096
# relu5_1 is 1/16 of the input (ceil): reflection padding and unbiased variance need >= 2.
MIN_SIDE = 17

Features = list  # [relu1_1 .. relu5_1], each (b, h, w, c)


class StylizeError(errors.UserError):
    """Unusable stylization input (size, mask, weights, alpha); the message is one line."""


@dataclasses.dataclass(frozen=True)
class Controls:
    """How a stylization blends its decoder inputs (see the module docstring); checked here,
    once, when the options enter the library.

    Attributes:
      alpha: content-style trade-off in [0, 1]; 1 is the plain model.
      weights: one non-negative weight per style (normalised to sum 1); None: equal weights.
      mask: (h, w) in [0, 1], or an RGB image (its luminance), any size (stretched onto the
        content): the first style where it is 1, the second where it is 0. Excludes `weights`.
      preserve_color: keep the content's chroma (transfer luminance only).
      seed: seed of the style-position subset (used only when a style exceeds `max_sample`);
        32-bit.
    """

    alpha: float = 1.0
    weights: tuple[float, ...] | None = None
    mask: np.ndarray | None = None
    preserve_color: bool = False
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise StylizeError(f"alpha {self.alpha}: must lie in [0, 1]")
        if self.weights is not None:
            weights = np.asarray(self.weights, np.float64)
            if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
                raise StylizeError(
                    f"style weights {weights.tolist()}: need >= 0 with a positive sum"
                )
            object.__setattr__(self, "weights", tuple(weights.tolist()))
        if self.mask is not None:
            if self.weights is not None:
                raise StylizeError("give either a mask or style weights, not both")
            mask = np.asarray(self.mask, np.float32)
            if mask.ndim == 3:  # an RGB mask image: its luminance
                mask = image_io.luminance(mask)
            if mask.ndim != 2:
                raise StylizeError(f"mask of shape {mask.shape}: expected (h, w)")
            object.__setattr__(self, "mask", mask)
        if not -(2**31) <= self.seed < 2**31:
            raise StylizeError(f"seed {self.seed}: must fit in 32 bits")

    def style_weights(self, num_styles: int) -> np.ndarray:
        """float32 weights summing to 1 for `num_styles` styles (checks the count)."""
        if num_styles < 1:
            raise StylizeError("no style given")
        if self.mask is not None and num_styles != 2:
            raise StylizeError(f"a mask needs exactly two styles, got {num_styles}")
        if self.weights is None:
            return np.full((num_styles,), 1.0 / num_styles, np.float32)
        if len(self.weights) != num_styles:
            raise StylizeError(f"{len(self.weights)} style weight(s) for {num_styles} style(s)")
        weights = np.asarray(self.weights, np.float64)
        return (weights / weights.sum()).astype(np.float32)


def load_stylizer(checkpoint_dir: str, query_chunk: int | None = DEFAULT_QUERY_CHUNK) -> Stylizer:
    """A `Stylizer` for the model in a convert or train checkpoint directory.

    Args:
      checkpoint_dir: checkpoint root written by `python -m flax_style.convert` or `train.py`
        (a train work dir with `checkpoints/` works too).
      query_chunk: content positions per attention chunk (bounds memory); None for one pass.

    Raises:
      checkpoint.CheckpointError: no readable model checkpoint there (the message says how to
        make one).
      StylizeError: a query chunk below 1.
    """
    params, encoder_params, config = checkpoint.load_model(checkpoint_dir)
    return Stylizer(params, encoder_params, config, query_chunk)


def _area_resize(mask: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(b, h, w) mask -> (b, h', w', 1), antialiased (area-like) so edges stay soft."""
    b = mask.shape[0]
    resized = jax.image.resize(mask, (b, *size), method="linear", antialias=True)
    return jnp.clip(resized, 0.0, 1.0)[..., None]


class _Program:
    """The jitted functions of one model config, common to every `Stylizer` of that config, so
    that a new `Stylizer` (another checkpoint, another `infer.main` call) reuses compilations.
    `run` calls them through `executable_cache` (a later process loads what this one compiled).
    """

    def __init__(self, model_config: dict[str, Any], query_chunk: int | None):
        self.identity = f"{json.dumps(model_config, sort_keys=True)} query_chunk={query_chunk}"
        self.executables = {}  # this process's compiled programs, by entry
        self.encoder = models.build_encoder(model_config, models.encoder_depth(model_config))
        self.network = models.build_network(model_config, query_chunk=query_chunk)
        self.traces = collections.Counter()  # traces per entry point (recompilation checks)
        static = ("output_size", "with_content")
        self.encode = jax.jit(self._encode)
        self.render = jax.jit(self._render, static_argnames=static)
        self.fused = jax.jit(self._fused, static_argnames=static)

    def run(self, name: str, *args: Any, **static: Any) -> Any:
        """`getattr(self, name)(*args, **static)` as a stored compiled executable."""
        jitted = getattr(self, name)
        return executable_cache.call(
            jitted, f"{name} {self.identity}", self.executables, *args, **static
        )

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

    def _render(self, params, content, content_feats, styles_feats, blend, **static):
        """The folder program: from encoded features (see `_blend_and_decode`)."""
        self.traces["render"] += 1
        return self._blend_and_decode(params, content, content_feats, styles_feats, blend, **static)

    def _blend_and_decode(
        self, params, content, content_feats, styles_feats, blend, *, output_size, with_content
    ):
        """Decoder-input blend of `T(c, s_i)` (and `T(c, c)`), decoded at `output_size`.

        `blend` = {"weights", "mask", "alpha", "seed", "preserve_color"}, all traced.
        """
        key = jax.random.key(blend["seed"])  # in the program: no separate eager program
        mask = blend["mask"]
        mix = None
        for i, style_feats in enumerate(styles_feats):
            t = self._transform(params, content_feats, style_feats, key)
            if mask is not None:
                m = {name: _area_resize(mask, x.shape[1:3]) for name, x in t.items()}
                t = {name: (m[name] if i == 0 else 1.0 - m[name]) * x for name, x in t.items()}
            elif len(styles_feats) > 1:
                t = {name: blend["weights"][i] * x for name, x in t.items()}
            mix = t if mix is None else {name: mix[name] + x for name, x in t.items()}
        if with_content:
            own = self._transform(params, content_feats, content_feats, key)
            alpha = blend["alpha"]
            mix = {name: alpha * mix[name] + (1.0 - alpha) * own[name] for name in mix}
        out = self.network.apply({"params": params}, mix, output_size, method="decode")
        # Traced, not static: one compilation serves both settings (the cost is elementwise).
        recolored = content + (image_io.luminance(out) - image_io.luminance(content))[..., None]
        return jnp.where(blend["preserve_color"], recolored, out)

    def _fused(self, params, encoder_params, content, styles, blend, **static):
        """The whole stylization as one function: encode both, transform, blend, decode."""
        self.traces["fused"] += 1
        content_feats = self._encode(encoder_params, content)
        styles_feats = [self._encode(encoder_params, style) for style in styles]
        return self._blend_and_decode(params, content, content_feats, styles_feats, blend, **static)


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
        if query_chunk is not None and query_chunk < 1:
            raise StylizeError(f"query chunk {query_chunk}: must be positive (or None: one pass)")
        self.model_config = models.model_config(model_config)
        self.params = _unwrap(params)
        self.encoder_params = _unwrap(encoder_params)
        self.query_chunk = query_chunk
        self._program = _program(json.dumps(self.model_config, sort_keys=True), query_chunk)

    @property
    def traces(self) -> collections.Counter:
        """How often each jitted entry point was traced (common to the Stylizers of one config)."""
        return self._program.traces

    def stylize(self, content: np.ndarray, style: np.ndarray, **controls: Any) -> np.ndarray:
        """Stylizes one image (or a batch) with one style.

        Args:
          content: (h, w, 3) float RGB in [0, 1], or a batch (b, h, w, 3).
          style: (h', w', 3) float RGB in [0, 1]; any size.
          **controls: fields of `Controls` (alpha, preserve_color, seed).

        Returns:
          float32 like `content`, not clipped.
        """
        return self.stylize_mix(content, [style], **controls)

    def stylize_mix(
        self, content: np.ndarray, styles: Sequence[np.ndarray], **controls: Any
    ) -> np.ndarray:
        """Stylizes one image or a batch with a weighted mix of styles, or two styles by mask.

        Args:
          content: (h, w, 3) or a batch (b, h, w, 3), float RGB in [0, 1].
          styles: style images, each (h_i, w_i, 3) (one for the whole batch) or (b, h_i, w_i, 3).
          **controls: fields of `Controls` (alpha, weights, mask, preserve_color, seed).

        Returns:
          float32 (h, w, 3) or (b, h, w, 3) like `content`, not clipped.
        """
        single = np.ndim(content) == 3
        args, static = self._fused_args(content, styles, Controls(**controls))
        out = np.asarray(self._program.run("fused", *args, **static), np.float32)
        return out[0] if single else out

    def lower(
        self, content: np.ndarray, styles: Sequence[np.ndarray], **controls: Any
    ) -> jax.stages.Lowered:
        """The program `stylize_mix(content, styles, **controls)` runs, lowered (for its cost
        analysis: the benchmarks' FLOP counts)."""
        args, static = self._fused_args(content, styles, Controls(**controls))
        return self._program.fused.lower(*args, **static)

    def stylize_function(self, **controls: Any) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """`stylize(content, style, **controls)` as a traceable function, weights closed over.

        The program `stylize` runs, for (h, w, 3) and (h', w', 3) float32 arrays whose sizes
        may be symbolic (`flax_style.export` serializes it); sizes are not checked here.
        """
        controls = Controls(**controls)

        def stylize_one(content: jax.Array, style: jax.Array) -> jax.Array:
            blend, static = _blend(content[None], 1, controls)
            args = (self.params, self.encoder_params, content[None], [style[None]], blend)
            return self._program.fused(*args, **static)[0]

        return stylize_one

    def encode(self, images: np.ndarray) -> Features:
        """Encoder features [relu1_1 .. relu5_1] of (h, w, 3) or (b, h, w, 3) images."""
        return self._program.run("encode", self.encoder_params, _batched(images, "image"))

    def render(
        self,
        content: np.ndarray,
        content_feats: Features,
        styles_feats: Sequence[Features],
        controls: Controls,
    ) -> np.ndarray:
        """`stylize_mix` from features made by `encode` (encode each image once, reuse it).

        Args:
          content: the (b, h, w, 3) images of `content_feats` (for the output size and colour).
          content_feats: `encode(content)`.
          styles_feats: `encode(style)` per style; batch 1 (for every content) or b.
          controls: the blend.

        Returns:
          float32 (b, h, w, 3), not clipped.
        """
        content = np.asarray(content, np.float32)  # already checked by `encode`
        blend, static = _blend(content, len(styles_feats), controls)
        out = self._program.run(
            "render", self.params, content, content_feats, list(styles_feats), blend, **static
        )
        return np.asarray(out, np.float32)

    def _fused_args(self, content, styles, controls: Controls) -> tuple[tuple, dict]:
        content = _batched(content, "content")
        styles = [_batched(s, f"style {i}") for i, s in enumerate(styles)]
        blend, static = _blend(content, len(styles), controls)
        return (self.params, self.encoder_params, content, styles, blend), static


def _blend(content: np.ndarray, num_styles: int, controls: Controls) -> tuple[dict, dict]:
    """The traced blend inputs and the static arguments of one call of a compiled program."""
    mask = controls.mask
    if mask is not None:
        mask = np.broadcast_to(mask[None], (content.shape[0], *mask.shape))
    blend = {
        "weights": controls.style_weights(num_styles),
        "mask": mask,
        "alpha": np.float32(controls.alpha),
        "seed": np.int32(controls.seed),
        "preserve_color": np.bool_(controls.preserve_color),
    }
    static = {"output_size": tuple(content.shape[1:3]), "with_content": controls.alpha != 1.0}
    return blend, static


def _batched(images: Any, what: str) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise StylizeError(f"{what} of shape {images.shape}: expected (h, w, 3) or (b, h, w, 3)")
    check_size(images.shape, what)
    return images


def check_size(shape: Sequence[int], what: str) -> None:
    """Refuses an image of shape (..., h, w, 3) smaller than the network's `MIN_SIDE`.

    Raises:
      StylizeError: "`what` is WxH pixels; ...", so `what` names the image (e.g. its path).
    """
    h, w = shape[-3:-1]
    if min(h, w) < MIN_SIDE:
        raise StylizeError(
            f"{what} is {w}x{h} pixels; at least {MIN_SIDE} per side needed (try --size)"
        )
