"""The AdaAttN block (docs/model.md, "The AdaAttN block") and the video model's cosine form."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax_style import ops


class AdaAttN(nn.Module):
    """Adaptive attention normalisation: per content position, the attention-weighted mean and
    std of the style values replace the content's own statistics.

    Attributes:
      in_planes: value channels C.
      key_planes: key channels K.
      max_sample: at most this many style positions attend; beyond it a random subset is drawn
        from the `"sample"` PRNG stream (pass `rngs={"sample": key}` to `apply`).
      query_chunk: content positions per attention chunk (memory-bounded inference), or None.
      dtype: conv and matmul compute dtype; statistics stay float32.
      similarity: "softmax" (`softmax(q.k)`, the image models) or "cosine" (the release's video
        model, `AttnAdaINCos`: `relu(cos(q, k) + 1)` normalised over style positions; linear
        in the number of positions, so `query_chunk` does not apply).
    """

    in_planes: int
    key_planes: int
    max_sample: int
    query_chunk: int | None = None
    dtype: jnp.dtype = jnp.float32
    similarity: str = "softmax"

    @nn.compact
    def __call__(
        self,
        content: jax.Array,
        style: jax.Array,
        content_key: jax.Array,
        style_key: jax.Array,
        output_size: tuple[int, int] | None = None,
    ) -> jax.Array:
        """The block's output, or `ops.resize_nearest(output, output_size)` with `output_size`.

        Every step after the content statistics is per content position, so with `output_size`
        only the kept positions attend: the proposed model keeps a quarter of relu3_1's.
        """
        b = content.shape[0]
        if output_size is not None:
            content_key = ops.resize_nearest(content_key, output_size)
        f = nn.Conv(self.key_planes, (1, 1), dtype=self.dtype, name="f")
        g = nn.Conv(self.key_planes, (1, 1), dtype=self.dtype, name="g")
        h = nn.Conv(self.in_planes, (1, 1), dtype=self.dtype, name="h")
        # Style positions as a (b, n_s, 1, c) column, so the 1x1 convs apply unchanged.
        style_key = style_key.reshape(b, -1, 1, style_key.shape[-1])
        style = style.reshape(b, -1, 1, style.shape[-1])
        # 1x1 convs commute with a gather over positions: subsample first, project fewer.
        n_style = style.shape[1]
        drawn = not isinstance(n_style, int) or n_style > self.max_sample  # symbolic: maybe
        keep = ops.sample_positions(
            self.make_rng("sample") if drawn else None, n_style, self.max_sample
        )
        if keep is not None:
            style_key, style = style_key[:, keep], style[:, keep]
        query = f(content_key).reshape(b, -1, self.key_planes)
        key = g(style_key).reshape(b, -1, self.key_planes)
        value = h(style).reshape(b, -1, self.in_planes)
        if self.similarity == "cosine":
            mean, std = ops.cosine_attention_mean_std(query, key, value, dtype=self.dtype)
        elif self.similarity == "softmax":
            mean, std = ops.attention_mean_std(
                query, key, value, query_chunk=self.query_chunk, dtype=self.dtype
            )
        else:
            raise ValueError(f"similarity {self.similarity!r}: choose softmax or cosine")
        return ops.adaptive_normalize(content, mean, std, output_size)
