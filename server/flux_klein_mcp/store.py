"""The output folder: safe names, whole-or-nothing writes that never overwrite, and a JSON sidecar per image."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .durable import write_synced
from .errors import StorageError
from .words import either, plural

log = logging.getLogger("flux_klein_mcp")

# Formats we accept and write, by Pillow format name: (MIME type, file extension).
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}

SLUG_MAX = 48
#: Where else the images can go, in each audience's terms.
_ELSEWHERE = either("set FLUX_KLEIN_OUTPUT_DIR to another folder and restart the server",
                    "choose another folder with --output-dir")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def ascii_fold(text: str) -> str:
    """`text` in ASCII as a file name spells it: compatibility forms and accents folded, everything else dropped."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def slugify(text: str, max_len: int = SLUG_MAX) -> str:
    """Lowercase ASCII letters, digits and single hyphens; cut at a word; "image" when nothing is left."""
    ascii_text = ascii_fold(text).lower()
    words = "".join(c if c.isalnum() else " " for c in ascii_text).split()
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > max_len:
            slug = slug or word[:max_len]
            break
        slug = candidate
    return slug or "image"


def name_stem(filename: str | None, prompt: str) -> str:
    """The user's `filename` (last path part only, image extension dropped) or the prompt, as a slug."""
    if filename and filename.strip():
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        if base.lower().endswith(_IMAGE_SUFFIXES):
            base = base.rsplit(".", 1)[0]
        return slugify(base)
    return slugify(prompt)


def file_stem(now: datetime, stem: str, index: int | None) -> str:
    """`YYYYmmdd-HHMMSS-<stem>[-i]`: `index` (1-based) only when a call makes several images."""
    return f"{now:%Y%m%d-%H%M%S}-{stem}" + (f"-{index}" if index is not None else "")


def user_output_dir() -> Path:
    """A per-user folder for when the working directory cannot take files (some hosts start servers in /)."""
    return user_folder("XDG_DATA_HOME", ".local/share") / "output"


def user_folder(xdg_variable: str, xdg_default: str) -> Path:
    """This program's per-user folder: `$XDG_...` (or `~/<xdg_default>`) on Linux, the platform's equivalent
    elsewhere."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get(xdg_variable) or home / xdg_default)
    return base / "flux-klein-mcp"


@dataclass(frozen=True)
class SavedFile:
    path: Path
    sidecar: Path
    bytes: int

    @property
    def uri(self) -> str:
        return self.path.as_uri()


@dataclass(frozen=True)
class Staged:
    """An image and its sidecar in temporary files of the output folder, waiting for their names."""

    folder: Path
    image: Path
    sidecar: Path
    bytes: int

    def discard(self) -> None:
        """Remove the temporary files (after `commit` has linked them, or when the image is not kept)."""
        _unlink_all([self.image, self.sidecar])


class Store:
    """Writes images and sidecars into one folder, resolved on first use and checked again before every call."""

    def __init__(self, folder: Path, *, explicit: bool, fallback: Path | None = None) -> None:
        self._wanted = folder
        self._explicit = explicit
        self._fallback = fallback if fallback is not None else user_output_dir()
        self._folder: Path | None = None
        self._real = ""  # where the folder led when first used
        #: Whether this process may recreate the folder if it vanishes: it made it, or it is the default one.
        self._ours = False
        #: False once the file system has refused a hard link: names are then claimed by reserve-and-rename.
        self._links = True
        self.note: str | None = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """The folder in use, created if needed; falls back to a per-user folder when the default is unwritable."""
        with self._lock:
            if self._folder is None:
                self._folder = self._resolve()
                self._real = os.path.realpath(self._folder)
                sweep(self._folder)
            return self._folder

    def ready(self) -> Path:
        """The folder, checked to be there (see `present`) and to take files: run before any spend, since a save
        that is bound to fail must not be paid for."""
        folder = self.present()
        with self._lock:
            try:
                _probe(folder)
                too_small = room(folder)
            except OSError as exc:
                raise StorageError(
                    f"The output folder {folder} does not take files ({_why(exc)}). Nothing was sent. Free some "
                    "space or set FLUX_KLEIN_OUTPUT_DIR to a folder you can write to."
                ) from exc
            if too_small is not None:
                raise StorageError(f"The output folder {folder} {too_small}, too little to save images. Nothing was "
                                   "sent. Free some space or set FLUX_KLEIN_OUTPUT_DIR to another folder.")
        return folder

    def present(self) -> Path:
        """The folder, checked to be there and to be the one first used, not since replaced by a link to somewhere
        else (its files are readable inputs, and the view lists them). A folder that vanished is made again when
        it is ours to make."""
        folder = self.folder
        with self._lock:
            if not folder.is_dir() and self._ours:
                with contextlib.suppress(OSError):
                    folder.mkdir(parents=True, exist_ok=True)
            if not folder.is_dir():
                raise StorageError(
                    f"The output folder {folder} has disappeared (moved or deleted while the server ran). Create "
                    f"it again, or {_ELSEWHERE}."
                )
            self._same_folder(folder, "Nothing was sent. ")
        return folder

    def _same_folder(self, folder: Path, sent: str = "") -> None:
        if os.path.realpath(folder) != self._real:
            raise StorageError(
                f"The output folder {folder} now leads to {os.path.realpath(folder)} (replaced by a link while the "
                f"server ran). {sent}Put the folder back, or {_ELSEWHERE}."
            )

    def _resolve(self) -> Path:
        try:
            return self._writable(self._wanted, ours=not self._explicit)
        except OSError as exc:
            if self._explicit:
                raise StorageError(
                    f"Cannot write to the output folder {self._wanted} ({exc.strerror or exc}). "
                    "Set FLUX_KLEIN_OUTPUT_DIR to a folder you can write to."
                ) from exc
            wanted = self._wanted
        try:
            folder = self._writable(self._fallback, ours=True)
        except OSError as exc:
            raise StorageError(
                f"Cannot write to {wanted} nor to {self._fallback} ({exc.strerror or exc}). "
                "Set FLUX_KLEIN_OUTPUT_DIR to a folder you can write to."
            ) from exc
        self.note = (
            f"The working directory's output folder {wanted} is not writable, so images were saved in {folder}. "
            f"Set FLUX_KLEIN_OUTPUT_DIR{either('', ' or pass --output-dir')} to choose the folder."
        )
        return folder

    def _writable(self, folder: Path, *, ours: bool) -> Path:
        existed = folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        _probe(folder)
        self._ours = ours or not existed
        return folder.resolve()

    def save(self, data: bytes, extension: str, stem: str, sidecar: Mapping[str, Any]) -> SavedFile:
        """Write `<stem>.<ext>` and `<stem>.json` whole, under a name nothing else holds (`_2`, `_3` ... if taken).

        Both are written to temporary files first (`stage`), then given their names (`commit`): by hard links where
        the file system has them (atomic, never overwriting), else by reserving each name and renaming the finished
        file onto the reservation. Either way a failure removes whatever this save named, and the folder is left as
        it was.
        """
        return self.commit(self.stage(data, sidecar), extension, stem)

    def stage(self, data: bytes, sidecar: Mapping[str, Any]) -> Staged:
        """The image and its sidecar written whole to temporary files and synced to disk, not yet named: the
        pipeline writes them while it checks the image, and names them (`commit`) or removes them (`Staged.discard`)
        after. A kill in between leaves only temporary files, which the next start sweeps."""
        folder = self.folder
        self._same_folder(folder)  # (and again as they are named: a link may be swapped in meanwhile)
        sidecar_bytes = json_bytes(sidecar)
        temps = [_temp_name(folder), _temp_name(folder)]
        try:
            write_synced(temps, [data, sidecar_bytes])
        except OSError as exc:
            raise StorageError(_storage_message(folder, exc)) from exc
        return Staged(folder, temps[0], temps[1], len(data))

    def commit(self, staged: Staged, extension: str, stem: str) -> SavedFile:
        """Give staged files their names; the temporary files are gone afterwards, whatever happened."""
        folder = staged.folder
        temps = [staged.image, staged.sidecar]
        try:
            self._same_folder(folder)  # (checked before the spend too; a link may be swapped in while a call runs)
            for attempt in range(1, 10_000):
                name = stem if attempt == 1 else f"{stem}_{attempt}"
                finals = [folder / f"{name}.{extension}", folder / f"{name}.json"]
                if self._claim(temps, finals):
                    return SavedFile(finals[0], finals[1], staged.bytes)
            raise StorageError(f"Could not find a free file name for {stem!r} in {folder}.")
        except OSError as exc:
            raise StorageError(_storage_message(folder, exc)) from exc
        finally:
            staged.discard()

    def _claim(self, temps: list[Path], finals: list[Path]) -> bool:
        """Give the temp files their final names unless a name is taken (then nothing is left named)."""
        if self._links:
            try:
                return _link_all(temps, finals)
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                self._links = False  # FAT/exFAT, some network shares: no hard links here
        return _rename_all(temps, finals)

    def read(self, path: Path) -> bytes:
        """A file from the output folder, and from nowhere else (symlinks resolved first)."""
        folder = self.folder
        real = Path(os.path.realpath(path)) if "\x00" not in str(path) else None
        if real is None or not real.is_relative_to(folder) or not real.is_file():
            raise StorageError(f"Only images in the output folder {folder} can be read.")
        size = real.stat().st_size
        if size > MAX_READ_BYTES:
            raise StorageError(f"{real} is {_amount(size)}, more than the {_amount(MAX_READ_BYTES)} a client may read "
                               "through the server; open the file by its path instead.")
        return real.read_bytes()

    @staticmethod
    def discard(saved: SavedFile) -> None:
        """Remove an image and its sidecar (a cancelled call leaves nothing behind)."""
        for path in (saved.path, saved.sidecar):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})


def _link_all(temps: list[Path], finals: list[Path]) -> bool:
    done: list[Path] = []
    try:
        for tmp, final in zip(temps, finals, strict=True):
            os.link(tmp, final)
            done.append(final)
        return True
    except FileExistsError:
        _unlink_all(done)
        return False
    except BaseException:
        _unlink_all(done)  # never an image without its sidecar
        raise


def _rename_all(temps: list[Path], finals: list[Path]) -> bool:
    """Reserve every name (an empty file, created only if absent), then rename each finished file onto its
    reservation: no second copy of the data is written, and any failure removes the reservations.

    The sidecar's name is reserved first and filled last: a reservation (a few bytes naming this host and process;
    a real sidecar is JSON) marks a save that did not finish, which is what `sweep` looks for after a kill.
    """
    reserved: list[Path] = []
    marker = _RESERVED + f"{_HOST} {os.getpid()}\n".encode()
    try:
        for final in reversed(finals):
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            reserved.append(final)
            try:
                os.write(fd, marker)
            finally:
                os.close(fd)
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
        return True
    except FileExistsError:
        _unlink_all(reserved)
        return False
    except BaseException:
        _unlink_all(reserved)
        raise


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def json_bytes(value: Mapping[str, Any]) -> bytes:
    """A sidecar's bytes: indented UTF-8 JSON; NaN and Infinity are refused (they are not JSON)."""
    return (json.dumps(dict(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


# Temporary files are named `.tmp-<host>-<pid>-<random>`, so a later start can tell which ones a dead process left.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(r"^\.tmp-(?:(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-)?[0-9a-f]{16}\Z")
# A name the rename fallback reserved holds `reserved <host> <pid>` until the finished file is renamed onto it.
_RESERVED = b"reserved "
_OWNER = re.compile(rb"^reserved (?P<host>[0-9a-f]{8}) (?P<pid>[0-9]{1,10})\n\Z")
_RESERVATION_MAX_BYTES = 40
#: A temporary file this old is stale whoever left it (another host on a shared folder, a recycled pid).
STALE_AFTER_S = 3600
#: A name reservation lives for microseconds; one this old was left by a save that died (a reservation of a dead
#: process on this host is removed at once, whatever its age).
RESERVATION_STALE_S = 10
#: The names saves give their files: the only ones the sweep may remove (what a save killed between its steps
#: leaves: a name reserved or claimed, but not both files complete) and the only ones the view's strip lists.
#: (ASCII digits, [0-9]: `\d` takes any script's; and \Z, since `$` also matches before a final newline.)
SAVED_NAME = re.compile(r"^[0-9]{8}-[0-9]{6}-[a-z0-9-]+(?:_[0-9]+)?\.(?:png|jpg|jpeg|webp|gif|json)\Z")
#: The folder inside the output folder that the view's Hide moves images into (Restore moves them back). Its name
#: starts with a dot and is not a temporary file's, so the sweep, which looks only at the output folder's own
#: files, never enters it: nothing in it is ever removed, and `moves.move` never writes over anything there.
HIDDEN_DIR = ".hidden"


#: The room a call needs before it is sent: four images of a few MB and their sidecars, with a margin.
MIN_ROOM_BYTES = 64 * 1024 * 1024
#: The largest file `resources/read` hands out (every image the tools save is far smaller).
MAX_READ_BYTES = 64 * 1024 * 1024
#: Files a call's save may need at once (a temporary image and sidecar per image, up to 4 images), with some to spare.
MIN_FREE_FILES = 16


def room(folder: Path, min_bytes: int = MIN_ROOM_BYTES, min_files: int = MIN_FREE_FILES) -> str | None:
    """What makes `folder` too small for what is about to be written there, or None: the free space and free
    files (inodes) on its file system, and a per-process file-size limit (`ulimit -f`). Creating or opening a file
    succeeds on a full disk, so these are read."""
    if hasattr(os, "statvfs"):
        fs = os.statvfs(folder)
        free = fs.f_bavail * fs.f_frsize
        if free < min_bytes:
            return f"has only {_amount(free)} free"
        if fs.f_files and fs.f_favail < min_files:  # (file systems without a fixed number of files report 0)
            return f"has room for only {plural(fs.f_favail, 'more file', 'more files')} (it is out of inodes)"
    try:
        import resource
    except ImportError:  # Windows
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and limit < min_bytes:
        return f"cannot take files over {_amount(limit)} (a file-size limit, ulimit -f, on this process)"
    return None


def _amount(size: int) -> str:
    return f"{size / 1048576:.1f} MB" if size >= 1048576 else f"{size / 1024:.0f} KB"


def _probe(folder: Path) -> None:
    path = folder / f".tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(8)}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    path.unlink()


def _temp_name(folder: Path) -> Path:
    return folder / f".tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(8)}"


def _write_temp(folder: Path, data: bytes) -> Path:
    path = _temp_name(folder)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


def sweep(folder: Path, now: float | None = None) -> list[Path]:
    """Remove what saves killed mid-way (kill -9, power loss) left in `folder`: their temporary files, an image
    whose sidecar was never linked, and the names the rename fallback reserved. Returns what was removed.

    Only leftovers that cannot belong to a save still running are touched (temporary files and reservations of
    dead processes on this host; others once older than STALE_AFTER_S and RESERVATION_STALE_S), and nothing but
    our own files: a name this server would give, an image extension or its reserved `.json` sidecar.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    named = [e for e in entries if not e.name.startswith(".")]
    for entry in entries:
        match = _TEMP.match(entry.name)
        info = _stat(entry) if match else None
        if match is None or info is None or not (_dead_here(match["host"], match["pid"])
                                                 or now - info.st_mtime > STALE_AFTER_S):
            continue
        if info.st_nlink > 1:  # killed between the links: a final name shares this file
            for other in named:
                shared = _stat(other)
                if shared is not None and shared.st_ino == info.st_ino and SAVED_NAME.match(other.name) \
                        and not other.name.endswith(".json") and not (folder / _sidecar_of(other.name)).exists():
                    removed += _remove(folder / other.name)
        removed += _remove(folder / entry.name)
    for entry in named:  # a reserved sidecar: the rename fallback's save that never finished, with its image
        info = _stat(entry)
        if not (SAVED_NAME.match(entry.name) and entry.name.endswith(".json") and info is not None
                and info.st_size <= _RESERVATION_MAX_BYTES):
            continue
        owner = _reservation_owner(folder / entry.name)
        if owner is not None and (_dead_here(*owner) or now - info.st_mtime > RESERVATION_STALE_S):
            stem = entry.name[: -len(".json")]
            removed += _remove(folder / entry.name)
            removed += [p for suffix in _IMAGE_SUFFIXES for p in _remove_if_exists(folder / f"{stem}{suffix}")]
    return removed


def _remove_if_exists(path: Path) -> list[Path]:
    return _remove(path) if path.exists() else []


def _stat(entry: os.DirEntry[str]) -> os.stat_result | None:
    try:
        return entry.stat(follow_symlinks=False) if entry.is_file(follow_symlinks=False) else None
    except OSError:
        return None


def _sidecar_of(name: str) -> str:
    return name.rsplit(".", 1)[0] + ".json"


def _remove(path: Path) -> list[Path]:
    try:
        path.unlink()
    except OSError:
        return []
    log.warning("Removed %s, left by a save that was interrupted", path)
    return [path]


def _reservation_owner(path: Path) -> tuple[str | None, str | None] | None:
    """(host, pid) of the save that reserved this name, (None, None) for an empty reservation (one made before
    reservations named their owner), or None when the file is not a reservation."""
    try:
        data = path.read_bytes()[: _RESERVATION_MAX_BYTES + 1]
    except OSError:
        return None
    if not data:
        return None, None
    owner = _OWNER.match(data)
    return (owner["host"].decode(), owner["pid"].decode()) if owner else None


def _dead_here(host: str | None, pid_text: str | None) -> bool:
    """The process ran on this host and is gone (never probed on Windows, where signal 0 is Ctrl-C)."""
    if host != _HOST or pid_text is None or sys.platform == "win32":
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full (or a file-size or quota limit was reached)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied" + (" (a read-only file system)" if exc.errno == errno.EROFS else "")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "the folder disappeared" + (" (a file is in its place)" if exc.errno == errno.ENOTDIR else "")
    return exc.strerror or str(exc)


def _storage_message(folder: Path, exc: OSError) -> str:
    fix = ("Create the folder again, or set FLUX_KLEIN_OUTPUT_DIR to another folder"
           if exc.errno in (errno.ENOENT, errno.ENOTDIR) else
           "Free some space or set FLUX_KLEIN_OUTPUT_DIR to another folder" if exc.errno in (errno.ENOSPC, errno.EDQUOT,
                                                                                          errno.EFBIG)
           else "Check the folder's permissions or set FLUX_KLEIN_OUTPUT_DIR to another folder")
    return f"The image was generated but could not be saved in {folder}: {_why(exc)}. Nothing was written. {fix}, " \
           "then try again."


def timestamp(now: datetime) -> str:
    return now.astimezone().isoformat(timespec="seconds")
