"""The view's changes to the output folder, one at a time and in place: the lock that puts them in a row, and the
move that Hide and Restore make (an image and its sidecar, between the output folder and its hidden folder).

Why a lock. Each change is several steps: a pick reads a sidecar and writes it back; a move reserves two names and
renames two files. Two hosts, two views or two replicas acting at once would interleave them (a pick written
between a hide's steps is lost; two hides of one image leave two copies). `changing` holds, for one output folder,
a lock of this process's threads and a lock of every process on this machine that uses the folder (flock on the
folder itself: no lock file, so a refused change leaves the folder exactly as it was). Each change takes
milliseconds; one that waits longer than WAIT_S for another is refused, in words, with nothing changed.

Why directory descriptors. The folders sit where others may write: a hidden folder checked by path and then used by
path can be swapped for a link to elsewhere in between. `changing` opens the output folder and its hidden folder
once, refusing links (O_NOFOLLOW), and every step after is relative to those descriptors: what was checked is what
is used. (Windows has no such calls: there, names are used by path, checked with lstat.)

Why reserve, then rename. A move never writes over a file: each new name is first created empty and exclusively
(it fails if the name is taken, by anything, a link included), then the file is renamed onto its reservation. The
same way every file system (hard links or none) and the way the store's saves go. A failure puts back what was
moved and removes only what is still its own reservation. The sidecar moves before its image: a process killed in
between leaves a real sidecar beside a reserved image name, never a reserved sidecar beside a real image (which
the output folder's sweep would remove together).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import store
from .errors import StorageError

log = logging.getLogger("flux_klein_mcp")

#: How long a change waits for the one under way on the same folder (each takes milliseconds, an fsync included).
WAIT_S = 5.0
#: Whether this platform has the *at() calls (all but Windows); without them names are used by path.
_AT = all(f in os.supports_dir_fd for f in (os.open, os.rename, os.stat, os.unlink, os.mkdir)) \
    and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
_told_no_locks: set[str] = set()


@dataclass(frozen=True)
class Folder:
    """A folder opened once: every name in it is used relative to `fd` (None on Windows: by path)."""

    path: Path
    fd: int | None

    def at(self, name: str) -> str:
        """What to pass, with `dir_fd=self.fd`, for `name` in this folder."""
        return name if self.fd is not None else str(self.path / name)

    def lstat(self, name: str) -> os.stat_result | None:
        """`name` itself (a link not followed), or None when nothing has that name."""
        try:
            return os.stat(self.at(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def is_plain_file(self, name: str) -> bool:
        info = self.lstat(name)
        return info is not None and stat.S_ISREG(info.st_mode)


@contextlib.contextmanager
def changing(folder: Path) -> Iterator[Folder]:
    """The output folder `folder`, opened, while no other change to it is under way in this process or another on
    this machine; StorageError (nothing changed) when another change holds it longer than WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    with _thread_locks_guard:
        in_process = _thread_locks.setdefault(os.path.realpath(folder), threading.Lock())
    if not in_process.acquire(timeout=WAIT_S):
        raise StorageError(_busy(folder))
    try:
        with contextlib.ExitStack() as opened:
            output = _open(folder, None, opened, f"The output folder {folder} is not a folder any more (a link or a "
                           "file has its name); nothing was changed. Put the folder back, then try again.")
            _lock_processes(output, deadline)
            yield output
    finally:
        in_process.release()


@contextlib.contextmanager
def hidden_in(output: Folder, *, make: bool) -> Iterator[Folder | None]:
    """The hidden folder in `output` (a Folder from `changing`), opened; made if missing and `make`, else None.
    StorageError when a link or a file has its name."""
    path = output.path / store.HIDDEN_DIR
    if make:
        try:
            os.mkdir(output.at(store.HIDDEN_DIR), 0o755, dir_fd=output.fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StorageError(f"Could not make {path} ({exc.strerror or exc}), where the view keeps hidden "
                               "images; nothing was changed. Check the folder's permissions.") from exc
    elif output.lstat(store.HIDDEN_DIR) is None:
        yield None
        return
    with contextlib.ExitStack() as opened:
        yield _open(path, output, opened, f"{path} is not a folder (a link or a file has its name), so nothing can "
                    "be hidden there or restored from it. Move it away, then try again.")


def _open(path: Path, parent: Folder | None, opened: contextlib.ExitStack, not_a_folder: str) -> Folder:
    """`path` opened as a folder, never through a link (relative to `parent` when given)."""
    try:
        if not _AT:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise StorageError(not_a_folder)
            return Folder(path, None)
        fd = os.open(path.name if parent else path, _FOLDER_FLAGS, dir_fd=parent.fd if parent else None)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):  # (EMLINK: FreeBSD's word for a link there)
            raise StorageError(not_a_folder) from None
        raise StorageError(f"Could not open {path} ({exc.strerror or exc}); nothing was changed.") from exc
    opened.callback(os.close, fd)
    return Folder(path, fd)


def _lock_processes(output: Folder, deadline: float) -> None:
    """Hold the lock every process on this machine takes for this folder (flock on its descriptor: released when
    that closes, or the process ends)."""
    if sys.platform == "win32" or output.fd is None:  # pragma: no cover - no flock: threads are still in a row
        return
    import fcntl

    pause = 0.005
    while True:
        try:
            fcntl.flock(output.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:  # another process is changing the folder: poll (flock has no timeout)
            if time.monotonic() >= deadline:
                raise StorageError(_busy(output.path)) from None
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        except OSError as exc:  # a file system without locks: this process's changes are still one at a time
            if str(output.path) not in _told_no_locks:
                _told_no_locks.add(str(output.path))
                log.warning("%s cannot be locked (%s): changes to it from other processes are not kept in a row",
                            output.path, exc.strerror or exc)
            return


def _busy(folder: Path) -> str:
    return (f"Another change to the images in {folder} is still under way (from this server or another one using the "
            "folder); nothing was changed. Try again in a moment.")


def move(src: Folder, names: Sequence[str], dst: Folder, finals: Sequence[str]) -> bool:
    """Rename each of `names` in `src` to the matching one of `finals` in `dst`, never over anything: False, with
    nothing moved, when one of `finals` is taken. Links are moved, never followed. Run inside `changing`."""
    reserved: dict[str, tuple[int, int]] = {}
    moved: list[tuple[str, str]] = []
    try:
        for final in finals:
            mine = _reserve(dst, final)
            if mine is None:
                return False
            reserved[final] = mine
        for name, final in zip(names, finals, strict=True):
            os.replace(src.at(name), dst.at(final), src_dir_fd=src.fd, dst_dir_fd=dst.fd)
            moved.append((name, final))
            del reserved[final]
        return True
    except BaseException:
        _put_back(src, dst, moved)
        raise
    finally:
        for final, mine in reserved.items():
            _unreserve(dst, final, mine)


def _reserve(folder: Folder, name: str) -> tuple[int, int] | None:
    """Create `name` in `folder`, only if nothing has that name; its identity (device, inode), or None if taken.
    It holds the store's reservation mark, so the sweep knows what a kill left."""
    try:
        fd = os.open(folder.at(name), _NEW_FLAGS, 0o644, dir_fd=folder.fd)
    except FileExistsError:
        return None
    try:
        os.write(fd, store._RESERVED + f"{store._HOST} {os.getpid()}\n".encode())
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(folder.at(name), dir_fd=folder.fd)
        raise
    os.close(fd)
    return info.st_dev, info.st_ino


def _unreserve(folder: Folder, name: str, mine: tuple[int, int]) -> None:
    """Remove `name` if it is still the reservation `mine` made (a file renamed onto it is never removed)."""
    with contextlib.suppress(OSError):
        info = folder.lstat(name)
        if info is not None and (info.st_dev, info.st_ino) == mine:
            os.unlink(folder.at(name), dir_fd=folder.fd)


def _put_back(src: Folder, dst: Folder, moved: list[tuple[str, str]]) -> None:
    """Undo the renames of a move that failed half-way, each onto its old name if that is still free (a file that
    cannot go back stays whole under its new name)."""
    for name, final in reversed(moved):
        try:
            mine = _reserve(src, name)
        except OSError:
            mine = None
        if mine is None:
            log.warning("%s could not go back to %s after a failed move", dst.path / final, src.path / name)
            continue
        try:
            os.replace(dst.at(final), src.at(name), src_dir_fd=dst.fd, dst_dir_fd=src.fd)
        except OSError as exc:
            _unreserve(src, name, mine)
            log.warning("%s could not go back to %s after a failed move (%s)", dst.path / final, src.path / name,
                        exc.strerror or exc)
