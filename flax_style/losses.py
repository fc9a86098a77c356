"""The three AdaAttN training losses (docs/model.md, "Training losses"), for both variants.

All take encoder features as lists [relu1_1 .. relu5_1] (NHWC) and sum over relu2_1..relu5_1;
the evaluation metrics (`flax_style.metrics`) are the first two on other layers. The weights,
the key mode and the style-position budget come from the `loss` section of the training config.
"""

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from flax_style import ops

Features = Sequence[jax.Array]
LOSS_LAYERS = (2, 3, 4, 5)


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error over all elements, in at least float32."""
    dtype = ops.stat_dtype(jnp.result_type(a, b))
    return jnp.mean(jnp.square(a.astype(dtype) - b.astype(dtype)))


def content_loss(
    stylized: Features, content: Features, layers: Sequence[int] = LOSS_LAYERS
) -> jax.Array:
    """sum_k MSE(mvn(F_cs^k), mvn(F_c^k)) over `layers` (1-based relu{k}_1)."""
    return sum(mse(ops.mvn(stylized[k - 1]), ops.mvn(content[k - 1])) for k in layers)


def global_style_loss(
    stylized: Features, style: Features, layers: Sequence[int] = LOSS_LAYERS
) -> jax.Array:
    """sum_k MSE of channel means plus MSE of channel stds against the style, over `layers`.

    Statistics are per image (unbiased variance, `ops.calc_mean_std`), so the two may differ
    in size.
    """
    total = 0.0
    for k in layers:
        cs_mean, cs_std = ops.calc_mean_std(stylized[k - 1])
        s_mean, s_std = ops.calc_mean_std(style[k - 1])
        total = total + mse(cs_mean, s_mean) + mse(cs_std, s_std)
    return total


def local_style_loss(
    stylized: Features,
    content: Features,
    style: Features,
    rng: jax.Array,
    key_mode: str,
    max_sample: int,
) -> jax.Array:
    """sum_k MSE(F_cs^k, AdaAttN target) with unprojected keys (no learned f, g, h).

    Args:
      stylized, content, style: encoder features.
      rng: draws the subset of style positions where a layer has more than `max_sample`.
      key_mode: attention key mode: "shallow" (the official training), "single" or "pair".
      max_sample: style positions kept per layer.
    """
    total = 0.0
    for k, layer_rng in zip(LOSS_LAYERS, jax.random.split(rng, len(LOSS_LAYERS)), strict=True):
        c_key = ops.attention_key(content, k, key_mode)
        s_key = ops.attention_key(style, k, key_mode)
        b = s_key.shape[0]
        s_key = s_key.reshape(b, -1, s_key.shape[-1])
        value = style[k - 1].reshape(b, -1, style[k - 1].shape[-1])
        keep = ops.sample_positions(layer_rng, s_key.shape[1], max_sample)
        if keep is not None:
            s_key, value = s_key[:, keep], value[:, keep]
        query = c_key.reshape(b, -1, c_key.shape[-1])
        mean, std = ops.attention_mean_std(query, s_key, value)
        target = ops.adaptive_normalize(content[k - 1], mean, std)
        total = total + mse(stylized[k - 1], target)
    return total


def style_transfer_losses(
    stylized: Features,
    content: Features,
    style: Features,
    rng: jax.Array,
    weights: Mapping[str, float],
    key_mode: str,
    max_sample: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted total and the named terms.

    Args:
      stylized, content, style: encoder features of the output, the content and the style.
      rng: for the local loss's style-position subset.
      weights: {"content", "global_style", "local_style"} weights (official: 0, 10, 3).
      key_mode, max_sample: passed to `local_style_loss`.

    Returns:
      (total, {"content": ..., "global_style": ..., "local_style": ..., "total": ...}).
    """
    terms = {
        "content": content_loss(stylized, content),
        "global_style": global_style_loss(stylized, style),
        "local_style": local_style_loss(stylized, content, style, rng, key_mode, max_sample),
    }
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {**terms, "total": total}
