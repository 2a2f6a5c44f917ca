"""Reading a file a user names without ever waiting on it: opening a FIFO blocks until
something writes to it, and a device may never end, so only regular files are read. The file
is opened without blocking and its open handle checked, so a swap between a check and the read
cannot turn the read into a wait."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vbg.errors import VbgError


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISDIR(mode):
        return "is a folder"
    return f"is {'a FIFO (named pipe)' if stat.S_ISFIFO(mode) else 'a special file'}, not a regular file"


def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))


def not_regular(path: Path) -> str:
    """Why ``path`` cannot be read as a file without waiting ('' when it can, or when it cannot be
    opened at all: the reader then says why)."""
    try:
        fd = _open(path)
    except IsADirectoryError:
        return "is a folder"
    except OSError:
        return ""
    try:
        return _kind(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def open_regular(path: Path, what: str) -> int:
    """A descriptor of the regular file ``path`` (the caller closes it), or a one-line
    :class:`VbgError` naming ``what`` it is."""
    try:
        fd = _open(path)
    except IsADirectoryError:
        raise VbgError(f"{what} {path} is a folder") from None
    except FileNotFoundError:
        raise VbgError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise VbgError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    kind = _kind(os.fstat(fd).st_mode)
    if kind:
        os.close(fd)
        raise VbgError(f"{what} {path} {kind}")
    return fd


def read_regular(path: Path, what: str) -> bytes:
    """The bytes of the regular file ``path``, or a one-line :class:`VbgError` naming ``what`` it is."""
    with os.fdopen(open_regular(path, what), "rb") as file:
        return file.read()
