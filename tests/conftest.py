"""Test setup: two fake CPU devices (for data-parallel tests) before jax is imported."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tools turn on JAX's persistent compilation cache; tests that call them in-process must
# not write to the user's cache directory (test_compilation_cache.py sets its own).
os.environ.setdefault("FLAX_STYLE_COMPILATION_CACHE", "off")
