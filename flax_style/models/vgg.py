"""The frozen VGG-19 "normalised" encoder of AdaAttN (docs/model.md, "Encoder")."""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# (name, index in the official nn.Sequential) of each conv, in order; relu{k}_1 is the first
# conv of stage k. The official file also holds 45, 48, 51 (relu5_2..5_4), which we never use.
VGG_CONVS: tuple[tuple[str, int], ...] = (
    ("conv0", 0),
    ("conv1_1", 2),
    ("conv1_2", 5),
    ("conv2_1", 9),
    ("conv2_2", 12),
    ("conv3_1", 16),
    ("conv3_2", 19),
    ("conv3_3", 22),
    ("conv3_4", 25),
    ("conv4_1", 29),
    ("conv4_2", 32),
    ("conv4_3", 35),
    ("conv4_4", 38),
    ("conv5_1", 42),
)
VGG_WIDTHS = (64, 128, 256, 512, 512)

# Convs per stage before its relu{k}_1 output: stage 1 starts with the 1x1 colour conv, the
# others with the convs that finish the previous stage (then a pool).
_STAGES = (
    ("conv0", "conv1_1"),
    ("conv1_2", "pool", "conv2_1"),
    ("conv2_2", "pool", "conv3_1"),
    ("conv3_2", "conv3_3", "conv3_4", "pool", "conv4_1"),
    ("conv4_2", "conv4_3", "conv4_4", "pool", "conv5_1"),
)


def reflect_pad(x: jax.Array) -> jax.Array:
    """Reflection padding of 1 on H and W (every 3x3 conv of the official models uses it)."""
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")


def max_pool_ceil(x: jax.Array) -> jax.Array:
    """2x2 / stride 2 max-pool with `ceil_mode=True`: odd sizes keep a last, partial window.

    A symbolic size (`flax_style.export`) always gets its row or column of -inf: an even size
    never reaches it (VALID windows stop at h - 1), so this is still ceil mode, and the output
    size `(h - 1) // 2 + 1` stays simple enough for JAX's shape solver (`h % 2` does not).
    """
    pad = [size % 2 if isinstance(size, int) else 1 for size in x.shape[1:3]]
    x = jnp.pad(x, ((0, 0), (0, pad[0]), (0, pad[1]), (0, 0)), constant_values=-jnp.inf)
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def _stage_of(name: str) -> int:
    return int(name[4]) if name != "conv0" else 1


class VGGEncoder(nn.Module):
    """VGG-19 normalised encoder; input RGB in [0, 1], NHWC.

    Attributes:
      widths: channels of relu1_1..relu5_1 (`VGG_WIDTHS`; the test suite also uses tiny ones).
      dtype: conv compute dtype (float32, or bfloat16 for mixed precision).
      depth: outputs relu1_1..relu{depth}_1 and stops there (the video model needs 3).
    """

    widths: Sequence[int] = VGG_WIDTHS
    dtype: jnp.dtype = jnp.float32
    depth: int = 5

    @nn.compact
    def __call__(self, image: jax.Array) -> list[jax.Array]:
        """Returns [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1] (the first `depth` of them)."""
        x = image
        feats = []
        for stage in _STAGES[: self.depth]:
            for name in stage:
                if name == "pool":
                    x = max_pool_ceil(x)
                    continue
                features = 3 if name == "conv0" else self.widths[_stage_of(name) - 1]
                if name == "conv0":
                    x = nn.Conv(3, (1, 1), dtype=self.dtype, name=name)(x)
                else:
                    conv = nn.Conv(features, (3, 3), padding="VALID", dtype=self.dtype, name=name)
                    x = nn.relu(conv(reflect_pad(x)))
            feats.append(x)
        return feats
