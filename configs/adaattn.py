r"""Official AdaAttN (shallow keys, relu3_1 skip) with the official recipe.

Launch:
  python train.py --config configs/adaattn.py --workdir runs/adaattn \
      --config.model.vgg_path=models/vgg_normalised.pth \
      --config.data.content=folder:/data/coco/train2014 \
      --config.data.style=folder:/data/wikiart
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    """The default config with the official AdaAttN network."""
    config = default.get_config()
    config.model.variant = "adaattn"
    return config
