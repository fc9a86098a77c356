"""Videos through `infer.py`: mp4 in, mp4 out (frames, size, rate, audio), frame folders, the
style subset fixed for a whole clip, and one-line errors for broken files.

A synthetic 24-frame 64x48 clip at 24 frames/s with an AAC audio track, made with PyAV; tiny
random models of every variant saved as real checkpoints.
"""

import os

import av
import numpy as np
import pytest

import infer
from flax_style import checkpoint, image_io, models, stylize, video
from tests.test_stylize import CONFIG, make_stylizer, random_image

NUM_FRAMES, HEIGHT, WIDTH, RATE = 24, 48, 64, 24
AUDIO_RATE = 16000
VARIANT_CONFIGS = {
    "proposed": CONFIG,  # max_sample_45 = 16 < relu4_1 positions: a subset is drawn
    "adaattn": {**CONFIG, "variant": "adaattn"},
    models.VIDEO: {"variant": models.VIDEO, "widths": models.TINY_WIDTHS, "max_sample_video": 40},
}


def clip_frames() -> np.ndarray:
    """A textured image panning right by 2 px per frame: uint8 (n, h, w, 3)."""
    scene = (random_image(3, (HEIGHT, WIDTH + 2 * NUM_FRAMES)) * 255).astype(np.uint8)
    return np.stack([scene[:, 2 * i : 2 * i + WIDTH] for i in range(NUM_FRAMES)])


def write_clip(path: str, frames: np.ndarray, with_audio: bool = True) -> None:
    """H.264 at RATE frames/s (near-lossless), plus one second of AAC sine when asked."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=RATE, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv444p"
        audio = out.add_stream("aac", rate=AUDIO_RATE) if with_audio else None
        if audio is not None:
            audio.layout = "mono"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio is not None:
            tone = np.sin(2 * np.pi * 440 * np.arange(AUDIO_RATE) / AUDIO_RATE)
            samples = (0.3 * tone).astype(np.float32)[None]
            for start in range(0, AUDIO_RATE, 1024):
                frame = av.AudioFrame.from_ndarray(
                    samples[:, start : start + 1024], format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = AUDIO_RATE, start
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)


def decode_all(path: str) -> tuple[np.ndarray, av.video.stream.VideoStream, int]:
    """(frames as float32, the video stream, audio packet count)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        rate, size = stream.average_rate, (stream.height, stream.width)
    with av.open(path) as container:
        audio = sum(
            1 for p in container.demux(audio=0) if p.dts is not None
        ) if container.streams.audio else 0  # fmt: skip
    return frames.astype(np.float32) / 255.0, (rate, size), audio


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    write_clip(str(root / "clip.mp4"), clip_frames())
    image_io.save_image(str(root / "style.png"), random_image(9, (40, 36)))
    return root


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = {}
    for variant, config in VARIANT_CONFIGS.items():
        stylizer = make_stylizer(config)
        root = str(tmp_path_factory.mktemp(f"ckpt_{variant}"))
        checkpoint.save_model(root, stylizer.params, stylizer.encoder_params, config)
        out[variant] = (root, stylizer)
    return out


def test_read_clip_batches(files):
    """Frames in order, batches of 5 (the last of 4), the declared rate and count."""
    info = video.probe(str(files / "clip.mp4"))
    assert (info.width, info.height, info.rate, info.num_frames) == (WIDTH, HEIGHT, RATE, 24)
    assert info.has_audio
    batches = list(video.read_clip(str(files / "clip.mp4"), 5))
    assert [len(b.pts) for b in batches] == [5, 5, 5, 5, 4]
    frames = np.concatenate([b.images for b in batches])
    # crf 0 in 4:4:4: lossless up to the RGB <-> YUV rounding.
    assert np.abs(frames - clip_frames() / 255.0).max() < 4 / 255


@pytest.mark.parametrize("variant", list(VARIANT_CONFIGS))
def test_clip_in_clip_out(variant, files, ckpts, tmp_path, capsys):
    """Same frame count, size, rate; audio copied; each frame is the model's image of the
    input frame with the style subset of `--seed` (the same for every frame). H.264 for
    "proposed", lossless FFV1 (.mkv) for the others, whose frames are then checked exactly."""
    ckpt, _ = ckpts[variant]
    stylizer = stylize.load_stylizer(ckpt)  # as infer.py loads it (same attention chunks)
    out = tmp_path / ("out.mp4" if variant == "proposed" else "out.mkv")
    args = ["--checkpoint", ckpt, "--content", files / "clip.mp4", "--style", files / "style.png"]
    assert infer.main([*map(str, args), "--output", str(out), "--batch_size", "5"]) == 0
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no partial file left
    err = capsys.readouterr().err
    assert "frame 24/24" in err and "frames/s" in err and "ETA" in err
    frames, (rate, size), audio_packets = decode_all(str(out))
    assert frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert rate == RATE and size == (HEIGHT, WIDTH)
    assert audio_packets == decode_all(str(files / "clip.mp4"))[2] > 10

    if variant == "proposed":
        return  # H.264 is lossy; the structure above is what it must keep
    # Each frame stylized alone with seed 0 is what the batched clip path computes (float), and
    # the lossless file holds it rounded to 8 bits.
    (source,) = video.read_clip(str(files / "clip.mp4"), NUM_FRAMES)
    inputs = source.images
    style = image_io.load_image(str(files / "style.png"))
    expected = np.stack([stylizer.stylize(f, style, seed=0) for f in inputs])
    # 1/255: a float a hair from a rounding boundary may round the other way after batching.
    pixels, expected_pixels = np.round(frames * 255).astype(int), video.to_uint8(expected)
    assert np.abs(pixels - expected_pixels).max() <= 1
    assert np.mean(pixels != expected_pixels) < 1e-3
    # The seed matters (a subset is drawn), so the equality above shows it fixed for the clip.
    if variant == "adaattn-video":  # its block keeps 40 of 12 x 16 style positions
        other_seed = stylizer.stylize(inputs[0], style, seed=1)
        assert np.abs(np.clip(other_seed, 0, 1) - np.clip(expected[0], 0, 1)).max() > 0.05


def test_frame_folder_one_output_per_frame(files, ckpts, tmp_path):
    """A folder of frames: one .npy per frame, batched, each equal to that frame alone with
    the same style subset."""
    ckpt, _ = ckpts["proposed"]
    stylizer = stylize.load_stylizer(ckpt)  # the clip test's compilations serve here too
    frames = clip_frames()[:5] / 255.0
    os.makedirs(tmp_path / "frames")
    for i, frame in enumerate(frames):
        image_io.save_image(str(tmp_path / "frames" / f"{i:04d}.png"), frame)
    args = ["--checkpoint", ckpt, "--content", tmp_path / "frames", "--style", files / "style.png"]
    out = tmp_path / "out"
    flags = ["--output_dir", str(out), "--ext", "npy", "--batch_size", "5"]
    assert infer.main([*map(str, args), *flags]) == 0
    assert sorted(os.listdir(out)) == [f"{i:04d}_stylized_style.npy" for i in range(5)]
    style = image_io.load_image(str(files / "style.png"))
    for i in range(5):
        content = image_io.load_image(str(tmp_path / "frames" / f"{i:04d}.png"))
        np.testing.assert_allclose(
            np.load(out / f"{i:04d}_stylized_style.npy"),
            stylizer.stylize(content, style, seed=0),
            rtol=0,
            atol=1e-5,
        )


def test_broken_videos_are_one_line(files, ckpts, tmp_path, capsys):
    """Garbage, a truncated file and a missing file: one line each, no output, exit 1."""
    ckpt, _ = ckpts["proposed"]
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    data = (files / "clip.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    style = str(files / "style.png")
    for name in ("garbage.mp4", "truncated.mp4"):
        out = tmp_path / "out" / f"{name}.mp4"
        args = ["--checkpoint", ckpt, "--content", str(tmp_path / name), "--style", style]
        assert infer.main([*args, "--output", str(out)]) == 1
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and name in errors[0] and "re-encode or replace" in errors[0]
        assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


def test_corrupt_frame_is_one_line(files, ckpts, tmp_path, capsys):
    """Motion-JPEG frames overwritten in the middle of the file: the decoder fails there; one
    line names the frame, and the partly written output is removed."""
    path = tmp_path / "clip.avi"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuvj420p"
        for image in clip_frames():
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    ckpt, _ = ckpts["adaattn-video"]
    out = tmp_path / "out" / "stylized.avi"
    args = ["--checkpoint", ckpt, "--content", str(path), "--style", str(files / "style.png")]
    assert infer.main([*args, "--output", str(out), "--batch_size", "5"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "clip.avi: frame " in errors[0], errors
    assert "cannot be decoded" in errors[0] and "re-encode or replace" in errors[0]
    assert os.listdir(tmp_path / "out") == []


def test_video_output_flag_errors(files, ckpts, tmp_path, capsys):
    ckpt, _ = ckpts["proposed"]
    args = ["--checkpoint", ckpt, "--content", str(files / "clip.mp4")]
    assert infer.main([*args, "--style", str(files / "style.png"), "--output", "out.png"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --output out.png: a clip's output ends in one of .mp4, .mov, " + (
        ".m4v, .mkv, .webm, .avi\n"
    )


def test_audio_the_container_cannot_hold_is_one_line(tmp_path):
    """PCM audio cannot go into WebM: one line suggesting .mkv, no partial file left."""
    path = str(tmp_path / "pcm.avi")
    with av.open(path, "w") as out:
        stream = out.add_stream("mpeg4", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("pcm_s16le", rate=AUDIO_RATE)
        audio.layout = "mono"
        for image in clip_frames()[:4]:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), "s16", "mono")
        samples.sample_rate, samples.pts = AUDIO_RATE, 0
        for packet in [*audio.encode(samples), *audio.encode()]:
            out.mux(packet)
    info = video.probe(path)
    assert info.has_audio
    with pytest.raises(video.VideoError, match=r"out\.webm: cannot write .* try a \.mkv"):
        with video.ClipWriter(str(tmp_path / "out.webm"), info):
            pass
    assert os.listdir(tmp_path) == ["pcm.avi"]
