"""An exclusive lock on a file, for work that one process at a time may do (building a dataset).

The lock is `flock` on an open file: the kernel releases it when its holder exits, killed or not,
so a lock left behind by a dead process never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

from absl import logging


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "this") -> Iterator[None]:
    """Holds an exclusive lock on `path` (created if missing) for the `with` block, waiting for
    another holder to finish first. `what` names the work in the message logged while waiting."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.info("Waiting for another process to finish %s (lock %s).", what, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
