"""Training input pipeline: content and style images paired at random, resized and cropped.

Each of content and style is one of
  folder:PATH          every image under PATH (recursive, `image_io.IMAGE_EXTENSIONS`), e.g. COCO
                       or an unzipped WikiArt
  tfds:NAME[:SPLIT]    a TFDS dataset read with `tfds.data_source` (random access; the builder
                       needs TensorFlow at run time: `pip install 'flax-style[tfds]'`)
  demo (or empty)      sample photos (content) and textures / pictures (style) shipped inside
                       scikit-image, for offline demo and smoke runs

Pipeline (grain), the same on any number of processes: global sample g of the run is content
image `order[g]`, where `order` shuffles the content set with the seed (reshuffled every epoch),
and gets a style image drawn at random and its crops from a generator seeded by (seed, g), as
the official AdaAttN `UnalignedDataset` pairs at random. Global batch k is samples
k*B .. (k+1)*B-1 (B the global batch size); process p of P reads and decodes only its rows
p*B/P .. (p+1)*B/P-1 of it. So the global batch at step k depends on (seed, k) alone, and the
data position of a run is one number, the global samples consumed, on any topology.
Each image is resized to `load_size` squared (bicubic, as the official `get_transform`), randomly
cropped to `crop_size`, optionally flipped. An unreadable file is skipped (the next index is read
instead), logged and counted in the batch field `skipped`, so a corrupt image never stops a run.
Batches are uint8 NHWC numpy arrays of this process's rows of the global batch.
"""

import dataclasses
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import logging
from PIL import Image

from flax_style import errors, image_io

# Sample images bundled in scikit-image's `skimage/data` (no download needed).
DEMO_CONTENT = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "horse.png",
    "page.png",
)
DEMO_STYLE = (
    "brick.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "color.png",
    "logo.png",
)
_MAX_CONSECUTIVE_BAD = 32  # unreadable files in a row before the source is declared broken
_NAMED_BAD = 3  # unreadable files named in the log per reader; the rest are only counted


class DataError(errors.UserError):
    """A data source that cannot be used; the message names it and the fix."""


class FolderSource:
    """Image files of a directory tree, decoded with `image_io.load_image`."""

    def __init__(self, paths: Sequence[str], description: str):
        self.paths = list(paths)
        self.description = description

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return image_io.load_image(self.paths[index])

    def name(self, index: int) -> str:
        return self.paths[index]


class TfdsSource:
    """Images of a TFDS dataset split, read by random access with `tfds.data_source`."""

    def __init__(self, source: Any, image_key: str, description: str):
        self.source = source
        self.image_key = image_key
        self.description = description

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            record = self.source[index]
            image = np.asarray(record[self.image_key])
        except KeyError as error:
            raise DataError(
                f"{self.description}: records have no field {self.image_key!r}; "
                "set --config.data.image_key"
            ) from error
        except Exception as error:  # a damaged record: skip it like a corrupt file
            raise image_io.ImageError(f"{self.name(index)}: cannot read ({error})") from error
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        if image.dtype == np.uint16:
            return image[..., :3].astype(np.float32) / 65535.0
        return image[..., :3].astype(np.float32) / 255.0

    def name(self, index: int) -> str:
        return f"{self.description}[{index}]"


def _demo_dir() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


def open_source(spec: str, role: str, image_key: str = "image", tfds_data_dir: str = ""):
    """A random-access image source from a `folder:`/`tfds:`/`demo` spec.

    Args:
      spec: the source spec (module docstring).
      role: "content" or "style" (which demo images; error messages).
      image_key: image field of TFDS records.
      tfds_data_dir: TFDS data directory; empty for the TFDS default.

    Raises:
      DataError: an unknown spec, a missing or empty folder, an unloadable TFDS dataset.
    """
    spec = spec.strip()
    if spec in ("", "demo"):
        names = DEMO_CONTENT if role == "content" else DEMO_STYLE
        paths = [os.path.join(_demo_dir(), name) for name in names]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f"demo {role} image {missing[0]} is missing from scikit-image")
        return FolderSource(paths, f"demo {role} images (scikit-image)")
    kind, _, rest = spec.partition(":")
    if kind == "folder":
        if not os.path.isdir(rest):
            raise DataError(f"data.{role}={spec!r}: {rest!r} is not a directory")
        paths = image_io.list_images(rest)
        if not paths:
            raise DataError(
                f"data.{role}={spec!r}: no {'/'.join(image_io.IMAGE_EXTENSIONS)} files under it"
            )
        return FolderSource(paths, f"folder {rest}")
    if kind == "tfds":
        name, _, split = rest.partition(":")
        split = split or "train"
        try:
            import tensorflow_datasets as tfds

            source = tfds.data_source(name, split=split, data_dir=tfds_data_dir or None)
        except ImportError as error:
            raise DataError(
                f"data.{role}={spec!r}: TFDS needs tensorflow: pip install 'flax-style[tfds]'"
            ) from error
        except Exception as error:  # tfds raises many types; the message is what matters
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise DataError(
                f"data.{role}={spec!r}: cannot open TFDS dataset {name!r} split {split!r} "
                f"({type(error).__name__}: {first_line}); prepare it with `tfds build {name}` "
                "or set --config.data.tfds_data_dir"
            ) from None
        if len(source) == 0:
            raise DataError(f"data.{role}={spec!r}: the split is empty")
        return TfdsSource(source, image_key, f"tfds {name}:{split}")
    raise DataError(
        f"data.{role}={spec!r}: use folder:PATH, tfds:NAME[:SPLIT] or demo (empty for demo)"
    )


def resize_and_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    load_size: int,
    crop_size: int,
    flip: bool,
) -> np.ndarray:
    """float [0, 1] (h, w, 3) -> uint8 (crop, crop, 3): resize, random crop, optional flip.

    `load_size` > 0 resizes to load_size x load_size (bicubic, the official transform); 0 keeps
    the size. Either way an image smaller than the crop is first upscaled (aspect kept) so the
    crop fits.
    """
    pixels = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    pil = Image.fromarray(pixels)
    if load_size > 0:
        pil = pil.resize((load_size, load_size), Image.BICUBIC)
    if min(pil.size) < crop_size:
        scale = crop_size / min(pil.size)
        size = (max(crop_size, round(pil.width * scale)), max(crop_size, round(pil.height * scale)))
        pil = pil.resize(size, Image.BICUBIC)
    top = int(rng.integers(pil.height - crop_size + 1))
    left = int(rng.integers(pil.width - crop_size + 1))
    out = np.asarray(pil)[top : top + crop_size, left : left + crop_size]
    if flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


class ProcessRows(grain.transforms.Map):
    """Index into this process's samples -> global sample index (its rows of each batch)."""

    def __init__(
        self, start_sample: int, global_batch: int, process_index: int, process_count: int
    ):
        self.start_sample = start_sample
        self.global_batch = global_batch
        self.local_batch = global_batch // process_count
        self.first_row = process_index * self.local_batch

    def map(self, index: int) -> int:
        batch, row = divmod(int(index), self.local_batch)
        return self.start_sample + batch * self.global_batch + self.first_row + row


class LoadPair(grain.transforms.Map):
    """Global sample index -> {"content", "style", "skipped"}: reads, pairs at random, crops.

    Everything random about sample g comes from a generator seeded by (seed, g), so the sample
    is the same whichever process reads it.
    """

    def __init__(
        self, content, style, order, seed: int, load_size: int, crop_size: int, flip: bool
    ):
        self.content, self.style, self.order, self.seed = content, style, order, seed
        self.load_size, self.crop_size, self.flip = load_size, crop_size, flip
        self._reported: set[str] = set()  # files named in the log already (per reader)

    def _report(self, error: image_io.ImageError) -> None:
        """Names the first few unreadable files, each once; the batch field `skipped` counts
        every skip (the train loop logs the total), so a bad file read every epoch, by every
        worker, does not flood the log."""
        if len(self._reported) >= _NAMED_BAD or str(error) in self._reported:
            return
        self._reported.add(str(error))
        last = len(self._reported) == _NAMED_BAD
        more = "; further unreadable images are counted, not named" if last else ""
        logging.warning("skipping unreadable image: %s%s", error, more)

    def _read(self, source, index: int) -> tuple[np.ndarray, int]:
        """The image at `index`, or the next readable one; and how many were skipped."""
        first_error = None
        for skipped in range(min(_MAX_CONSECUTIVE_BAD, len(source))):
            try:
                return source[(index + skipped) % len(source)], skipped
            except image_io.ImageError as error:
                self._report(error)
                first_error = first_error or error
        raise DataError(
            f"{source.description}: {min(_MAX_CONSECUTIVE_BAD, len(source))} unreadable images "
            f"in a row, starting with: {first_error}"
        )

    def map(self, sample: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, sample))
        content, content_skipped = self._read(self.content, int(self.order[sample]))
        style, style_skipped = self._read(self.style, int(rng.integers(len(self.style))))
        crop = lambda image: resize_and_crop(  # noqa: E731
            image, rng, self.load_size, self.crop_size, self.flip
        )
        return {
            "content": crop(content),
            "style": crop(style),
            "skipped": np.int32(content_skipped + style_skipped),
        }


@dataclasses.dataclass
class DataInfo:
    """What a run trains on, for logs and the epoch-based schedule."""

    content: str
    style: str
    num_content: int
    num_style: int
    is_demo: bool


def create_dataset(
    data_config: Mapping[str, Any],
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    start_sample: int = 0,
) -> tuple[grain.IterDataset, DataInfo]:
    """The infinite dataset of this process's rows of every global batch, from `start_sample`.

    Args:
      data_config: the `data` config section (`configs/default.py`).
      global_batch_size: images per step over all processes (divisible by `process_count`).
      seed: shuffle, pairing and crop seed.
      process_index, process_count: which rows of each global batch this process reads.
      start_sample: global samples already consumed (the data position of a resumed run).

    Returns:
      (dataset, info); iterate `iter(dataset)` for batches {"content": uint8 (b, crop, crop, 3),
      "style": ..., "skipped": int32 (b,)}, b = global_batch_size / process_count.
    """
    content = open_source(
        data_config["content"], "content", data_config["image_key"], data_config["tfds_data_dir"]
    )
    style = open_source(
        data_config["style"], "style", data_config["image_key"], data_config["tfds_data_dir"]
    )
    if data_config["crop_size"] <= 0 or data_config["load_size"] < 0:
        raise DataError(
            f"data.crop_size={data_config['crop_size']}, data.load_size="
            f"{data_config['load_size']}: need crop_size > 0 and load_size >= 0"
        )
    if 0 < data_config["load_size"] < data_config["crop_size"]:
        raise DataError(
            f"data.load_size={data_config['load_size']} is smaller than "
            f"data.crop_size={data_config['crop_size']}"
        )
    # Global sample g -> content index; `repeat` reshuffles every epoch (per-epoch seed).
    order = grain.MapDataset.range(len(content)).shuffle(seed=seed).repeat()
    dataset = (
        grain.MapDataset.range(0, sys.maxsize)
        .map(ProcessRows(start_sample, global_batch_size, process_index, process_count))
        .map(
            LoadPair(
                content,
                style,
                order,
                seed,
                data_config["load_size"],
                data_config["crop_size"],
                data_config["random_flip"],
            )
        )
        .batch(global_batch_size // process_count, drop_remainder=True)
    )
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(
            num_threads=data_config["num_threads"],
            prefetch_buffer_size=data_config["prefetch"],
        )
    )
    if data_config["num_workers"] > 0:
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=data_config["num_workers"])
        )
    is_demo = data_config["content"].strip() in ("", "demo")
    info = DataInfo(content.description, style.description, len(content), len(style), is_demo)
    return iter_dataset, info


def take(iterator: Iterator[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    """The next `count` batches (test checks and image grids)."""
    return [next(iterator) for _ in range(count)]
