"""Compiled programs kept on disk between runs, so that a repeated small job skips the tracing.

JAX's persistent compilation cache (`cli.enable_compilation_cache`) saves the XLA compilation,
but every process still traces the Flax model and lowers it to find the cache entry: about
0.4 s of a 512x512 single-pair run on a CPU. `call` also stores the compiled executable itself
(`jax.experimental.serialize_executable`, as MaxText's ahead-of-time compilation does) and
loads it in a later process instead of tracing.

An entry is found by a key of everything the program depends on: the versions of jax, jaxlib
and flax, the devices, the hash of this package's source files, the program's name and model
config, and the shapes, dtypes and tree of its arguments. It lives in
`<compilation cache>/flax-style-executables/`, so it is on, moved and off with the compilation
cache (`FLAX_STYLE_COMPILATION_CACHE`). An entry that no longer loads is compiled again and
replaced. Only single-process runs use it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import pickle
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import serialize_executable

from flax_style import atomic

SUBDIRECTORY = "flax-style-executables"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def directory() -> str | None:
    """Where executables are stored: beside JAX's compilation cache; None when that is off."""
    if not jax.config.jax_enable_compilation_cache or not jax.config.jax_compilation_cache_dir:
        return None
    return os.path.join(jax.config.jax_compilation_cache_dir, SUBDIRECTORY)


@functools.cache
def _environment_fingerprint() -> str:
    """The libraries, the devices and this package's source: what a program was built from."""
    digest = hashlib.sha256()
    for package in ("jax", "jaxlib", "flax"):
        digest.update(f"{package}={importlib.metadata.version(package)};".encode())
    digest.update(repr([(d.platform, d.device_kind, d.id) for d in jax.devices()]).encode())
    for root, dirs, files in os.walk(_PACKAGE_DIR):
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            with open(os.path.join(root, name), "rb") as source:
                digest.update(name.encode() + source.read())
    return digest.hexdigest()


def _signature(leaf: Any) -> tuple:
    """What a compiled program fixes of an argument: shape, dtype, weak type, placement."""
    sharding = getattr(leaf, "sharding", None)
    weak = getattr(leaf, "weak_type", isinstance(leaf, (int, float, bool)))
    return np.shape(leaf), str(jax.numpy.result_type(leaf)), weak, str(sharding)


def entry_path(store: str, program: str, args: tuple, static: dict[str, Any]) -> str:
    """The file of `program` (its name and whatever else identifies it, e.g. the model config)
    called with `args` and the static arguments `static`."""
    leaves, tree = jax.tree.flatten(args)
    key = repr((_environment_fingerprint(), program, str(tree), [_signature(x) for x in leaves]))
    key += repr(sorted(static.items()))
    return os.path.join(store, hashlib.sha256(key.encode()).hexdigest() + ".executable")


def call(jitted: Callable, program: str, memo: dict, *args: Any, **static: Any) -> Any:
    """`jitted(*args, **static)`, through a compiled executable found in `memo` (this process),
    on disk (if it accepts `args`), or compiled (then kept in both).

    Args:
      jitted: the `jax.jit` function.
      program: a string identifying what `jitted` computes beyond its arguments (its name and
        the model config): part of the key.
      memo: this process's executables by entry key; the caller keeps it.
    """
    store = directory() if jax.process_count() == 1 else None
    key = entry_path(store or "", program, args, static)
    if key not in memo and store:
        loaded = _load(key)
        try:
            out = loaded(*args) if loaded is not None else None
        except (TypeError, ValueError):  # arguments it was not built for: compile instead
            out = loaded = None
        if loaded is not None:
            memo[key] = loaded
            return out
    if key not in memo:
        memo[key] = jitted.lower(*args, **static).compile()
        if store:
            _save(key, memo[key])
    return memo[key](*args)


def _load(path: str) -> jax.stages.Compiled | None:
    try:
        with open(path, "rb") as entry:
            payload, in_tree, out_tree, device_ids = pickle.load(entry)
        devices = {device.id: device for device in jax.devices()}
        return serialize_executable.deserialize_and_load(
            payload, in_tree, out_tree, execution_devices=[devices[i] for i in device_ids]
        )
    except Exception:  # none yet, or truncated, or foreign: compile (again) and store it
        return None


def _save(path: str, compiled: jax.stages.Compiled) -> None:
    """Writes the entry whole or not at all (`atomic.write`); a read-only cache or a program that
    cannot be serialized is simply not stored."""
    shardings = jax.tree.leaves(compiled.input_shardings)
    device_ids = sorted({device.id for sharding in shardings for device in sharding.device_set})
    try:
        payload = pickle.dumps((*serialize_executable.serialize(compiled), device_ids))
    except (ValueError, NotImplementedError, pickle.PicklingError):
        return
    try:
        with atomic.write(path) as temporary, open(temporary, "wb") as entry:
            entry.write(payload)
    except OSError:
        pass
