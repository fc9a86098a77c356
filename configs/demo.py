r"""The README main job: the paper's model on the embedded demo images with a random encoder.

Runs offline with nothing to download: content photos and style textures ship inside
scikit-image, and the VGG encoder is random (explicitly requested here, logged as a warning),
so the result demonstrates the pipeline, not a useful stylizer. With the real encoder:
`--config.model.vgg_path=models/vgg_normalised.pth`.

Launch:
  python train.py --config configs/demo.py --workdir runs/demo
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """Full-size model, small crops and a short run on the embedded demo data."""
    config = default.get_config()
    config.global_batch_size = 4  # divides by 1, 2 and 4 devices
    config.num_steps = 24  # under 2 minutes on an idle 2-core CPU, compilation included
    config.log_every = 4
    config.image_every = 12
    config.model.random_encoder = True  # ignored when --config.model.vgg_path is given
    config.data.content = "demo"
    config.data.style = "demo"
    config.data.load_size = 256
    config.data.crop_size = 128
    config.data.num_workers = 0
    config.data.num_threads = 4
    config.data.prefetch = 16
    config.optim.schedule = "constant"
    config.checkpoint.every_steps = 12
    return config
