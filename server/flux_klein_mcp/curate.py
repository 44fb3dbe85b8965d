"""The person's choices about images in the view: pick (star) one, hide one, restore a hidden one.

A pick is kept in the image's sidecar (`"picked": true`), so it survives restarts and shows in the gallery. Hide
moves the image and its sidecar into the hidden folder inside the output folder (store.HIDDEN_DIR); Restore moves
them back. Nothing is ever deleted, and nothing is ever written over another file.

The paths come from the view, which a host frames and forwards: they are confined strictly to the output folder.
A path is refused unless its name is one the tools give, its folder (links resolved) is the output folder (or the
hidden folder for Restore), and the file itself is a regular file, not a link. A sidecar is untrusted input: one
that is not a small regular file of JSON is never replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

from . import store
from .errors import InputError, StorageError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
#: The longest path taken (PATH_MAX on Linux); anything longer is not a file the tools saved.
_MAX_PATH = 4096
#: One sidecar edit at a time in this process (a pick read, changed and written back must not lose another's).
_LOCK = threading.Lock()


def image_in(folder: Path, path_text: str, parameter: str = "path") -> Path:
    """`path_text` as an image the tools saved directly in `folder`, or InputError saying why not."""
    where = f"an image in {folder} (a path from the gallery)"
    if not isinstance(path_text, str) or not path_text or len(path_text) > _MAX_PATH or "\x00" in path_text:
        raise InputError(f"{parameter} must be {where}.")
    path = Path(path_text)
    name = path.name
    if not path.is_absolute() or not store.SAVED_NAME.match(name) or not name.lower().endswith(_IMAGE_SUFFIXES):
        raise InputError(f"{parameter} must be {where}; {name or path_text!r} is not a name the image tools give.")
    if os.path.realpath(path.parent) != os.path.realpath(folder):
        raise InputError(f"{parameter} must be {where}; {path_text!r} is elsewhere.")
    image = folder / name
    try:
        info = os.lstat(image)
    except FileNotFoundError:
        raise InputError(f"{parameter}: there is no {name} in {folder} (moved or hidden meanwhile?). Refresh the "
                         "gallery.") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{parameter}: {name} in {folder} is not a plain file (a link or a folder); it is left "
                         "alone.")
    return image


def hidden_folder(folder: Path, create: bool) -> Path:
    """The hidden folder inside `folder`, made if `create`; refused if anything but a real folder has its name."""
    hidden = folder / store.HIDDEN_DIR
    if create:
        with contextlib.suppress(FileExistsError):
            hidden.mkdir(mode=0o755)
    try:
        info = os.lstat(hidden)
    except FileNotFoundError:
        return hidden  # nothing hidden yet
    if not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"{hidden} is not a folder (a link or a file has its name), so nothing can be hidden "
                           "there. Move it away, then try again.")
    return hidden


def set_picked(folder: Path, path_text: str, picked: bool) -> Path:
    """Mark an image in `folder` picked (or not) in its sidecar, written whole (a temporary file renamed onto it)."""
    image = image_in(folder, path_text)
    sidecar = image.with_suffix(".json")
    with _LOCK:
        data = _read_sidecar(sidecar)
        if picked:
            data["picked"] = True
        else:
            data.pop("picked", None)
        try:
            # (the store's temporary name: a kill leaves it for the sweep, never a half-written sidecar)
            tmp = store._write_temp(folder, store.json_bytes(data))
        except OSError as exc:
            raise StorageError(f"Could not write {sidecar.name} in {folder} ({exc.strerror or exc}); the pick was "
                               "not kept.") from exc
        try:
            os.replace(tmp, sidecar)  # (replaces the entry: a hard link to the old sidecar keeps its content)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(f"Could not write {sidecar.name} in {folder} ({exc.strerror or exc}); the pick was "
                               "not kept.") from exc
    return image


def hide(folder: Path, path_text: str) -> Path:
    """Move an image in `folder` (and its sidecar) into the hidden folder; returns where it went."""
    image = image_in(folder, path_text)
    return _move(image, hidden_folder(folder, create=True))


def restore(folder: Path, path_text: str) -> Path:
    """Move a hidden image (and its sidecar) back into `folder`; returns where it went."""
    hidden = hidden_folder(folder, create=False)
    image = image_in(hidden, path_text)
    return _move(image, folder)


def _move(image: Path, to: Path) -> Path:
    """Move `image` and its sidecar into `to` under the first free name of the tools' kind (`_2`, `_3` ...)."""
    sidecar = image.with_suffix(".json")
    has_sidecar = _is_plain_file(sidecar)
    stem, suffix = image.stem, image.suffix
    base = stem.rsplit("_", 1)[0] if "_" in stem and stem.rsplit("_", 1)[1].isdigit() else stem
    try:
        for attempt in range(1, 1000):
            name = stem if attempt == 1 else f"{base}_{attempt}"
            target = to / f"{name}{suffix}"
            if has_sidecar:
                moved = store.move([sidecar, image], [target.with_suffix(".json"), target])
            else:
                moved = store.move([image], [target])
            if moved:
                return target
    except OSError as exc:
        raise StorageError(f"Could not move {image.name} into {to} ({exc.strerror or exc}); it is still in "
                           f"{image.parent}.") from exc
    raise StorageError(f"No free name for {image.name} in {to}; it is still in {image.parent}.")


def _is_plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    """The sidecar's JSON object, {} when there is none; refused when something else has its name (a link, a
    pipe, a folder, a file too large or not a JSON object): a pick must never replace what it cannot read."""
    from .gallery import MAX_SIDECAR_BYTES

    try:
        info = os.lstat(sidecar)
    except FileNotFoundError:
        return {}
    refused = f"{sidecar} is not a sidecar this server can update ({{}}); the pick was not kept. Fix or move it."
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIDECAR_BYTES:
        raise StorageError(refused.format("a link, a special file or too large"))
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(sidecar, flags)
        with os.fdopen(fd, "rb") as fh:
            value = json.loads(fh.read(MAX_SIDECAR_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        raise StorageError(refused.format("not readable JSON")) from None
    if not isinstance(value, dict):
        raise StorageError(refused.format("not a JSON object"))
    return value
