"""`python -m flax_style.demo`: the page served on 127.0.0.1 and called through gradio_client.

A tiny random model saved as a real checkpoint. The client uploads PNG files as a browser does;
its result must be the library's (`Stylizer.stylize_mix`) on the same pixels, written the way
`infer.py` writes images. (The real-browser check is `scripts/demo_browser_check.sh`.)
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")

from flax_style import demo, image_io, stylize  # noqa: E402
from tests.test_stylize import HW, random_image  # noqa: E402

MAX_SIDE = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(ckpt):
    page = demo.build_demo(stylize.load_stylizer(ckpt), MAX_SIDE)
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        page.close()


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def as_written(image: np.ndarray) -> np.ndarray:
    """How `infer.py` writes an image: clipped, x255 truncated to uint8."""
    return (np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def test_two_styles_alpha_preserve_color_equal_the_library(ckpt, client, tmp_path):
    paths = {name: str(tmp_path / f"{name}.png") for name in ("content", "style", "style2")}
    for seed, path in enumerate(paths.values()):
        image_io.save_image(path, random_image(40 + seed))
    handle = gradio_client.handle_file
    out = client.predict(
        handle(paths["content"]),
        handle(paths["style"]),
        handle(paths["style2"]),
        0.25,  # second style weight
        0.6,  # alpha
        True,  # preserve colour
        api_name=f"/{demo.API_NAME}",
    )
    expected = stylize.load_stylizer(ckpt).stylize_mix(
        image_io.load_image(paths["content"]),
        [image_io.load_image(paths["style"]), image_io.load_image(paths["style2"])],
        weights=[0.75, 0.25],
        alpha=0.6,
        preserve_color=True,
    )
    result = pixels(out)
    assert result.shape == (*HW, 3)
    np.testing.assert_array_equal(result, as_written(expected))


def test_large_upload_is_resized_and_small_refused(ckpt, client, tmp_path):
    big, small, style = (str(tmp_path / f"{n}.png") for n in ("big", "small", "style"))
    image_io.save_image(big, random_image(50, (80, 100)))
    image_io.save_image(small, random_image(51, (12, 40)))
    image_io.save_image(style, random_image(52))
    handle = gradio_client.handle_file
    args = (None, 0.5, 1.0, False)
    out = client.predict(handle(big), handle(style), *args, api_name=f"/{demo.API_NAME}")
    assert pixels(out).shape == (51, MAX_SIDE, 3)  # longer side 100 -> 64, aspect kept
    with pytest.raises(Exception, match="at least 17 per side"):
        client.predict(handle(small), handle(style), *args, api_name=f"/{demo.API_NAME}")


def test_bad_checkpoint_stops_before_serving(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flax_style.demo", "--checkpoint", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "missing" in result.stderr, result.stderr
    assert "Running on" not in result.stdout
