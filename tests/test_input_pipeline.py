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
    dataset, info = input_pipeline.create_dataset(config, global_batch_size=5, seed=0)
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


def _batches(config, global_batch, count, process_index=0, process_count=1, start_sample=0):
    dataset, _ = input_pipeline.create_dataset(
        config, global_batch, 3, process_index, process_count, start_sample
    )
    return input_pipeline.take(iter(dataset), count)


def test_same_seed_same_batches_other_seed_others():
    config = data_config("demo", "demo")
    a, b = _batches(config, 4, 1)[0], _batches(config, 4, 1)[0]
    other = next(iter(input_pipeline.create_dataset(config, 4, seed=4)[0]))
    np.testing.assert_array_equal(a["content"], b["content"])
    np.testing.assert_array_equal(a["style"], b["style"])
    assert not np.array_equal(a["content"], other["content"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_global_batch_is_the_same_on_any_number_of_processes(process_count):
    config = data_config("demo", "demo")
    single = _batches(config, 4, 3)  # 12 samples: crosses the epoch boundary (8 images)
    per_process = [_batches(config, 4, 3, p, process_count) for p in range(process_count)]
    for step, want in enumerate(single):
        for name in ("content", "style"):
            rows = np.concatenate([batches[step][name] for batches in per_process])
            np.testing.assert_array_equal(rows, want[name])


def test_start_sample_resumes_the_order():
    config = data_config("demo", "demo")
    single = _batches(config, 4, 3)
    # After 2 steps of batch 4 (8 samples), on 2 processes: process 1's rows of step 2.
    resumed = _batches(config, 4, 1, process_index=1, process_count=2, start_sample=8)[0]
    np.testing.assert_array_equal(resumed["content"], single[2]["content"][2:])
    np.testing.assert_array_equal(resumed["style"], single[2]["style"][2:])


def test_each_process_decodes_only_its_rows(monkeypatch, tmp_path):
    for i in range(16):
        Image.fromarray(_pixels(i)).save(tmp_path / f"{i:02d}.png")
    decoded = []
    load_image = input_pipeline.image_io.load_image

    def counting_load(path):
        if path.startswith(str(tmp_path)):  # not other tests' still-prefetching iterators
            decoded.append(path)
        return load_image(path)

    monkeypatch.setattr(input_pipeline.image_io, "load_image", counting_load)
    config = data_config(f"folder:{tmp_path}", "demo", num_threads=1, prefetch=0)
    _batches(config, 8, 2, process_index=1, process_count=4)
    assert len(decoded) == 2 * 2  # 2 batches x 2 rows of the global 8 (not 2 x 8)


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
