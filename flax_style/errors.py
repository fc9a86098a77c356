"""The one base class of every mistake a user can fix, and the one way entry points report it.

Library code raises a subclass of `UserError` (a bad path, flag, config value, image or weights
file) with a one-line message that names the culprit and the fix. Every command-line entry point
wraps its `main` in `reports_user_errors`, which prints `error: MESSAGE` to stderr and returns
exit status 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any

USAGE_EXIT_STATUS = 2  # what argparse and absl use for a bad command line


class UserError(Exception):
    """A mistake the user can fix; the message is one line naming what is wrong and the fix."""


def reports_user_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wraps an entry point: a `UserError` becomes one `error: ...` line and exit status 2."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return USAGE_EXIT_STATUS

    return wrapped
