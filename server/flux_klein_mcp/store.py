"""The output folder: safe names, whole-or-nothing writes that never overwrite, and a JSON sidecar per image."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import sys
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import StorageError

SLUG_MAX = 48
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def slugify(text: str, max_len: int = SLUG_MAX) -> str:
    """Lowercase ASCII letters, digits and single hyphens; cut at a word; "image" when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
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
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "flux-klein-mcp" / "output"


@dataclass(frozen=True)
class SavedFile:
    path: Path
    sidecar: Path
    bytes: int

    @property
    def uri(self) -> str:
        return self.path.as_uri()


class Store:
    """Writes images and sidecars into one folder, resolved on first use."""

    def __init__(self, folder: Path, *, explicit: bool, fallback: Path | None = None) -> None:
        self._wanted = folder
        self._explicit = explicit
        self._fallback = fallback if fallback is not None else user_output_dir()
        self._folder: Path | None = None
        self.note: str | None = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """The folder in use, created if needed; falls back to a per-user folder when the default is unwritable."""
        with self._lock:
            if self._folder is None:
                self._folder = self._resolve()
            return self._folder

    def _resolve(self) -> Path:
        try:
            return _writable(self._wanted)
        except OSError as exc:
            if self._explicit:
                raise StorageError(
                    f"Cannot write to the output folder {self._wanted} ({exc.strerror or exc}). "
                    "Set FLUX_KLEIN_OUTPUT_DIR to a folder you can write to."
                ) from exc
            wanted = self._wanted
        try:
            folder = _writable(self._fallback)
        except OSError as exc:
            raise StorageError(
                f"Cannot write to {wanted} nor to {self._fallback} ({exc.strerror or exc}). "
                "Set FLUX_KLEIN_OUTPUT_DIR to a folder you can write to."
            ) from exc
        self.note = (
            f"The working directory's output folder {wanted} is not writable, so images were saved in {folder}. "
            "Set FLUX_KLEIN_OUTPUT_DIR to choose the folder."
        )
        return folder

    def save(self, data: bytes, extension: str, stem: str, sidecar: Mapping[str, Any]) -> SavedFile:
        """Write `<stem>.<ext>` and `<stem>.json` whole, under a name nothing else holds (`_2`, `_3` ... if taken)."""
        folder = self.folder
        sidecar_bytes = (json.dumps(dict(sidecar), indent=2, ensure_ascii=False) + "\n").encode()
        image_tmp = sidecar_tmp = None
        try:
            image_tmp = _write_temp(folder, data)
            sidecar_tmp = _write_temp(folder, sidecar_bytes)
            for attempt in range(1, 10_000):
                name = stem if attempt == 1 else f"{stem}_{attempt}"
                image_path = folder / f"{name}.{extension}"
                sidecar_path = folder / f"{name}.json"
                if not _claim(image_tmp, image_path):
                    continue
                try:
                    claimed = _claim(sidecar_tmp, sidecar_path)
                except BaseException:
                    image_path.unlink()  # never an image without its sidecar
                    raise
                if not claimed:
                    image_path.unlink()
                    continue
                return SavedFile(image_path, sidecar_path, len(data))
            raise StorageError(f"Could not find a free file name for {stem!r} in {folder}.")
        except OSError as exc:
            raise StorageError(_storage_message(folder, exc)) from exc
        finally:
            for tmp in (image_tmp, sidecar_tmp):
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        tmp.unlink()

    def read(self, path: Path) -> bytes:
        """A file from the output folder, and from nowhere else (symlinks resolved first)."""
        folder = self.folder
        real = Path(os.path.realpath(path)) if "\x00" not in str(path) else None
        if real is None or not real.is_relative_to(folder) or not real.is_file():
            raise StorageError(f"Only images in the output folder {folder} can be read.")
        return real.read_bytes()

    @staticmethod
    def discard(saved: SavedFile) -> None:
        """Remove an image and its sidecar (a cancelled call leaves nothing behind)."""
        for path in (saved.path, saved.sidecar):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _writable(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    probe = _write_temp(folder, b"")
    probe.unlink()
    return folder.resolve()


def _write_temp(folder: Path, data: bytes) -> Path:
    path = folder / f".tmp-{secrets.token_hex(8)}"
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


def _claim(tmp: Path, final: Path) -> bool:
    """Give the finished temp file its final name unless that name exists: atomic, never overwriting."""
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
    # No hard links here (some network and FAT file systems): reserve the name, then move the data onto it.
    try:
        os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    with open(tmp, "rb") as src:
        data = src.read()
    replacement = _write_temp(final.parent, data)
    os.replace(replacement, final)
    return True


def _storage_message(folder: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = "the disk is full (or a file-size or quota limit was reached)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied"
    else:
        why = exc.strerror or str(exc)
    return (
        f"The image was generated but could not be saved in {folder}: {why}. Nothing was written. "
        "Free some space or set FLUX_KLEIN_OUTPUT_DIR to another folder, then try again."
    )


def timestamp(now: datetime) -> str:
    return now.astimezone().isoformat(timespec="seconds")
