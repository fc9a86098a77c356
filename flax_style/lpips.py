"""LPIPS v0.1, VGG variant (Zhang et al. 2018), from user-supplied weight files; nothing is
downloaded. The forward is the `lpips` package's (`net="vgg"`), written in JAX, NHWC."""

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_style.metrics import EvaluationError

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
