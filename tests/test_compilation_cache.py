"""The persistent compilation cache of the tools: where it lives, that a repeated run in a fresh
process compiles and traces nothing (the stored executables), and that it can be turned off."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

from flax_style import checkpoint, cli, executable_cache, image_io, stylize
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
    executables = _entries(cache / executable_cache.SUBDIRECTORY)
    assert len(executables) == 1, sorted(executables)  # the single-pair program
    second = _infer(pair, tmp_path / "b.npy", env)
    assert _entries(cache) == after_first
    assert _entries(cache / executable_cache.SUBDIRECTORY) == executables
    np.testing.assert_array_equal(first, second)


def _fresh_program_output(content, style) -> tuple[np.ndarray, int]:
    """Stylizes with a new program object, as a new process would have: (pixels, traces)."""
    stylize._program.cache_clear()
    stylizer = make_stylizer(calibrate=False)
    out = stylizer.stylize(content, style)
    return out, stylizer.traces["fused"]


def test_stored_executable_skips_tracing(tmp_path, monkeypatch):
    """A new program finds the executable an earlier one stored and runs it without tracing the
    model, to the same pixels; a damaged entry is compiled again and replaced; another source
    (a changed package) gets its own entry."""
    store = tmp_path / executable_cache.SUBDIRECTORY
    monkeypatch.setattr(executable_cache, "directory", lambda: str(store))
    content, style = random_image(0), random_image(1)
    try:
        first, traces = _fresh_program_output(content, style)
        assert traces == 1
        (entry,) = store.iterdir()
        second, traces = _fresh_program_output(content, style)
        assert traces == 0
        np.testing.assert_array_equal(second, first)
        entry.write_bytes(entry.read_bytes()[:1000])  # a truncated entry
        third, traces = _fresh_program_output(content, style)
        assert traces == 1
        np.testing.assert_array_equal(third, first)
        assert _fresh_program_output(content, style)[1] == 0  # replaced by a whole one
        monkeypatch.setattr(executable_cache, "_environment_fingerprint", lambda: "other")
        assert _fresh_program_output(content, style)[1] == 1
        assert len(list(store.iterdir())) == 2
    finally:
        stylize._program.cache_clear()  # no program of this test outlives it


def test_startup_imports_pause_and_resume_collection():
    assert gc.isenabled()
    with pytest.raises(ImportError):
        with cli.startup_imports():
            assert not gc.isenabled()
            import flax_style_no_such_module  # noqa: F401
    assert gc.isenabled()


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
