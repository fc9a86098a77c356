"""Input pipeline: sources, decoding of awkward files, skipping of corrupt ones, determinism."""

import logging

import numpy as np
import pytest
from PIL import Image

from flax_style import input_pipeline


def data_config(content, style, **overrides):
    config = {
        "content": content,
        "style": style,
        "image_key": "image",
        "tfds_data_dir": "",
        "load_size": 64,
        "crop_size": 32,
        "random_flip": True,
        "num_workers": 0,
        "num_threads": 2,
        "prefetch": 4,
    }
    return {**config, **overrides}


def _pixels(seed, size=(40, 30)):
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """Good images in every awkward mode, plus a corrupt file and a zero-byte file."""
    root = tmp_path / "content"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_pixels(0)).save(root / "b_rgb.jpg")
    Image.fromarray(_pixels(1)[..., 0]).save(root / "d_gray.png")
    Image.fromarray(np.dstack([_pixels(2), np.full((30, 40), 128, np.uint8)])).save(
        root / "f_rgba.png"
    )
    Image.fromarray(_pixels(3)).convert("P").save(root / "h_palette.bmp")
    Image.fromarray(_pixels(4)).convert("CMYK").save(root / "sub" / "j_cmyk.jpg")
    Image.fromarray(_pixels(5)[..., 0].astype(np.uint16) * 257).save(root / "sub" / "l_16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    Image.fromarray(_pixels(6)).save(root / "sub" / "n_exif.jpg", exif=exif)
    Image.fromarray(_pixels(7, (10, 6))).save(root / "sub" / "p_tiny.webp")  # < crop size
    # Not adjacent in sorted order, so each is skipped on its own.
    (root / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "sub" / "k_empty.png").write_bytes(b"")
    style = tmp_path / "style"
    style.mkdir()
    for i in range(3):
        Image.fromarray(_pixels(10 + i, (50, 50))).save(style / f"s{i}.png")
    return root, style


def test_folder_skips_corrupt_and_empty_files_and_counts_them(image_folder, caplog):
    content, style = image_folder
    config = data_config(f"folder:{content}", f"folder:{style}")
    dataset, info = input_pipeline.create_dataset(config, batch_size=5, seed=0)
    assert (info.num_content, info.num_style) == (10, 3)
    iterator = iter(dataset)
    # The absl logger's own level: an earlier in-process CLI run (infer.main) may have raised it.
    with caplog.at_level(logging.WARNING, logger="absl"):
        batches = [next(iterator) for _ in range(2)]  # one epoch: 10 content indices
    for batch in batches:
        assert batch["content"].shape == batch["style"].shape == (5, 32, 32, 3)
        assert batch["content"].dtype == np.uint8
    assert sum(int(b["skipped"].sum()) for b in batches) == 2
    assert "c_corrupt.jpg" in caplog.text and "k_empty.png" in caplog.text


def test_same_seed_same_batches_and_state_restores_position():
    config = data_config("demo", "demo")
    first = iter(input_pipeline.create_dataset(config, 4, seed=3)[0])
    second = iter(input_pipeline.create_dataset(config, 4, seed=3)[0])
    other = iter(input_pipeline.create_dataset(config, 4, seed=4)[0])
    a, b, c = next(first), next(second), next(other)
    np.testing.assert_array_equal(a["content"], b["content"])
    np.testing.assert_array_equal(a["style"], b["style"])
    assert not np.array_equal(a["content"], c["content"])
    state = first.get_state()
    expected = [next(first) for _ in range(3)]  # crosses the epoch boundary (8 images)
    resumed = iter(input_pipeline.create_dataset(config, 4, seed=3)[0])
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        np.testing.assert_array_equal(got["content"], want["content"])
        np.testing.assert_array_equal(got["style"], want["style"])


def test_processes_read_disjoint_shards(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 40 * i + 20, np.uint8)).save(tmp_path / f"{i}.png")
    config = data_config(f"folder:{tmp_path}", "demo", random_flip=False)
    seen = []
    for index in range(2):
        dataset, _ = input_pipeline.create_dataset(config, 2, 0, index, process_count=2)
        batch = next(iter(dataset))
        seen.append({int(image[0, 0, 0]) for image in batch["content"]})
    assert len(seen[0]) == len(seen[1]) == 2 and not seen[0] & seen[1]


def test_tfds_source_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        config = data_config("tfds:coco/2017:train", "tfds:imagenette", crop_size=16, load_size=0)
        dataset, info = input_pipeline.create_dataset(config, 3, seed=0)
        batch = next(iter(dataset))
    assert info.num_content == 6 and "coco/2017:train" in info.content
    assert batch["content"].shape == batch["style"].shape == (3, 16, 16, 3)


def test_small_images_are_upscaled_to_the_crop():
    image = np.random.default_rng(0).random((6, 10, 3), np.float32)
    out = input_pipeline.resize_and_crop(image, np.random.default_rng(0), 0, 32, flip=True)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope:x", r"use folder:PATH, tfds:NAME\[:SPLIT\] or demo"),
        ("folder:/no/such/dir", "is not a directory"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(input_pipeline.DataError, match=message) as error:
        input_pipeline.create_dataset(data_config(spec, "demo"), 2, 0)
    assert "\n" not in str(error.value)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(input_pipeline.DataError, match=r"no .* files under it"):
        input_pipeline.create_dataset(data_config(f"folder:{tmp_path}", "demo"), 2, 0)


def test_unreadable_images_are_named_a_few_times_then_counted(tmp_path, caplog):
    """6 bad files read over 3 epochs: 3 named log lines in all, every skip counted."""
    content = tmp_path / "content"
    content.mkdir()
    for i in range(2):
        Image.fromarray(_pixels(i)).save(content / f"good{i}.png")
    for i in range(6):
        (content / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    config = data_config(f"folder:{content}", f"folder:{content}")
    iterator = iter(input_pipeline.create_dataset(config, 4, seed=0)[0])
    with caplog.at_level(logging.WARNING, logger="absl"):
        skipped = sum(int(next(iterator)["skipped"].sum()) for _ in range(6))
    named = [r.getMessage() for r in caplog.records if "skipping unreadable" in r.getMessage()]
    assert len(named) == 3 and "counted, not named" in named[-1], named
    assert len({line.split(":")[1] for line in named}) == 3  # three different files
    assert skipped >= 2 * 6  # every bad content index of 2 epochs at least, plus bad styles
