"""The AdaAttN decoder (docs/model.md, "Decoder")."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_style import ops
from flax_style.models.vgg import VGG_WIDTHS, reflect_pad

# Which of the three kernel rows (or columns) land on each low-resolution tap, per output phase
# of a 3x3 conv on a 2x nearest-upsampled map: even outputs read low-resolution rows
# (i - 1, i, i), odd ones (i, i, i + 1). (phase, tap, kernel row).
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


class UpsampledConv(nn.Module):
    """`nn.Conv(features, (3, 3))` on `reflect_pad(upsample2(x))`, with the same parameters,
    computed at the resolution of `x`: 16 instead of 36 multiply-adds per low-resolution pixel.

    Each of the four output phases (row, column parity) is a 2x2 conv of `x` whose taps are sums
    of kernel entries (`_PHASE_TAPS`). The reflection pad of the upsampled map equals an edge pad
    of `x`, so one VALID 2x2 conv of `edge_pad(x)` with the four phase kernels side by side
    computes them all; phase (a, b) is its window offset by (a, b). Equal to the direct form up
    to float rounding of the summed taps.
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        taps = jnp.asarray(_PHASE_TAPS)
        # (2, 2, c_in, (a, b, c_out)): phase kernels side by side along the output channels.
        phases = jnp.einsum("atk,bsl,klio->tsiabo", taps, taps, kernel)
        phases = phases.reshape(2, 2, x.shape[-1], 4 * self.features).astype(self.dtype)
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        y = jax.lax.conv_general_dilated(
            padded, phases, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        b, h, w = x.shape[:3]
        y = y.reshape(b, h + 1, w + 1, 2, 2, self.features)
        rows = [
            jnp.stack([y[:, a : a + h, c : c + w, a, c] for c in (0, 1)], axis=3) for a in (0, 1)
        ]  # each (b, h, w, 2 columns, features)
        out = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, self.features)
        return out + bias.astype(self.dtype)


class Decoder(nn.Module):
    """Mirror of the encoder from relu4_1 (or relu3_1) back to RGB.

    Conv names follow the official `decoder_layer_{1,2}.{index}` keys. Channel counts derive from
    the encoder widths (w1, w2, w3, w4): 512->256 is w4->w3, 128 is w2 and 64 is w1. From
    relu3_1 (the release's video model) there is no `layer_1`: `layer_2` alone is that
    decoder, index for index (its keys are `decoder.{index}`).

    Attributes:
      widths: encoder widths relu1_1..relu5_1.
      skip: whether `layer_2` also takes a relu3_1-resolution skip feature (official AdaAttN).
      dtype: conv compute dtype.
      input_layer: 4 (input at relu4_1 resolution, the image models) or 3 (relu3_1).
    """

    widths: Sequence[int] = VGG_WIDTHS
    skip: bool = False
    dtype: jnp.dtype = jnp.float32
    input_layer: int = 4

    def _conv(
        self, x: jax.Array, features: int, name: str, relu: bool = True, upsampled: bool = False
    ) -> jax.Array:
        """Reflection-padded 3x3 conv (of `upsample2(x)` when `upsampled`), then ReLU."""
        if upsampled:
            x = UpsampledConv(features, dtype=self.dtype, name=name)(x)
        else:
            conv = nn.Conv(features, (3, 3), padding="VALID", dtype=self.dtype, name=name)
            x = conv(reflect_pad(x))
        return nn.relu(x) if relu else x

    @nn.compact
    def __call__(
        self, x: jax.Array, skip_feature: jax.Array | None = None, output_size=None
    ) -> jax.Array:
        """Decodes relu{input_layer}_1-resolution features to an RGB image (no output activation).

        Args:
          x: (b, h4, w4, w4_channels) features (relu3_1 size and width if `input_layer` is 3).
          skip_feature: relu3_1-resolution features, required iff `skip`.
          output_size: (h, w) of the image to return; by default 8x the relu4_1 size (4x the
            relu3_1 size).
        """
        w1, w2, w3 = self.widths[:3]
        upsampled = False  # whether x is due a 2x upsampling before its next conv
        if self.input_layer == 4:
            x, upsampled = self._conv(x, w3, "layer_1_1"), True
        elif self.input_layer != 3:
            raise ValueError(f"input_layer {self.input_layer}: choose 3 or 4")
        if self.skip:
            if skip_feature is None:
                raise ValueError("this decoder has a skip connection: pass skip_feature")
            x, upsampled = (ops.upsample2(x) if upsampled else x), False
            # The resize rule (docs/model.md): the skip is resized onto the upsampled stream,
            # which stays 8x relu4_1.
            x = jnp.concatenate([x, ops.match_size(skip_feature, x).astype(x.dtype)], axis=-1)
        x = self._conv(x, w3, "layer_2_1", upsampled=upsampled)
        x = self._conv(x, w3, "layer_2_4")
        x = self._conv(x, w3, "layer_2_7")
        x = self._conv(x, w2, "layer_2_10")
        x = self._conv(x, w2, "layer_2_14", upsampled=True)
        x = self._conv(x, w1, "layer_2_17")
        x = self._conv(x, w1, "layer_2_21", upsampled=True)
        x = self._conv(x, 3, "layer_2_24", relu=False)
        x = x.astype(ops.stat_dtype(x.dtype))  # the image leaves in float32 even under bf16
        if output_size is not None:
            x = ops.resize_nearest(x, output_size)
        return x
