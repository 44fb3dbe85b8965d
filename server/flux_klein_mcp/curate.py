"""The person's choices about images in the view: pick (star) one, hide one, restore a hidden one.

A pick is kept in the image's sidecar (`"picked": true`), so it survives restarts and shows in the gallery. Hide
moves the image and its sidecar into the hidden folder inside the output folder (store.HIDDEN_DIR); Restore moves
them back. Nothing is ever deleted, and nothing is ever written over another file. Each change runs alone, with the
folder opened once (`moves.changing`): two hosts or views acting at once never lose a pick or duplicate an image.

The paths come from the view, which a host frames and forwards: they are confined strictly to the output folder.
A path is refused unless its name is one the tools give, its folder (links resolved) is the output folder (or the
hidden folder for Restore), and the file itself is a regular file, not a link. A sidecar is untrusted input: one
that is not a small regular file of JSON is never replaced, nor one whose values JSON cannot write back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from . import moves, store
from .errors import InputError, StorageError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
#: Every file a name stands for: an image (in any of the formats) and its sidecar.
_PAIR_SUFFIXES = (*_IMAGE_SUFFIXES, ".json")
#: The longest path taken (PATH_MAX on Linux); anything longer is not a file the tools saved.
_MAX_PATH = 4096
#: A name's `_2`, `_3` ... (ASCII digits, as SAVED_NAME writes them).
_NUMBERED = re.compile(r"(?P<base>.+)_[0-9]+\Z")


def saved_name(folder: Path, path_text: str, parameter: str = "path") -> str:
    """The name of `path_text`, checked to be one the image tools give and to lie directly in `folder`; InputError
    saying why not. (Whether it is there, and a plain file, is checked by `_plain_image` once the folder is held.)"""
    where = f"an image in {folder} (a path from the gallery)"
    if not isinstance(path_text, str) or not path_text or len(path_text) > _MAX_PATH or "\x00" in path_text:
        raise InputError(f"{parameter} must be {where}.")
    path = Path(path_text)
    name = path.name
    if not path.is_absolute() or not store.SAVED_NAME.match(name) or not name.lower().endswith(_IMAGE_SUFFIXES):
        raise InputError(f"{parameter} must be {where}; {name or path_text!r} is not a name the image tools give.")
    if os.path.realpath(path.parent) != os.path.realpath(folder):
        raise InputError(f"{parameter} must be {where}; {path_text!r} is elsewhere.")
    return name


def _plain_image(folder: moves.Folder, name: str, parameter: str = "path") -> None:
    try:
        info = folder.lstat(name)
    except OSError as exc:  # (a name too long for the file system, a folder this process may not read)
        raise InputError(f"{parameter}: {name} in {folder.path} cannot be looked at ({exc.strerror or exc}); it is "
                         "left alone.") from None
    if info is None:
        raise InputError(f"{parameter}: there is no {name} in {folder.path} (moved or hidden meanwhile?). Refresh "
                         "the gallery.")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{parameter}: {name} in {folder.path} is not a plain file (a link or a folder); it is "
                         "left alone.")


def hidden_folder(folder: Path) -> Path:
    """The hidden folder inside `folder` (to list; it may not exist yet), refused if anything but a real folder has
    its name."""
    hidden = folder / store.HIDDEN_DIR
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
    name = saved_name(folder, path_text)
    sidecar = _sidecar_of(name)
    with moves.changing(folder) as output:
        _plain_image(output, name)
        data = _read_sidecar(output, sidecar)
        if picked:
            data["picked"] = True
        else:
            data.pop("picked", None)
        body = _writable(data, folder / sidecar)
        try:
            # (the store's temporary name: a kill leaves it for the sweep, never a half-written sidecar)
            tmp = store._write_temp(folder, body)
        except OSError as exc:
            raise StorageError(f"Could not write {sidecar} in {folder} ({exc.strerror or exc}); the pick was "
                               "not kept.") from exc
        try:  # (replaces the entry: a hard link to the old sidecar keeps its content)
            os.replace(output.at(tmp.name), output.at(sidecar), src_dir_fd=output.fd, dst_dir_fd=output.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(f"Could not write {sidecar} in {folder} ({exc.strerror or exc}); the pick was "
                               "not kept.") from exc
    return folder / name


def hide(folder: Path, path_text: str) -> Path:
    """Move an image in `folder` (and its sidecar) into the hidden folder; returns where it went."""
    name = saved_name(folder, path_text)
    with moves.changing(folder) as output, moves.hidden_in(output, make=True) as hidden:
        assert hidden is not None
        return _move(output, name, hidden)


def restore(folder: Path, path_text: str) -> Path:
    """Move a hidden image (and its sidecar) back into `folder`; returns where it went."""
    hidden_path = hidden_folder(folder)
    name = saved_name(hidden_path, path_text)
    with moves.changing(folder) as output, moves.hidden_in(output, make=False) as hidden:
        if hidden is None:
            raise InputError(f"path: there is no {name} in {hidden_path} (restored meanwhile?). Refresh the gallery.")
        return _move(hidden, name, output)


def _move(src: moves.Folder, name: str, dst: moves.Folder) -> Path:
    """Move image `name` and its sidecar into `dst` under the first free name of the tools' kind (`_2`, `_3` ...):
    free only when no file of the pair has it (an image never meets another image's sidecar)."""
    _plain_image(src, name)
    stem, suffix = name.rsplit(".", 1)
    sidecar = _sidecar_of(name)
    has_sidecar = src.is_plain_file(sidecar)
    numbered = _NUMBERED.match(stem)
    base = numbered["base"] if numbered else stem
    try:
        for attempt in range(1, 1000):
            new = stem if attempt == 1 else f"{base}_{attempt}"
            if any(dst.lstat(new + other) is not None for other in _PAIR_SUFFIXES):
                continue
            names, finals = [name], [f"{new}.{suffix}"]
            if has_sidecar:  # the sidecar first (see moves)
                names, finals = [sidecar, name], [f"{new}.json", f"{new}.{suffix}"]
            if moves.move(src, names, dst, finals):
                return dst.path / finals[-1]
    except OSError as exc:
        raise StorageError(f"Could not move {name} into {dst.path} ({exc.strerror or exc}); it is still in "
                           f"{src.path}.") from exc
    raise StorageError(f"No free name for {name} in {dst.path}; it is still in {src.path}.")


def _sidecar_of(name: str) -> str:
    return name.rsplit(".", 1)[0] + ".json"


def _read_sidecar(folder: moves.Folder, name: str) -> dict[str, Any]:
    """The sidecar's JSON object, {} when there is none; refused when something else has its name (a link, a
    pipe, a folder, a file too large or not a JSON object): a pick must never replace what it cannot read."""
    from .gallery import MAX_SIDECAR_BYTES

    refused = f"{folder.path / name} is not a sidecar this server can update ({{}}); the pick was not kept. Fix or " \
              "move it."
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder.at(name), flags, dir_fd=folder.fd)
    except FileNotFoundError:
        return {}
    except OSError:  # (a link: ELOOP)
        raise StorageError(refused.format("a link, a special file or too large")) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SIDECAR_BYTES:
            raise StorageError(refused.format("a link, a special file or too large"))
        try:
            value = json.loads(fh.read(MAX_SIDECAR_BYTES + 1))
        except (OSError, ValueError, RecursionError):
            raise StorageError(refused.format("not readable JSON")) from None
    if not isinstance(value, dict):
        raise StorageError(refused.format("not a JSON object"))
    return value


def _writable(data: dict[str, Any], sidecar: Path) -> bytes:
    """The sidecar's new bytes, or StorageError naming what in it JSON cannot write back (Python's reader takes NaN,
    Infinity and lone surrogates; the store's writer, rightly, does not)."""
    try:
        return store.json_bytes(data)
    except UnicodeEncodeError:
        what = "a broken character (an unpaired UTF-16 surrogate such as \\ud800)"
    except ValueError:
        what = "NaN or Infinity, which JSON does not allow"
    except RecursionError:
        what = "values nested too deep"
    raise StorageError(f"{sidecar} holds {what}, so it cannot be written back; the pick was not kept. Fix that "
                       "value in the file (or move the file away), then pick again.")
