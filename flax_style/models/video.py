"""The official release's video model (variant "adaattn-video", its `inference_frame.py`).

One cosine-attention AdaAttN block at relu3_1 and a decoder from relu3_1: no relu4_1/relu5_1
branch, so the encoder stops at relu3_1 (`ENCODER_DEPTH`). Against the image models its
attention weights are `relu(cos + 1)` normalised over the style positions instead of a softmax:
smoother weights, which change less when a frame changes a little (the release's reason for a
separate video model), and linear-time to compute (`ops.cosine_attention_mean_std`).
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_style import ops
from flax_style.models.adaattn import AdaAttN
from flax_style.models.decoder import Decoder

ENCODER_DEPTH = 3  # relu1_1, relu2_1, relu3_1

Features = Sequence[jax.Array]  # [relu1_1, relu2_1, relu3_1]


class AdaAttNVideoNetwork(nn.Module):
    """The release's video model: `transformer` (the cosine block) and `decoder`.

    The key is the "shallow" key of relu3_1 (w1 + w2 + w3 = 448 channels). The module names
    follow the release's two files: `latest_net_transformer.pth` is the block itself (keys
    `f.*`, `g.*`, `h.*`), `latest_net_decoder.pth` the decoder (`decoder.{index}.*`).

    Attributes:
      widths: encoder widths relu1_1..relu5_1 (only the first three are used).
      max_sample: style positions kept by the block (a seeded random subset beyond it).
      dtype: compute dtype of convs and matmuls.

    Build it with `models.build_network`: the values come from the model config.
    """

    widths: Sequence[int]
    max_sample: int
    dtype: jnp.dtype

    def setup(self):
        w = self.widths
        self.transformer = AdaAttN(
            w[2],
            ops.key_channels(w, 3, "shallow"),
            self.max_sample,
            dtype=self.dtype,
            similarity="cosine",
        )
        self.decoder = Decoder(w, skip=False, dtype=self.dtype, input_layer=3)

    def transform(self, content: Features, style: Features) -> dict[str, jax.Array]:
        """Decoder input {"features": the block's relu3_1-resolution output}."""
        content_key = ops.attention_key(content, 3, "shallow")
        style_key = ops.attention_key(style, 3, "shallow")
        return {"features": self.transformer(content[2], style[2], content_key, style_key)}

    def decode(self, decoder_input: dict[str, jax.Array], output_size=None) -> jax.Array:
        """RGB image (not clipped) at `output_size`, by default 4x the relu3_1 size."""
        return self.decoder(decoder_input["features"], None, output_size)

    def __call__(self, content: Features, style: Features, output_size=None) -> jax.Array:
        return self.decode(self.transform(content, style), output_size)
