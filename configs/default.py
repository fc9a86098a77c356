r"""Default training config: the paper's model with the official AdaAttN recipe.

The model and the losses are described in docs/model.md ("Training losses" for the recipe).

Launch (one host, all its GPUs):
  python train.py --config configs/default.py --workdir runs/proposed \
      --config.model.vgg_path=models/vgg_normalised.pth \
      --config.data.content=folder:/data/coco/train2014 \
      --config.data.style=folder:/data/wikiart

Any field can be overridden on the command line: `--config.optim.lr=1e-4`.
"""

import ml_collections

from flax_style import models

MODEL = models.DEFAULT_MODEL_CONFIG  # the model's defaults: written once, in flax_style.models


def get_config() -> ml_collections.ConfigDict:
    """The default config; variants import it and override a few fields."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # one seed for initialisation, data order, pairing, crops and sampling
    config.global_batch_size = 8  # images per step over all devices (paper: 8)
    config.num_steps = 0  # steps to train; 0: optim.constant_epochs + optim.decay_epochs epochs
    config.log_every = 50  # steps between progress lines and TensorBoard scalars
    config.image_every = 1000  # steps between TensorBoard image grids (content | style | out)
    config.sample_side = 256  # end of run: samples/sheet.png at this shorter side (0: none)

    config.model = ml_collections.ConfigDict()
    config.model.variant = MODEL["variant"]  # "proposed" (the paper) or "adaattn" (official)
    config.model.vgg_path = ""  # vgg_normalised.pth or a converted checkpoint dir (wins if set)
    config.model.random_encoder = False  # no vgg_path: random VGG (smoke/demo runs only)
    config.model.widths = MODEL["widths"]  # random-encoder widths (a file sets its own)
    config.model.fusion_weights = MODEL["fusion_weights"]  # proposed: (w3, w4, w5) fusion weights
    config.model.max_sample_3 = MODEL["max_sample_3"]  # style positions kept by relu3_1 blocks
    config.model.max_sample_45 = MODEL["max_sample_45"]  # ... by relu4_1/relu5_1 blocks
    config.model.max_sample_video = MODEL["max_sample_video"]  # ... by the video model's block
    config.model.dtype = MODEL["dtype"]  # compute dtype: "float32" or "bfloat16"
    config.model.init_std = 0.02  # trainable convs ~ normal(0, init_std), bias 0 (official)

    config.data = ml_collections.ConfigDict()
    config.data.content = ""  # folder:PATH | tfds:NAME[:SPLIT] | "" (embedded demo images)
    config.data.style = ""  # folder:PATH | tfds:NAME[:SPLIT] | "" (embedded demo images)
    config.data.image_key = "image"  # image field of TFDS records
    config.data.tfds_data_dir = ""  # TFDS data dir; "" for the TFDS default (~/tensorflow_datasets)
    config.data.load_size = 512  # resize to load_size x load_size first; 0 keeps the size
    config.data.crop_size = 256  # random square crop fed to the network
    config.data.random_flip = True  # random horizontal flip (the official transform has it)
    config.data.num_workers = 8  # grain worker processes decoding images; 0 decodes in-process
    config.data.num_threads = 16  # reader threads per process (or per worker)
    config.data.prefetch = 64  # elements prefetched per reader

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 2e-4  # Adam learning rate (paper)
    config.optim.b1 = 0.5  # Adam beta1 (official release)
    config.optim.b2 = 0.999  # Adam beta2
    config.optim.schedule = "official"  # "official" (constant, then decaying) or "constant"
    config.optim.constant_epochs = 2  # official: epochs at the full rate (n_epochs)
    config.optim.decay_epochs = 3  # official: epochs of decay (n_epochs_decay)
    config.optim.decay_rate = 0.3  # official: factor per decay epoch
    config.optim.steps_per_epoch = 0  # 0: content images / global batch
    # Non-finite loss or gradients: 0 stops the run (nothing non-finite is saved); N > 0 skips
    # the update instead (optax.apply_if_finite), and stops after N bad steps in a row. It
    # changes the optimiser state: choose it when a run starts.
    config.optim.skip_nonfinite = 0

    config.loss = ml_collections.ConfigDict()
    config.loss.content = 0.0  # content loss weight (official 0)
    config.loss.global_style = 10.0  # global (mean/std) style loss weight
    config.loss.local_style = 3.0  # local (attention) style loss weight
    config.loss.key_mode = "shallow"  # attention keys of the local loss (official "shallow")
    config.loss.max_sample = 64 * 64  # style positions kept by the local loss

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 1000  # steps between checkpoints (also on SIGTERM and at end)
    config.checkpoint.keep = 3  # most recent checkpoints kept
    config.checkpoint.async_save = True  # write checkpoints in the background
    return config
