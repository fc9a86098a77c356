"""The persistent compilation cache of the tools: where it lives, that a repeated run in a fresh
process compiles nothing, and that it can be turned off."""

import os
import subprocess
import sys

import numpy as np
import pytest

from flax_style import checkpoint, cli, image_io
from tests.test_stylize import CONFIG, make_stylizer, random_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cache_dir_from_environment():
    home = os.path.expanduser("~")
    assert cli.compilation_cache_dir({}) == os.path.join(home, ".cache", "flax-style", "jax")
    assert cli.compilation_cache_dir({"XDG_CACHE_HOME": "/x"}) == "/x/flax-style/jax"
    assert cli.compilation_cache_dir({"JAX_COMPILATION_CACHE_DIR": "/j"}) == "/j"
    moved = {cli.CACHE_ENV: "/c", "JAX_COMPILATION_CACHE_DIR": "/j"}
    assert cli.compilation_cache_dir(moved) == "/c"
    for off in ("off", "OFF", "0", "", "none"):
        assert cli.compilation_cache_dir({cli.CACHE_ENV: off, "XDG_CACHE_HOME": "/x"}) is None


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_pair")
    stylizer = make_stylizer()
    checkpoint.save_model(str(root / "ckpt"), stylizer.params, stylizer.encoder_params, CONFIG)
    image_io.save_image(str(root / "c.png"), random_image(0))
    image_io.save_image(str(root / "s.png"), random_image(1))
    return root


def _infer(pair, out, env_update):
    env = {**os.environ, **env_update}
    args = ["--checkpoint", pair / "ckpt", "--content", pair / "c.png", "--style", pair / "s.png"]
    result = subprocess.run(
        [sys.executable, "infer.py", *map(str, args), "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return np.load(out)


def _entries(directory) -> set[str]:
    return set(os.listdir(directory)) if os.path.isdir(directory) else set()


def test_second_run_compiles_nothing(pair, tmp_path):
    """First run fills the cache; a second fresh process writes no new entry (every program it
    needed came from the cache: with the size and time thresholds at 0, any compilation would
    have been written) and gives the same result."""
    cache = tmp_path / "cache"
    env = {cli.CACHE_ENV: str(cache)}
    first = _infer(pair, tmp_path / "a.npy", env)
    after_first = _entries(cache)
    assert any("stylize" in name or "fused" in name or "mix" in name for name in after_first), (
        sorted(after_first)
    )
    second = _infer(pair, tmp_path / "b.npy", env)
    assert _entries(cache) == after_first
    np.testing.assert_array_equal(first, second)


def test_cache_off(pair, tmp_path):
    """`FLAX_STYLE_COMPILATION_CACHE=off`: nothing written under the default location."""
    xdg = tmp_path / "xdg"
    _infer(pair, tmp_path / "a.npy", {cli.CACHE_ENV: "off", "XDG_CACHE_HOME": str(xdg)})
    assert not xdg.exists()
    default = {"XDG_CACHE_HOME": str(xdg)}
    env = {k: v for k, v in os.environ.items() if k != cli.CACHE_ENV}
    result = subprocess.run(
        [sys.executable, "-c", "from flax_style import cli; print(cli.enable_compilation_cache())"],
        cwd=ROOT,
        env={**env, **default},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(xdg / "flax-style" / "jax")
