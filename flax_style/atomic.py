"""Files that are complete or absent: written under a temporary name, then renamed into place."""

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def write(path: str) -> Iterator[str]:
    """Yields a temporary name beside `path` (its folder created) to write the file to.

    When the block ends normally the file is renamed to `path` (an atomic replace on POSIX);
    when it raises, it is removed. A reader, or a run killed halfway, never sees a partial file.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
