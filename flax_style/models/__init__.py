"""Flax modules of flax-style and the one place that builds them from a model config.

A model config is a plain mapping (it is stored as JSON inside every checkpoint). Its defaults,
`DEFAULT_MODEL_CONFIG`, are the one place the model's default settings are written: the modules
receive every value, and `configs/default.py` starts its `model` section from them. Fields
(docs/model.md describes each):
  variant: "proposed" (the paper, default), "adaattn" (official AdaAttN) or "adaattn-video"
    (the official release's video model).
  widths: encoder widths relu1_1..relu5_1; `VGG_WIDTHS` is the real network.
  fusion_weights: (w3, w4, w5) of the proposed model's fusion.
  max_sample_3, max_sample_45: style positions kept by the relu3_1 / relu4_1-5_1 blocks.
  max_sample_video: style positions kept by the video model's block.
  dtype: "float32" or "bfloat16" (compute dtype; parameters and statistics stay float32);
    "float64" for numerics checks (parity, topology independence of training; needs
    `jax.enable_x64`, which train.py sets; training then keeps float64 parameters).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flax_style.models.adaattn import AdaAttN
from flax_style.models.decoder import Decoder
from flax_style.models.networks import AdaAttNNetwork, ProposedNetwork
from flax_style.models.vgg import VGG_CONVS, VGG_WIDTHS, VGGEncoder
from flax_style.models.video import ENCODER_DEPTH as VIDEO_ENCODER_DEPTH
from flax_style.models.video import AdaAttNVideoNetwork

VIDEO = "adaattn-video"
VARIANTS = ("proposed", "adaattn", VIDEO)
TINY_WIDTHS = (8, 16, 32, 64, 64)  # wiring checks: same graph, ~1/64 of the compute

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "variant": "proposed",
    "widths": VGG_WIDTHS,
    "fusion_weights": (0.1, 0.3, 0.6),
    "max_sample_3": 64 * 64,
    "max_sample_45": 256 * 256,
    "max_sample_video": 256 * 256,
    "dtype": "float32",
}

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "TINY_WIDTHS",
    "VARIANTS",
    "VGG_CONVS",
    "VGG_WIDTHS",
    "AdaAttN",
    "AdaAttNNetwork",
    "AdaAttNVideoNetwork",
    "Decoder",
    "ProposedNetwork",
    "VGGEncoder",
    "abstract_params",
    "build_encoder",
    "build_network",
    "encoder_depth",
    "model_config",
]


def model_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The default model config with `overrides` applied, validated and JSON-friendly."""
    config = dict(DEFAULT_MODEL_CONFIG)
    unknown = set(overrides or {}) - set(config)
    if unknown:
        raise ValueError(
            f"unknown model config field(s) {sorted(unknown)}; known: {sorted(config)}"
        )
    config.update(overrides or {})
    if config["variant"] not in VARIANTS:
        raise ValueError(f"model variant {config['variant']!r}: choose one of {VARIANTS}")
    if config["dtype"] not in ("float32", "bfloat16", "float64"):
        raise ValueError(f"model dtype {config['dtype']!r}: choose float32, bfloat16 or float64")
    config["widths"] = [int(w) for w in config["widths"]]
    config["fusion_weights"] = [float(w) for w in config["fusion_weights"]]
    fusion = np.asarray(config["fusion_weights"])
    if fusion.shape != (3,) or not np.isfinite(fusion).all() or (fusion < 0).any():
        raise ValueError(
            f"fusion weights {config['fusion_weights']}: need three finite numbers >= 0 "
            "(W3, W4, W5), e.g. 0.1,0.3,0.6"
        )
    if fusion.sum() <= 0:
        raise ValueError(f"fusion weights {config['fusion_weights']}: need a positive sum")
    return config


def build_encoder(config: Mapping[str, Any], depth: int = 5) -> VGGEncoder:
    """The frozen VGG encoder for a model config.

    Args:
      config: a model config.
      depth: outputs relu1_1..relu{depth}_1; the losses need all five, a network only
        `encoder_depth(config)`.
    """
    return VGGEncoder(tuple(config["widths"]), dtype=jnp.dtype(config["dtype"]), depth=depth)


def encoder_depth(config: Mapping[str, Any]) -> int:
    """How many encoder outputs (relu1_1 onwards) the config's network reads."""
    return VIDEO_ENCODER_DEPTH if config["variant"] == VIDEO else 5


def build_network(config: Mapping[str, Any], query_chunk: int | None = None) -> nn.Module:
    """The trainable network (attention blocks, fusion, decoder) for a model config.

    Args:
      config: a model config (see module docstring).
      query_chunk: content positions per attention chunk at inference; None for one pass.
    """
    config = model_config(config)
    if config["variant"] == VIDEO:
        return AdaAttNVideoNetwork(
            tuple(config["widths"]), config["max_sample_video"], jnp.dtype(config["dtype"])
        )
    common = {
        "widths": tuple(config["widths"]),
        "max_sample_3": config["max_sample_3"],
        "max_sample_45": config["max_sample_45"],
        "query_chunk": query_chunk,
        "dtype": jnp.dtype(config["dtype"]),
    }
    if config["variant"] == "adaattn":
        return AdaAttNNetwork(**common)
    return ProposedNetwork(fusion_weights=tuple(config["fusion_weights"]), **common)


def abstract_params(config: Mapping[str, Any]) -> tuple[Any, Any]:
    """Shapes and dtypes of (network params, encoder params) of a model config.

    Nothing is computed (`jax.eval_shape`); parameters do not depend on the image size.
    """
    encoder, network = build_encoder(config), build_network(config)
    image = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    encoder_vars = jax.eval_shape(encoder.init, jax.random.key(0), image)
    feats = jax.eval_shape(encoder.apply, encoder_vars, image)
    network_vars = jax.eval_shape(network.init, jax.random.key(0), feats, feats)
    return network_vars["params"], encoder_vars["params"]
