"""The one convention of every flax-style command-line tool.

Flags are absl flags (as `train.py`'s `--config` needs `ml_collections.config_flags`):
`--name=value` or `--name value`, underscores in names, `--[no]switch` for booleans, a repeated
flag for lists of paths. Each tool defines its flags on its own `flags.FlagValues` (so several
tools can live in one process, e.g. the tests) and parses them with `parse`; a bad flag is a
`UsageError`, reported like every other user mistake by `errors.reports_user_errors`: one line
`error: ...` and exit status 2.
"""

import sys
from collections.abc import Sequence

from absl import flags

from flax_style import errors


class UsageError(errors.UserError):
    """A command line that does not parse (unknown flag, bad value, missing required flag)."""


def parse(
    flag_values: flags.FlagValues, argv: Sequence[str] | None, program: str, about: str
) -> flags.FlagValues:
    """Parses `argv` (the arguments after the program name; `sys.argv[1:]` when None).

    `--help` prints `about` and the flags, then exits with status 0.

    Raises:
      UsageError: an unknown flag, a bad value, a missing required flag, a stray argument.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        listing = flag_values.get_help(include_special_flags=False)
        print(f"usage: {program} [flags]\n\n{about}\n\n{listing}")
        raise SystemExit(0)
    flag_values.unparse_flags()
    try:
        rest = flag_values([program, *argv])
    except flags.Error as error:
        raise UsageError(f"{error} (see {program} --help)") from None
    if len(rest) > 1:
        raise UsageError(
            f"unexpected argument(s) {' '.join(rest[1:])}: every input is a --flag "
            f"(see {program} --help)"
        )
    return flag_values


def int_list(values: Sequence[str], flag: str) -> list[int]:
    """The integers of a comma-separated list flag (`--sizes=256,512`).

    Raises:
      UsageError: an item that is not an integer.
    """
    try:
        return [int(v) for v in values]
    except ValueError:
        raise UsageError(f"--{flag}={','.join(values)}: expected integers, e.g. 256,512") from None
