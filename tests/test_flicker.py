"""The flicker metric (`flax_style.flicker`): DIS flow, the forward-backward check, warping
errors of stable and flickering clips with known camera motion, and the CLI.

Clips are crops of a bundled scikit-image photograph sliding over it (a camera pan), 96x128,
written nearly lossless; ~10 s in all.
"""

import csv
import fractions

import av
import numpy as np
import pytest
import skimage.data

from flax_style import flicker, video

H, W, FRAMES, RATE = 96, 128, 16, 24
PAN = (2, 1)  # (dx, dy) pixels per frame the scene moves in the picture


def scene() -> np.ndarray:
    return skimage.data.astronaut().astype(np.float32) / 255.0


def pan_clip(frames: int = FRAMES, pan=PAN) -> np.ndarray:
    """(n, H, W, 3) crops of the scene; the content moves by `pan` per frame."""
    image = scene()
    x0, y0 = 200, 150
    return np.stack([
        image[y0 - i * pan[1] : y0 - i * pan[1] + H, x0 - i * pan[0] : x0 - i * pan[0] + W]
        for i in range(frames)
    ])  # fmt: skip


def write(path: str, frames: np.ndarray) -> str:
    """Near-lossless H.264 4:4:4 (CRF 0), so that the clips hold what the test put in them."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=RATE, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for image in video.to_uint8(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_flow_recovers_a_known_shift():
    """The content moves by (+3, -2) px: the flow is (3, -2) away from the borders."""
    frames = pan_clip(2, pan=(3, -2))
    flow = flicker.optical_flow(frames[0], frames[1])
    interior = flow[8:-8, 8:-8].reshape(-1, 2)
    np.testing.assert_allclose(np.median(interior, axis=0), [3.0, -2.0], atol=0.1)
    assert np.mean(np.linalg.norm(interior - [3.0, -2.0], axis=-1) < 0.5) > 0.9


def test_forward_backward_check_hand_computed():
    """forward +3 px in x: the last 3 columns leave the frame; an opposite backward flow passes,
    a backward flow off by 0.5 px passes (0.25 <= 0.01 * (9 + 6.25) + 0.5), one that does not
    return (+3) fails everywhere (36 > 0.68)."""
    forward = np.zeros((5, 8, 2), np.float32)
    forward[..., 0] = 3.0
    expected = np.ones((5, 8), bool)
    expected[:, -3:] = False
    np.testing.assert_array_equal(flicker.consistent(forward, -forward), expected)
    off = -forward.copy()
    off[..., 0] += 0.5
    np.testing.assert_array_equal(flicker.consistent(forward, off), expected)
    assert not flicker.consistent(forward, forward).any()


def test_warp_moves_content_back():
    frames = pan_clip(2)
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = PAN
    warped, inside = flicker.warp(frames[1], flow)
    np.testing.assert_allclose(warped[inside], frames[0][inside], atol=1e-6)
    assert inside.sum() == (H - PAN[1]) * (W - PAN[0])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """The input pan; a stable stylization (a fixed colour map of each frame, so it moves
    with the content); the same with independent noise per frame; with a per-frame gain."""
    root = tmp_path_factory.mktemp("flicker")
    frames = pan_clip()
    stable = np.clip(1.0 - frames[..., ::-1] ** 0.7, 0, 1)
    rng = np.random.default_rng(0)
    noisy = np.clip(stable + 0.05 * rng.standard_normal(stable.shape), 0, 1)
    gains = 1.0 + 0.15 * rng.standard_normal((FRAMES, 1, 1, 1))
    flashing = np.clip(stable * gains, 0, 1)
    names = {"input": frames, "stable": stable, "noisy": noisy, "flashing": flashing}
    return {name: write(str(root / f"{name}.mp4"), x) for name, x in names.items()}


def test_noise_and_flashes_score_worse_than_a_stable_output(clips):
    report = flicker.flicker(clips["input"], [clips[k] for k in ("stable", "noisy", "flashing")], 5)
    floor, stable, noisy, flashing = report.short_term
    print(f"short-term {report.short_term}, long-term {report.long_term}")
    assert report.frames == FRAMES and report.gap == 5
    assert 0.8 < report.short_valid <= 1.0 and 0.5 < report.long_valid <= 1.0
    assert stable < 3 * floor + 1e-4  # only the flow's own error
    assert noisy > 5 * stable and noisy > 0.003  # 2 * 0.05^2 = 0.005 before clipping
    assert flashing > 3 * stable
    _, long_stable, long_noisy, long_flashing = report.long_term
    assert long_noisy > 5 * long_stable and long_flashing > 3 * long_stable


def test_cli_table_and_csv(clips, tmp_path, capsys):
    out = tmp_path / "flicker.csv"
    argv = ["--content", clips["input"], "--stylized", clips["stable"]]
    argv += ["--stylized", clips["noisy"], "--long_term_gap", "4", "--csv", str(out)]
    assert flicker.main(argv) == 0
    printed = capsys.readouterr().out
    assert "over 16 frames" in printed and "(4 apart)" in printed
    rows = list(csv.DictReader(open(out)))
    assert [r["clip"] for r in rows] == [clips["input"], clips["stable"], clips["noisy"]]
    assert float(rows[2]["short_term"]) > 5 * float(rows[1]["short_term"])


def test_cli_mismatched_clips_are_one_line(clips, tmp_path, capsys):
    small = write(str(tmp_path / "small.mp4"), pan_clip()[:, :64, :64])
    short = write(str(tmp_path / "short.mp4"), pan_clip()[:10])
    for other, fragment in ((small, "64x64 frames"), (short, "ends after 10 frames")):
        assert flicker.main(["--content", clips["input"], "--stylized", other]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert flicker.main(["--content", str(tmp_path / "none.mp4"), "--stylized", short]) == 2
    assert "no such video file" in capsys.readouterr().err


def test_clip_info_rate_is_exact(clips):
    assert video.probe(clips["input"]).rate == fractions.Fraction(RATE)
