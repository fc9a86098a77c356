"""The AdaAttN decoder (docs/model.md, "Decoder")."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_style import ops
from flax_style.models.vgg import VGG_WIDTHS, reflect_pad


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

    def _conv(self, x: jax.Array, features: int, name: str, relu: bool = True) -> jax.Array:
        x = nn.Conv(features, (3, 3), padding="VALID", dtype=self.dtype, name=name)(reflect_pad(x))
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
        if self.input_layer == 4:
            x = ops.upsample2(self._conv(x, w3, "layer_1_1"))
        elif self.input_layer != 3:
            raise ValueError(f"input_layer {self.input_layer}: choose 3 or 4")
        if self.skip:
            if skip_feature is None:
                raise ValueError("this decoder has a skip connection: pass skip_feature")
            # The resize rule (docs/model.md): the skip is resized onto the upsampled stream,
            # which stays 8x relu4_1.
            x = jnp.concatenate([x, ops.match_size(skip_feature, x).astype(x.dtype)], axis=-1)
        x = self._conv(x, w3, "layer_2_1")
        x = self._conv(x, w3, "layer_2_4")
        x = self._conv(x, w3, "layer_2_7")
        x = ops.upsample2(self._conv(x, w2, "layer_2_10"))
        x = self._conv(x, w2, "layer_2_14")
        x = ops.upsample2(self._conv(x, w1, "layer_2_17"))
        x = self._conv(x, w1, "layer_2_21")
        x = self._conv(x, 3, "layer_2_24", relu=False)
        x = x.astype(ops.stat_dtype(x.dtype))  # the image leaves in float32 even under bf16
        if output_size is not None:
            x = ops.resize_nearest(x, output_size)
        return x
