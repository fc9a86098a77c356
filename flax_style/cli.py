"""The one convention of every flax-style command-line tool.

Flags are absl flags (as `train.py`'s `--config` needs `ml_collections.config_flags`):
`--name=value` or `--name value`, underscores in names (hyphens accepted: `--output-dir`),
`--[no]switch` for booleans, a repeated flag for lists of paths. Each tool defines its flags on
its own `flags.FlagValues` (several tools can live in one process, e.g. pytest) and parses them
with `parse`; a bad flag is a `UsageError`, reported like every other user mistake by
`errors.reports_user_errors`: one line `error: ...` and exit status 2. Every tool that compiles
turns on JAX's persistent compilation cache with `enable_compilation_cache` (moved or disabled
with `FLAX_STYLE_COMPILATION_CACHE`).
"""

import contextlib
import gc
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence

from absl import flags

from flax_style import errors


class UsageError(errors.UserError):
    """A command line that does not parse (unknown flag, bad value, missing required flag)."""


def parse(
    flag_values: flags.FlagValues,
    argv: Sequence[str] | None,
    program: str,
    about: str,
    more_help: Callable[[], str] | None = None,
) -> flags.FlagValues:
    """Parses `argv` (the arguments after the program name; `sys.argv[1:]` when None).

    `--help` prints `about`, the flags and `more_help()`, then exits with status 0.

    Raises:
      UsageError: an unknown flag, a bad value, a missing required flag, a stray argument, a
        config file (`config_flags`) that does not load or a config field that does not exist.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        listing = flag_values.get_help(include_special_flags=False)
        extra = f"\n\n{more_help()}" if more_help else ""
        print(f"usage: {program} [flags]\n\n{about}\n\n{listing}{extra}")
        raise SystemExit(0)
    flag_values.unparse_flags()
    argv = [_underscored(arg, flag_values) for arg in argv]
    try:
        rest = flag_values([program, *argv])
    except flags.Error as error:
        raise UsageError(f"{error} (see {program} --help)") from None
    except (AttributeError, KeyError) as error:  # config_flags: an override of no config field
        raise UsageError(_config_field_message(error, argv, program)) from None
    except Exception as error:  # config_flags runs the config file: anything it raises
        raise UsageError(_config_file_message(error, argv)) from None
    for name in flag_values:  # config_flags defers a failed load to the first attribute access
        try:
            getattr(flag_values[name].value, "to_dict", None)
        except OSError as error:
            raise UsageError(_config_file_message(error, argv)) from None
    if len(rest) > 1:
        raise UsageError(
            f"unexpected argument(s) {' '.join(rest[1:])}: every input is a --flag "
            f"(see {program} --help)"
        )
    return flag_values


def _config_field_message(error: Exception, argv: Sequence[str], program: str) -> str:
    """One line for `--config.optim.lrr=1`, keeping config_flags' "Did you mean" hint."""
    text = str(error)
    suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    named = re.search(r"'([^'\\]+)", text)
    field = suggestion[2] if suggestion else named[1] if named else text
    hint = f"; did you mean {suggestion[1]!r}?" if suggestion else ""
    flag = next((a.split("=", 1)[0] for a in argv if f".{field}" in a.split("=", 1)[0]), None)
    if flag is None:  # e.g. `--config.optim.lr.x=1`: "'float' object has no attribute 'x'"
        return f"a --config override: {' '.join(text.split())} (see {program} --help)"
    return f"{flag}: the config has no field {field!r}{hint} (see {program} --help)"


def _config_file_message(error: Exception, argv: Sequence[str]) -> str:
    """One line for a `--config` file that is missing or raises while loading."""
    text = " ".join(str(error).split())
    path = flag_value(argv, "config")
    if isinstance(error, OSError) and "No such file" in text:
        return f"--config {path}: no such config file; e.g. --config configs/default.py"
    return f"--config {path}: the config file does not load ({type(error).__name__}: {text[:200]})"


def flag_value(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name=VALUE` or `--name VALUE` in `argv` before parsing (the first)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _underscored(arg: str, flag_values: flags.FlagValues) -> str:
    """`--output-dir=x` -> `--output_dir=x` when that is a flag: the hyphenated spelling of
    GNU-style tools (and of this project's earlier releases) keeps working."""
    if not arg.startswith("--") or "-" not in arg[2:].split("=", 1)[0]:
        return arg
    name, sep, value = arg[2:].partition("=")
    for prefix in ("", "no"):  # --no-random-flip -> --norandom_flip
        spelled = name.removeprefix(prefix + "-") if prefix else name
        underscored = spelled.replace("-", "_")
        if underscored in flag_values:
            return f"--{prefix}{underscored}{sep}{value}"
    return arg


def check_writable_dir(path: str, flag: str) -> None:
    """Checks that the output folder `path` can be created (or exists) and be written into,
    without creating it: before the slow part of a tool, so a typo or a read-only place costs
    seconds, and a failed run leaves nothing behind.

    Raises:
      UsageError: `path` (or a folder above it) is a file, or files cannot be written there.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if os.path.isfile(path):
        raise UsageError(f"--{flag} {path}: is a file, not a folder; pick another path")
    try:
        if not os.path.isdir(existing):
            raise NotADirectoryError(20, os.strerror(20))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(
            f"--{flag} {path}: cannot write there ({error.strerror}); pick a writable folder"
        ) from None


def int_list(values: Sequence[str], flag: str) -> list[int]:
    """The integers of a comma-separated list flag (`--sizes=256,512`).

    Raises:
      UsageError: an item that is not an integer.
    """
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--{flag}={','.join(values)}: expected integers, e.g. 256,512") from None


@contextlib.contextmanager
def startup_imports() -> Iterator[None]:
    """A tool's imports of JAX and the libraries built on it, with Python's cyclic garbage
    collector paused; what they built is then frozen (`gc.freeze`: never scanned again). The
    collections during those imports, and the last one at exit, would otherwise walk several
    hundred thousand objects: about 0.3 s of a small job's whole process."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


CACHE_ENV = "FLAX_STYLE_COMPILATION_CACHE"  # a directory, or "off"
_CACHE_OFF = ("", "0", "off", "none", "false", "no")


def compilation_cache_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """Where compiled programs are cached: `$FLAX_STYLE_COMPILATION_CACHE`, else JAX's own
    `JAX_COMPILATION_CACHE_DIR`, else `$XDG_CACHE_HOME/flax-style/jax` (`~/.cache/...`);
    None when `FLAX_STYLE_COMPILATION_CACHE=off`."""
    environ = os.environ if environ is None else environ
    value = environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _CACHE_OFF else os.path.expanduser(value)
    if environ.get("JAX_COMPILATION_CACHE_DIR"):
        return environ["JAX_COMPILATION_CACHE_DIR"]
    cache_home = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_home, "flax-style", "jax")


def enable_compilation_cache(environ: Mapping[str, str] | None = None) -> str | None:
    """Turns JAX's persistent compilation cache on (or off) for this process; call before the
    first computation. A repeated run with the same shapes then loads its programs instead of
    compiling them (most of a small job's time on a CPU). Returns the directory, or None."""
    import jax  # here: tools import jax only after their flags parse

    directory = compilation_cache_dir(environ)
    jax.config.update("jax_enable_compilation_cache", directory is not None)
    if directory is not None:
        jax.config.update("jax_compilation_cache_dir", directory)
        # Cache every program: a small job's many sub-second compilations add up to seconds.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
