"""Numeric primitives of the models and the losses (docs/model.md: statistics, keys, block).

Everything here is NHWC and pure. Statistics are computed in at least float32 whatever the input
dtype, so mixed precision never touches a mean, a variance or a softmax (and float64 inputs stay
float64, for exact-arithmetic parity checks).
"""

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-5


def stat_dtype(dtype) -> jnp.dtype:
    """The dtype statistics are computed in: float32, or float64 for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


def finite_leaves(tree: Any) -> jax.Array:
    """(number of arrays,) bool: whether each array of `tree` is free of NaN and Inf."""
    return jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)])


def calc_mean_std(x: jax.Array, eps: float = EPS) -> tuple[jax.Array, jax.Array]:
    """Per-sample, per-channel mean and std over H*W (unbiased variance, as the official code).

    Args:
      x: (b, h, w, c) features.
      eps: added to the variance before the square root.

    Returns:
      mean and std, each (b, 1, 1, c) in `stat_dtype(x.dtype)`.
    """
    x = x.astype(stat_dtype(x.dtype))
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.var(x, axis=(1, 2), keepdims=True, ddof=1)
    return mean, jnp.sqrt(var + eps)


def mvn(x: jax.Array, eps: float = EPS) -> jax.Array:
    """Mean-variance normalisation per sample and channel (in `stat_dtype`)."""
    mean, std = calc_mean_std(x, eps)
    return (x.astype(mean.dtype) - mean) / std


def nearest_indices(in_size: int, out_size: int) -> np.ndarray | jax.Array:
    """Source indices of PyTorch's `F.interpolate(mode="nearest")` along one axis.

    PyTorch computes `min(floor(dst * float32(in / out)), in - 1)` in float32; reproducing the
    float32 rounding keeps non-integer ratios index-exact. Symbolic sizes (`jax.export`) get the
    same float32 arithmetic in the graph, so an exported model indexes exactly like this one.
    """
    if not (isinstance(in_size, int) and isinstance(out_size, int)):
        scale = jnp.asarray(in_size, jnp.float32) / jnp.asarray(out_size, jnp.float32)
        src = jnp.floor(jnp.arange(out_size, dtype=jnp.float32) * scale).astype(jnp.int32)
        return jnp.minimum(src, jnp.asarray(in_size, jnp.int32) - 1)
    if in_size == out_size:
        return np.arange(out_size)
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, in_size - 1)


def resize_nearest(x: jax.Array, size: Sequence[int]) -> jax.Array:
    """Nearest resize of (b, h, w, c) to `size` = (h', w') with PyTorch's index rule."""
    in_h, in_w = x.shape[1:3]
    out_h, out_w = size
    if (in_h, in_w) == (out_h, out_w):
        return x
    x = jnp.take(x, nearest_indices(in_h, out_h), axis=1)
    return jnp.take(x, nearest_indices(in_w, out_w), axis=2)


def match_size(x: jax.Array, reference: jax.Array) -> jax.Array:
    """Resizes `x` to the spatial size of `reference` (the resize rule; a no-op on multiples of
    16)."""
    return resize_nearest(x, reference.shape[1:3])


def upsample2(x: jax.Array) -> jax.Array:
    """Nearest x2 upsampling (each pixel repeated)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def attention_key(feats: Sequence[jax.Array], layer: int, mode: str) -> jax.Array:
    """Attention key for relu{layer}_1 from the encoder features [relu1_1 .. relu5_1].

    Args:
      feats: the five encoder feature maps, shallowest first.
      layer: 1-based layer number (3 for relu3_1).
      mode: "shallow" (all shallower layers, official AdaAttN), "single" or "pair".

    Returns:
      (b, h_layer, w_layer, key_channels) key in `stat_dtype`.
    """
    target = feats[layer - 1]
    if mode == "single":
        first = layer
    elif mode == "pair":
        first = layer - 1
    elif mode == "shallow":
        first = 1
    else:
        raise ValueError(f"unknown key mode {mode!r}; expected shallow, single or pair")
    parts = [mvn(match_size(feats[j - 1], target)) for j in range(max(first, 1), layer + 1)]
    return jnp.concatenate(parts, axis=-1)


def key_channels(widths: Sequence[int], layer: int, mode: str) -> int:
    """Channel count of `attention_key` for encoder `widths` (relu1_1..relu5_1 channels)."""
    first = {"single": layer, "pair": layer - 1, "shallow": 1}[mode]
    return sum(widths[max(first, 1) - 1 : layer])


def sample_positions(rng: jax.Array, num_positions: int, max_sample: int) -> jax.Array | None:
    """Indices of a random subset of `max_sample` style positions, or None to keep all.

    A symbolic `num_positions` (`jax.export`) always gets `min(num_positions, max_sample)`
    indices: the same subset when it is larger, else every position in order.
    """
    if isinstance(num_positions, int):
        if num_positions <= max_sample:
            return None
        return jax.random.permutation(rng, num_positions)[:max_sample]
    drawn = jnp.asarray(num_positions) > max_sample
    order = jnp.where(drawn, _permutation(rng, num_positions), jnp.arange(num_positions))
    return order[: jax.core.min_dim(num_positions, max_sample)]


# Largest sizes `jax.random.permutation` shuffles in 1 and 2 rounds: it sorts by fresh random
# bits ceil(3 ln(n) / ln(2^32 - 1)) times (a Python int of the size, 3 rounds above these).
PERMUTATION_ROUNDS_UPTO = (1625, 2642245)


def _permutation(rng: jax.Array, size) -> jax.Array:
    """`jax.random.permutation(rng, size)` for a symbolic size: every round count is computed
    and the one `size` needs is picked (the sorts are cheap next to the attention)."""
    x = jnp.arange(size)
    rounds = []
    for _ in range(len(PERMUTATION_ROUNDS_UPTO) + 1):
        rng, subkey = jax.random.split(rng)
        _, x = jax.lax.sort_key_val(jax.random.bits(subkey, (size,), jnp.uint32), x)
        rounds.append(x)
    out, size = rounds[-1], jnp.asarray(size)
    for upto, shuffled in zip(PERMUTATION_ROUNDS_UPTO[::-1], rounds[-2::-1], strict=True):
        out = jnp.where(size <= upto, shuffled, out)
    return out


def attention_mean_std(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    query_chunk: int | None = None,
    dtype: jnp.dtype | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Attention-weighted mean and std of `value` (the block's steps 3-4 in docs/model.md).

    `A = softmax(query @ key^T)` (no 1/sqrt(K) scaling); `mean = A @ V`,
    `std = sqrt(relu(A @ V^2 - mean^2))`. Both moments come out of one matmul with `[V, V^2]`.
    With `query_chunk`, queries are processed in chunks so memory grows linearly with the number
    of queries for a fixed number of keys; the result is the same up to rounding.

    Args:
      query: (b, n_q, K).
      key: (b, n_k, K).
      value: (b, n_k, C).
      query_chunk: queries per chunk, or None for a single pass.
      dtype: matmul input dtype (bfloat16 for mixed precision), by default the query's;
        accumulation, softmax and the moments stay in `stat_dtype(dtype)`.

    Returns:
      mean and std, each (b, n_q, C) in `stat_dtype(dtype)`.
    """
    dtype = query.dtype if dtype is None else dtype
    accumulate = stat_dtype(dtype)
    value = value.astype(accumulate)
    moments_value = jnp.concatenate([value, value * value], axis=-1).astype(dtype)
    key = key.astype(dtype)

    def attend(q: jax.Array) -> jax.Array:
        logits = jnp.einsum("bqk,bnk->bqn", q.astype(dtype), key, preferred_element_type=accumulate)
        # Softmax with its division moved after the matmul: (e @ [V, V^2]) / sum(e) divides an
        # (n_q, 2C) result instead of the (n_q, n_k) weights.
        shifted = jnp.exp(logits - jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True)))
        moments = jnp.einsum(
            "bqn,bnc->bqc", shifted.astype(dtype), moments_value, preferred_element_type=accumulate
        )
        return moments / shifted.sum(axis=-1, keepdims=True)

    b, n_q, k = query.shape
    if query_chunk is None or (isinstance(n_q, int) and n_q <= query_chunk):
        moments = attend(query)
    elif not isinstance(n_q, int):  # symbolic (`jax.export`)
        out = jnp.zeros((b, n_q, moments_value.shape[-1]), accumulate)
        moments = _map_row_chunks(attend, query, out, jax.core.min_dim(n_q, query_chunk))
    else:
        num_chunks = -(-n_q // query_chunk)
        padded = jnp.pad(query, ((0, 0), (0, num_chunks * query_chunk - n_q), (0, 0)))
        chunks = padded.reshape(b, num_chunks, query_chunk, k).swapaxes(0, 1)
        moments = jax.lax.map(attend, chunks).swapaxes(0, 1)
        moments = moments.reshape(b, num_chunks * query_chunk, -1)[:, :n_q]
    channels = value.shape[-1]
    mean, second = moments[..., :channels], moments[..., channels:]
    return mean, jnp.sqrt(jax.nn.relu(second - mean * mean))


def cosine_attention_mean_std(
    query: jax.Array, key: jax.Array, value: jax.Array, dtype: jnp.dtype | None = None
) -> tuple[jax.Array, jax.Array]:
    """Weighted mean and std of `value` under the video model's cosine attention.

    The release's `AttnAdaINCos`: `cos = q.k / ((|q| + eps) (|k| + eps))`,
    `S = relu(cos + 1)`, `A = S / (sum_keys S + eps)`, then `mean = A V` and
    `std = sqrt(relu(A V^2 - mean^2))` as in `attention_mean_std` (eps = 1e-5).

    Computed in linear time, without the (n_q, n_k) matrix: by Cauchy-Schwarz `|cos| < 1`, so
    the relu never clips and `S = 1 + q' . k'` with `q' = q / (|q| + eps)` (likewise `k'`).
    Then `sum_n S_n [V, V^2]_n = sum_n [V, V^2]_n + q' . (sum_n k'_n [V, V^2]_n^T)`: one
    (K, 2C) matrix per style, and memory grows with n_q + n_k, not n_q * n_k. (In float32 the
    direct form can round a cosine of -1 to slightly below it; the relu then changes one weight
    by ~1e-7 of the total, far below the parity tolerance.)

    Args:
      query: (b, n_q, K).
      key: (b, n_k, K).
      value: (b, n_k, C).
      dtype: matmul input dtype, by default the query's; norms, sums and moments stay in
        `stat_dtype(dtype)`.

    Returns:
      mean and std, each (b, n_q, C) in `stat_dtype(dtype)`.
    """
    dtype = query.dtype if dtype is None else dtype
    accumulate = stat_dtype(dtype)

    def unit(x: jax.Array) -> jax.Array:
        x = x.astype(accumulate)
        return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + EPS)

    query, key, value = unit(query), unit(key), value.astype(accumulate)
    moments_value = jnp.concatenate([value, value * value], axis=-1)
    key_moments = jnp.einsum(
        "bnk,bnc->bkc", key.astype(dtype), moments_value.astype(dtype),
        preferred_element_type=accumulate,
    )  # fmt: skip
    numerator = jnp.sum(moments_value, axis=1)[:, None] + jnp.einsum(
        "bqk,bkc->bqc", query.astype(dtype), key_moments.astype(dtype),
        preferred_element_type=accumulate,
    )  # fmt: skip
    weight_sum = key.shape[1] + jnp.einsum("bqk,bk->bq", query, jnp.sum(key, axis=1))
    moments = numerator / (weight_sum + EPS)[..., None]
    channels = value.shape[-1]
    mean, second = moments[..., :channels], moments[..., channels:]
    return mean, jnp.sqrt(jax.nn.relu(second - mean * mean))


def _map_row_chunks(fn, rows: jax.Array, out: jax.Array, chunk) -> jax.Array:
    """`out` with `fn` applied to (b, chunk, .) row blocks of `rows`, for a symbolic row count.

    Padding to a multiple of a symbolic chunk defeats the shape solver, so the last block is
    moved back to end at the last row instead: it repeats a few rows, which are independent.
    """
    n = rows.shape[1]

    def body(i, out):
        start = jnp.minimum(i * jnp.asarray(chunk), jnp.asarray(n) - jnp.asarray(chunk))
        block = fn(jax.lax.dynamic_slice_in_dim(rows, start, chunk, axis=1))
        return jax.lax.dynamic_update_slice_in_dim(out, block, start, axis=1)

    return jax.lax.fori_loop(0, jnp.asarray((n + chunk - 1) // chunk), body, out)


def adaptive_normalize(
    content: jax.Array, mean: jax.Array, std: jax.Array, output_size: Sequence[int] | None = None
) -> jax.Array:
    """`std * mvn(content) + mean`, with mean/std given per output position as (b, n, C).

    `output_size`: the content positions of `resize_nearest(content, output_size)` only (the
    statistics of `mvn` still cover every position); None: all of them.
    """
    normalized = mvn(content)
    if output_size is not None:
        normalized = resize_nearest(normalized, output_size)
    b, h, w, c = normalized.shape
    return std.reshape(b, h, w, c) * normalized + mean.reshape(b, h, w, c)
