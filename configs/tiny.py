r"""Tiny CPU smoke config: tiny widths, random encoder, 32 px crops of the embedded demo images.

Launch:
  python train.py --config configs/tiny.py --workdir /tmp/tiny
"""

import ml_collections

from configs import default
from flax_style import models


def get_config() -> ml_collections.ConfigDict:
    """A config that trains in seconds on a CPU (not a useful model)."""
    config = default.get_config()
    config.global_batch_size = 4
    config.num_steps = 30
    config.log_every = 10
    config.image_every = 30
    config.sample_side = 64
    config.model.random_encoder = True
    config.model.widths = models.TINY_WIDTHS
    config.data.load_size = 64
    config.data.crop_size = 32
    config.data.num_workers = 0
    config.data.num_threads = 2
    config.data.prefetch = 8
    config.optim.lr = 1e-3
    config.optim.schedule = "constant"
    config.checkpoint.every_steps = 10
    config.checkpoint.keep = 2
    return config
