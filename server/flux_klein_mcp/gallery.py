"""The images in the output folder (or its hidden folder), a page at a time, for the view's gallery (the app-only
`recent_images` tool): newest first, filtered by prompt text and by pick, each page under 1 MB on the wire.

Each image is described from its sidecar (prompt, operation, seed, provider, cost, picked) together with the
arguments that would make it again, and shown as a small JPEG. A sidecar is untrusted: anyone with access to the
folder can write one, so every field is checked for its type and range, every text is bounded (one sidecar cannot
fill a page) and made one UTF-8 can carry (JSON allows a lone surrogate, `"\ud800"`; the transports cannot send
it). Thumbnails are kept in memory by file
identity, so a view that refreshes its gallery after every action decodes each image once.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any

from .rules import ASPECT_RATIOS, MAX_PROMPT_CHARS, MAX_SEED
from .spend.ledger import MAX_LINE_USD
from .store import FORMATS, SAVED_NAME
from .words import rendered, well_formed

THUMBNAIL_PX = 160
THUMBNAIL_QUALITY = 70
MAX_LIMIT = 48
#: Files larger than this are not decoded for a strip thumbnail (nothing the tools save comes near it).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_SIDECAR_BYTES = 1024 * 1024
#: The longest text an entry takes from a sidecar, field by field: a prompt as long as the tools take, the rest far
#: longer than anything the tools write (a provider's name, a model id, an ISO timestamp).
TEXT_LIMITS = {"prompt": MAX_PROMPT_CHARS, "provider": 64, "model": 200, "timestamp": 64}
#: The longest input path replayed (PATH_MAX on Linux): a longer one is not a file the tools could have read.
_MAX_PATH = 4096
_SUFFIXES = {f".{ext}" for _, ext in FORMATS.values()} | {".jpeg"}


@dataclass(frozen=True)
class Recent:
    entry: dict[str, Any]  # what the JSON block says about the image
    thumbnail: bytes  # a JPEG of at most THUMBNAIL_PX on its long side


class Thumbnails:
    """Small JPEGs by file identity (path, inode, size, modification and change times): a changed or replaced file
    is decoded again, one that could not be decoded is not tried again until it changes."""

    def __init__(self, capacity: int = 128) -> None:
        self._cache: OrderedDict[tuple[str, int, int, int, int], tuple[bytes, int, int] | None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, path: Path, stat: os.stat_result) -> tuple[bytes, int, int]:
        """The thumbnail and the image's size; raises `NotAnImage` (or OSError) for a file that cannot be shown."""
        from . import images  # Pillow: loaded on first use, not at start-up

        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                cached = self._cache[key]
                if cached is None:
                    raise images.NotAnImage(f"{path.name} could not be shown")
                return cached
        value: tuple[bytes, int, int] | None = None
        try:
            data = path.read_bytes()
            info, thumbnail = images.inspect(data, THUMBNAIL_PX, THUMBNAIL_QUALITY)
            assert thumbnail is not None
            value = (thumbnail, info.width, info.height)
        finally:
            self._remember(key, value)
        return value

    def _remember(self, key: tuple[str, int, int, int, int], value: tuple[bytes, int, int] | None) -> None:
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)


#: A page of the gallery on the wire (its JSON text, escaped once more inside the JSON-RPC message, and its
#: thumbnails in base64), kept under the 1 MB that hosts take in one tool result (Claude Desktop refuses more than
#: 1 MiB): 48 entries with long prompts once made 4.5 MB.
PAGE_BYTES = 900_000
#: Room left for the page's own fields (folder, next, total) and the message around it.
_ENVELOPE_BYTES = 8192
#: (ASCII digits: `\d` takes any script's, and int() reads them; \Z: `$` also matches before a final newline.)
_CURSOR = re.compile(r"^([0-9]{1,20}):(\S{1,255})\Z")


@dataclass(frozen=True)
class Query:
    """Which images a page shows: the newest `limit` after `cursor` (what the previous page returned as `next`),
    those whose prompt holds every word of `text` (any case), only the picked ones if `picked`."""

    limit: int = 12
    cursor: str | None = None
    text: str = ""
    picked: bool = False


@dataclass(frozen=True)
class Page:
    images: list[Recent]
    next: str | None  # the cursor of the page after this one, None on the last page
    total: int  # images in the folder that match the query, on every page


def cursor_error(cursor: str) -> str | None:
    """Why `cursor` is not one this server hands out, or None."""
    match = _CURSOR.match(cursor)
    if match is None or SAVED_NAME.match(match[2]) is None:
        return "cursor is not one this server gave (pass the `next` of the previous page, or none for the first)"
    return None


def page(folder: Path, root: Path, query: Query, thumbnails: Thumbnails, budget: int = PAGE_BYTES) -> Page:
    """A page of the images the tools saved in `folder` (the output folder `root`, or its hidden folder), newest
    first by modification time, skipping what cannot be shown: a damaged or oversized file, a name the tools do not
    write, a link. Stops at `query.limit` images or at `budget` bytes on the wire, whichever comes first."""
    after = _after(query.cursor)
    words = query.text.casefold().split()
    everything = [(stat, path) for stat, path in _saved_images(folder) if _wanted(path, words, query.picked)]
    matching = [(s, p) for s, p in everything if after is None or (s.st_mtime_ns, p.name) < after]
    from .images import NotAnImage

    found: list[Recent] = []
    size = _ENVELOPE_BYTES
    seen = 0  # of `matching`, shown or skipped
    for stat, path in matching:
        if len(found) >= query.limit:
            break
        try:
            if stat.st_size > MAX_IMAGE_BYTES:
                raise NotAnImage(path.name)
            thumbnail, width, height = thumbnails.get(path, stat)
        except (OSError, NotAnImage):
            seen += 1
            continue
        entry = _describe(path, stat, width, height, _sidecar(path), root)
        entry_size = _wire_size(entry, thumbnail)
        if found and size + entry_size > budget:
            break
        if size + entry_size > budget:  # (a page's first entry too: described by its file alone)
            entry = _bare(entry)
            entry_size = _wire_size(entry, thumbnail)
        size += entry_size
        found.append(Recent(entry, thumbnail))
        seen += 1
    if seen == 0 or seen == len(matching):
        return Page(found, None, len(everything))
    stat, path = matching[seen - 1]
    return Page(found, f"{stat.st_mtime_ns}:{path.name}", len(everything))


def _after(cursor: str | None) -> tuple[int, str] | None:
    if cursor is None:
        return None
    match = _CURSOR.match(cursor)
    if match is None:
        raise ValueError(cursor_error(cursor))
    return int(match[1]), match[2]


def _saved_images(folder: Path) -> list[tuple[os.stat_result, Path]]:
    """The images the tools saved in `folder` (not links, not other names), newest first."""
    try:
        entries = [e for e in os.scandir(folder) if _is_saved_image(e)]
    except OSError:  # no folder yet, or not readable: nothing to show
        return []
    stats = []
    for entry in entries:
        try:
            stats.append((entry.stat(follow_symlinks=False), Path(entry.path)))
        except OSError:
            continue
    stats.sort(key=lambda pair: (pair[0].st_mtime_ns, pair[1].name), reverse=True)
    return stats


def _wanted(path: Path, words: list[str], picked: bool) -> bool:
    """Whether the image matches the filter (its sidecar is read only when there is one)."""
    if not words and not picked:
        return True
    sidecar = _sidecar(path)
    if picked and sidecar.get("picked") is not True:
        return False
    prompt = sidecar.get("prompt")
    haystack = prompt.casefold() if isinstance(prompt, str) else ""
    return all(word in haystack for word in words)


def _wire_size(entry: dict[str, Any], thumbnail: bytes) -> int:
    """What the entry and its thumbnail add to the tool result on the wire, at worst: the JSON text is escaped once
    more in the message, where a transport may also spell each character outside ASCII as \\uXXXX."""
    text = json.dumps(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
    return len(text.encode()) + 4 * ((len(thumbnail) + 2) // 3) + 64


def _is_saved_image(entry: os.DirEntry[str]) -> bool:
    name = entry.name
    return (Path(name).suffix.lower() in _SUFFIXES and SAVED_NAME.match(name) is not None
            and entry.is_file(follow_symlinks=False))


def _sidecar(path: Path) -> dict[str, Any]:
    """The image's sidecar, or {} for anything but a small regular file of JSON (never blocking on a named pipe,
    never following a link)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path.with_suffix(".json"), flags)
    except OSError:
        return {}
    try:
        info = os.fstat(fd)
        if not S_ISREG(info.st_mode) or info.st_size > MAX_SIDECAR_BYTES:
            return {}
        with os.fdopen(os.dup(fd), "rb") as fh:
            value = json.loads(fh.read(MAX_SIDECAR_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return {}
    finally:
        os.close(fd)
    return rendered(value, well_formed) if isinstance(value, dict) else {}  # (keys too)


def _describe(path: Path, stat: os.stat_result, width: int, height: int, sidecar: Mapping[str, Any],
              root: Path) -> dict[str, Any]:
    operation = sidecar.get("operation") if sidecar.get("operation") in ("generate", "edit", "compose") else None
    prompt = _text(sidecar, "prompt")
    seed = sidecar.get("seed")
    cost = sidecar.get("cost_usd")
    entry: dict[str, Any] = {
        "path": str(path),
        "uri": path.as_uri(),
        "width": width,
        "height": height,
        "format": path.suffix.lstrip(".").lower(),
        "bytes": stat.st_size,
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED else None,
        "prompt": prompt,
        "operation": operation,
        "provider": _text(sidecar, "provider"),
        "tier": sidecar.get("tier") if sidecar.get("tier") in ("low", "high") else None,
        "model": _text(sidecar, "model"),
        "cost_usd": cost if isinstance(cost, int | float) and not isinstance(cost, bool)
        and math.isfinite(cost) and 0 <= cost <= MAX_LINE_USD else None,  # (a cost the ledger would not believe)
        "timestamp": _text(sidecar, "timestamp"),
        "args": _replay(operation, sidecar, root),
        "picked": sidecar.get("picked") is True,
    }
    return entry


def _replay(operation: str | None, sidecar: Mapping[str, Any], folder: Path) -> dict[str, Any] | None:
    """The tool arguments that make this image again (another seed aside), or None when they cannot be known: no
    sidecar, a prompt the tools would not take whole, or inputs that were data URLs (kept only as a description).
    Only what the tools take is replayed (an aspect ratio they know, 1 to 4 inputs from the output folder itself):
    a sidecar is a file anyone with access to the folder could write, and a click must not send a file from
    elsewhere (or fetch a URL) that the card does not show."""
    prompt = sidecar.get("prompt")
    if operation is None or not isinstance(prompt, str) or not 0 < len(prompt) <= MAX_PROMPT_CHARS:
        return None
    args: dict[str, Any] = {"prompt": prompt}
    ratio = sidecar.get("aspect_ratio")
    if ratio in ASPECT_RATIOS and operation != "edit":  # an edit keeps its input's shape unless told otherwise
        args["aspect_ratio"] = ratio
    if operation == "generate":
        return args
    inputs = sidecar.get("inputs")
    sources = [i.get("source") for i in inputs[:5] if isinstance(i, dict)] if isinstance(inputs, list) else []
    if not 1 <= len(sources) <= 4 or not all(isinstance(s, str) and len(s) <= _MAX_PATH and _inside(s, folder)
                                             for s in sources):
        return None
    if operation == "edit":
        return {**args, "image": sources[0]} if len(sources) == 1 else None
    return {**args, "images": sources} if 2 <= len(sources) <= 4 else None


def _inside(source: str, folder: Path) -> bool:
    """A local path (not a URL) that leads into `folder`."""
    if not source or "\x00" in source or "://" in source or source[:5].lower() == "data:":
        return False
    try:
        real = Path(os.path.realpath(source))
        return real.is_relative_to(os.path.realpath(folder)) and real.is_file()
    except (OSError, ValueError):
        return False


def _text(sidecar: Mapping[str, Any], field: str) -> str | None:
    value = sidecar.get(field)
    return value[:TEXT_LIMITS[field]] if isinstance(value, str) else None


def _bare(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry described by its file alone (and its pick): none of its sidecar's texts."""
    from_file = ("path", "uri", "width", "height", "format", "bytes", "picked")
    return {key: value if key in from_file else None for key, value in entry.items()}
