"""The two assembled style-transfer networks: official AdaAttN and the paper's model.

Both take encoder features (from `VGGEncoder`) and expose `transform` (features -> decoder
input, a dict of arrays) and `decode` (decoder input -> image), so callers can blend decoder
inputs (content-style trade-off, style mixes) before decoding; `__call__` chains the two.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_style import ops
from flax_style.models.adaattn import AdaAttN
from flax_style.models.decoder import Decoder
from flax_style.models.vgg import reflect_pad

Features = Sequence[jax.Array]  # [relu1_1 .. relu5_1]


def _keys(feats: Features, mode: str, layers: Sequence[int]) -> dict[int, jax.Array]:
    return {layer: ops.attention_key(feats, layer, mode) for layer in layers}


class AdaAttNNetwork(nn.Module):
    """Official AdaAttN (variant "adaattn", docs/model.md): shallow keys, relu3_1 skip into the
    decoder.

    Build it with `models.build_network`: every setting comes from the model config, where the
    defaults are written.

    Attributes:
      widths: encoder widths relu1_1..relu5_1.
      max_sample_3: style positions kept by the relu3_1 block.
      max_sample_45: style positions kept by the relu4_1 and relu5_1 blocks.
      dtype: compute dtype of convs and matmuls.
      query_chunk: content positions per attention chunk, or None for one pass.
    """

    widths: Sequence[int]
    max_sample_3: int
    max_sample_45: int
    dtype: jnp.dtype
    query_chunk: int | None = None

    def setup(self):
        w = self.widths

        def block(layer, max_sample, name):
            return AdaAttN(
                w[layer - 1],
                ops.key_channels(w, layer, "shallow"),
                max_sample,
                self.query_chunk,
                self.dtype,
                name=name,
            )

        self.adaattn_3 = block(3, self.max_sample_3, "adaattn_3")
        self.attn_adain_4_1 = block(4, self.max_sample_45, "attn_adain_4_1")
        self.attn_adain_5_1 = block(5, self.max_sample_45, "attn_adain_5_1")
        self.merge_conv = nn.Conv(w[3], (3, 3), padding="VALID", dtype=self.dtype)
        self.decoder = Decoder(w, skip=True, dtype=self.dtype)

    def transform(self, content: Features, style: Features) -> dict[str, jax.Array]:
        """Decoder input {"features": relu4_1-resolution map, "skip": relu3_1 block output}."""
        c_keys, s_keys = _keys(content, "shallow", (3, 4, 5)), _keys(style, "shallow", (3, 4, 5))
        skip = self.adaattn_3(content[2], style[2], c_keys[3], s_keys[3])
        out4 = self.attn_adain_4_1(content[3], style[3], c_keys[4], s_keys[4])
        out5 = self.attn_adain_5_1(content[4], style[4], c_keys[5], s_keys[5])
        fused = out4 + ops.match_size(ops.upsample2(out5), out4)
        return {"features": self.merge_conv(reflect_pad(fused)), "skip": skip}

    def decode(self, decoder_input: dict[str, jax.Array], output_size=None) -> jax.Array:
        """RGB image (not clipped) at `output_size`, by default 8x the relu4_1 size."""
        return self.decoder(decoder_input["features"], decoder_input["skip"], output_size)

    def __call__(self, content: Features, style: Features, output_size=None) -> jax.Array:
        return self.decode(self.transform(content, style), output_size)


class ProposedNetwork(nn.Module):
    """The paper's model (variant "proposed", docs/model.md): single/pair-key blocks at relu3_1,
    single keys at relu4_1/relu5_1, fixed-weight fusion at relu4_1 resolution, decoder without
    skip.

    Attributes:
      widths: encoder widths relu1_1..relu5_1 (2 * relu3_1 width must equal relu4_1 width).
      fusion_weights: (w3, w4, w5) of the relu3_1 / relu4_1 / relu5_1 branches.
      max_sample_3, max_sample_45, dtype, query_chunk: as in `AdaAttNNetwork`.
    """

    widths: Sequence[int]
    fusion_weights: Sequence[float]
    max_sample_3: int
    max_sample_45: int
    dtype: jnp.dtype
    query_chunk: int | None = None

    def setup(self):
        w = self.widths
        if 2 * w[2] != w[3] or w[3] != w[4]:
            raise ValueError(f"widths {tuple(w)}: need 2*relu3_1 == relu4_1 == relu5_1")

        def block(layer, mode, max_sample, name):
            return AdaAttN(
                w[layer - 1],
                ops.key_channels(w, layer, mode),
                max_sample,
                self.query_chunk,
                self.dtype,
                name=name,
            )

        self.attn_adain_3_1 = block(3, "single", self.max_sample_3, "attn_adain_3_1")
        self.attn_adain_2_3_1 = block(3, "pair", self.max_sample_3, "attn_adain_2_3_1")
        self.attn_adain_4_1 = block(4, "single", self.max_sample_45, "attn_adain_4_1")
        self.attn_adain_5_1 = block(5, "single", self.max_sample_45, "attn_adain_5_1")
        self.merge_conv = nn.Conv(w[3], (3, 3), padding="VALID", dtype=self.dtype)
        self.decoder = Decoder(w, skip=False, dtype=self.dtype)

    def transform(self, content: Features, style: Features) -> dict[str, jax.Array]:
        """Decoder input {"features": merged relu4_1-resolution map}."""
        c_single, s_single = _keys(content, "single", (3, 4, 5)), _keys(style, "single", (3, 4, 5))
        c_pair, s_pair = ops.attention_key(content, 3, "pair"), ops.attention_key(style, 3, "pair")
        out4 = self.attn_adain_4_1(content[3], style[3], c_single[4], s_single[4])
        out5 = self.attn_adain_5_1(content[4], style[4], c_single[5], s_single[5])
        # D(F_cs^3) keeps the relu3_1 positions that land on the relu4_1 grid (a quarter of
        # them): the blocks compute only those (the same values, 4x less attention).
        size4 = out4.shape[1:3]
        out3 = jnp.concatenate(
            [
                self.attn_adain_3_1(content[2], style[2], c_single[3], s_single[3], size4),
                self.attn_adain_2_3_1(content[2], style[2], c_pair, s_pair, size4),
            ],
            axis=-1,
        )
        w3, w4, w5 = self.fusion_weights
        fused = w3 * out3 + w4 * out4 + w5 * ops.match_size(out5, out4)
        return {"features": self.merge_conv(reflect_pad(fused))}

    def decode(self, decoder_input: dict[str, jax.Array], output_size=None) -> jax.Array:
        """RGB image (not clipped) at `output_size`, by default 8x the relu4_1 size."""
        return self.decoder(decoder_input["features"], None, output_size)

    def __call__(self, content: Features, style: Features, output_size=None) -> jax.Array:
        return self.decode(self.transform(content, style), output_size)
