"""Files written whole and synced to disk before anything names them (the store then links them into place).

Synced one after the other, two new files cost two journal commits on the usual Linux file systems: each fsync
waits for its own. Starting the writeback of every file first (`sync_file_range`) gets all their blocks on their
way, so the first fsync's commit carries them all and the next ones find little left to wait for. Where that call
is missing (not Linux, not glibc), each file is simply fsynced.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range, do not wait


def _writeback_starter() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        start = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # a libc without it
        return None
    start.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    start.restype = ctypes.c_int
    return start  # type: ignore[no-any-return]


_START_WRITEBACK = _writeback_starter()


def write_synced(paths: Sequence[Path], blobs: Sequence[bytes]) -> None:
    """Create each path (never one that exists), write its blob whole, and return once all of them are on disk. On
    any failure none of the files is left."""
    created: list[Path] = []
    fds: list[int] = []
    try:
        for path, blob in zip(paths, blobs, strict=True):
            fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            created.append(path)
            _write_all(fds[-1], blob)
        if _START_WRITEBACK is not None:
            for fd in fds:
                _START_WRITEBACK(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # (a failure is fine: fsync below is the promise)
        for fd in fds:
            os.fsync(fd)
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        for fd in fds:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
