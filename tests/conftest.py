"""Test setup: two fake CPU devices (for data-parallel tests) before jax is imported."""

import os

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tools turn on JAX's persistent compilation cache; tests that call them in-process must
# not write to the user's cache directory (test_compilation_cache.py sets its own).
os.environ.setdefault("FLAX_STYLE_COMPILATION_CACHE", "off")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """The tiny random model of test_stylize.py saved as a real checkpoint (a directory)."""
    from flax_style import checkpoint  # here, not above: jax starts after XLA_FLAGS is set
    from tests.test_stylize import CONFIG, make_stylizer

    stylizer = make_stylizer()
    root = str(tmp_path_factory.mktemp("ckpt"))
    checkpoint.save_model(root, stylizer.params, stylizer.encoder_params, CONFIG)
    return root
