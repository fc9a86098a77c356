"""Image metrics of a stylization: content and style losses on VGG features, and SSIM.

Definitions (README "Evaluate" gives them in full):
  content_loss  sum over relu4_1, relu5_1 of MSE(mvn(F_cs), mvn(F_c))       lower = more content
  style_loss    sum over relu1_1..relu5_1 of MSE(mean) + MSE(std) vs style  lower = more style
  ssim          SSIM of the BT.601 luminance of stylized vs content          higher = more structure
Both losses are the training losses of `flax_style.losses` on other layers; the VGG features
come from a checkpoint's own encoder (`FeatureExtractor`), in float32.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from skimage.metrics import structural_similarity

from flax_style import errors, image_io, losses, models

CONTENT_LAYERS = (4, 5)  # relu4_1, relu5_1
STYLE_LAYERS = (1, 2, 3, 4, 5)  # relu1_1 .. relu5_1
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


class EvaluationError(errors.UserError):
    """Unusable evaluation inputs; the message names the file or flag and the fix."""


def ssim(stylized: np.ndarray, content: np.ndarray) -> float:
    """SSIM of the luminance of two (h, w, 3) images in [0, 1] (`SSIM_PARAMS`), in float64.

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
    luma = lambda image: image_io.luminance(np.asarray(image, np.float64))  # noqa: E731
    return float(structural_similarity(luma(stylized), luma(content), **SSIM_PARAMS))


_content_loss = jax.jit(losses.content_loss, static_argnames="layers")
_style_loss = jax.jit(losses.global_style_loss, static_argnames="layers")


def content_loss(
    stylized: Sequence[jax.Array],
    content: Sequence[jax.Array],
    layers: Sequence[int] = CONTENT_LAYERS,
) -> float:
    """`losses.content_loss` over `layers` (1-based relu{k}_1), as a float."""
    return float(_content_loss(list(stylized), list(content), layers=tuple(layers)))


def style_loss(
    stylized: Sequence[jax.Array],
    style: Sequence[jax.Array],
    layers: Sequence[int] = STYLE_LAYERS,
) -> float:
    """`losses.global_style_loss` over `layers`, as a float.

    Channel statistics are per image, so the stylized and the style image may differ in size.
    """
    return float(_style_loss(list(stylized), list(style), layers=tuple(layers)))


class FeatureExtractor:
    """The VGG encoder of one checkpoint, in float32, jitted: (h, w, 3) -> [relu1_1..relu5_1]."""

    def __init__(self, encoder_params: Any, model_config: Mapping[str, Any]):
        # float32 whatever the checkpoint's compute dtype, so checkpoints compare on equal terms.
        encoder = models.build_encoder({**model_config, "dtype": "float32"})
        self._params = {"params": encoder_params}
        self._apply = jax.jit(encoder.apply)

    def __call__(self, image: np.ndarray) -> list[jax.Array]:
        return self._apply(self._params, jnp.asarray(image, jnp.float32)[None])
