"""Exclusive locks on files: one process at a time builds a dataset or writes a workdir.

A lock is `flock` on an open file: the kernel releases it when its holder exits, killed or not,
so a lock left behind by a dead process is recognised as stale by construction: it is simply
free. A workdir's holder writes its pid into the file, for the message a second writer gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

from absl import logging


class LockedError(RuntimeError):
    """Another live process holds the lock."""


def _open(path: str) -> int:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode().strip() or "unknown"
    except OSError:
        return "unknown"


def _mark_held(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


@contextlib.contextmanager
def _locked(path: str | os.PathLike, on_busy) -> Iterator[int]:
    """Holds an exclusive flock on `path` (created if missing) for the `with` block; if another
    process holds it, calls on_busy(fd) first, which waits (flock) or raises."""
    fd = _open(os.fspath(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = False
        except BlockingIOError:
            busy = True
        if busy:  # outside the except: a raised error is not chained to BlockingIOError
            on_busy(fd)
        yield fd
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "this") -> Iterator[None]:
    """Holds an exclusive lock on `path` (created if missing) for the `with` block, waiting for
    another holder to finish first. `what` names the work in the message logged while waiting."""
    def wait(fd: int) -> None:
        logging.info("Waiting for another process to finish %s (lock %s).", what, path)
        fcntl.flock(fd, fcntl.LOCK_EX)

    with _locked(path, wait):
        yield


@contextlib.contextmanager
def exclusive_or_fail(path: str | os.PathLike, busy_message: str) -> Iterator[None]:
    """Like `exclusive`, but raises LockedError at once if a live process holds the lock;
    `busy_message` may use {pid} for the holder's pid."""
    def fail(fd: int) -> None:
        raise LockedError(busy_message.format(pid=_holder(fd)))

    with _locked(path, fail) as fd:
        _mark_held(fd)
        yield
