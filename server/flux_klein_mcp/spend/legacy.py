"""The JSON-lines ledger of earlier versions, imported once into the database so nobody's history is lost.

    {"time": "2026-11-21T09:05:07+01:00", "provider": "openrouter", "model": "black-forest-labs/flux.2-klein-4b",
     "tier": "low", "cost_usd": 0.014, "cost_source": "provider", "generation_id": "gen-1", "path": "/.../a.png"}

Each good line becomes one charge of one image; a damaged line is reported (a warning with its line number) and
skipped, never fatal. The file is then renamed beside itself (`ledger.jsonl.imported`), kept; its content's hash
is recorded in the same transaction as its charges, so a file that could not be renamed is not imported twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ..words import plural
from .ledger import MAX_LINE_USD, Charge, Ledger

log = logging.getLogger("flux_klein_mcp")

#: Damaged lines named one by one in the log; past these, a count.
NAMED = 20
#: A line longer than this is damaged (a charge is about 250 bytes).
MAX_LINE = 64 * 1024


def import_file(ledger: Ledger, path: Path) -> None:
    """Import `path` (if it is there) into `ledger`, then rename it aside. The file is read in pieces (a hash, a
    count, then the charges booked), so that memory stays flat however long it is."""
    opened = _open(path)
    if opened is None:
        return
    with opened as fh:
        digest, size = hashlib.sha256(), 0
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        good, damaged = 0, 0
        for number, raw in _lines(fh, size):
            if not raw.strip():
                continue
            if _parsed(raw, number, path, damaged) is None:
                damaged += 1
            else:
                good += 1
        if damaged > NAMED:
            log.warning("... and %d more damaged line(s) in the ledger %s.", damaged - NAMED, path)

        def charges() -> Iterator[tuple[datetime, Charge]]:
            for number, raw in _lines(fh, size):  # (what was hashed: a line appended since waits for the next start)
                charge = _parsed(raw, number, path, NAMED) if raw.strip() else None
                if charge is not None:
                    yield charge

        imported = ledger.import_charges(digest.hexdigest(), str(path), charges, good, damaged)
    if imported:
        # (info, not a warning: nothing is wrong, and the CLI prints warnings to the person)
        log.info("Imported %s from the old spend ledger %s into %s%s.", plural(good, "charge"), path, ledger.where,
                 f" ({plural(damaged, 'damaged line')} skipped)" if damaged else "")
    aside = _aside(path)
    try:
        os.replace(path, aside)
        os.chmod(aside, 0o600)  # (an old ledger was readable by others; what it holds is no more public now)
    except FileNotFoundError:
        pass  # another process starting at the same moment imported it (its hash said so) and moved it
    except OSError as exc:
        log.warning("The old spend ledger %s was imported but could not be renamed to %s (%s); it will not be "
                    "imported again.", path, aside.name, exc.strerror)


def _open(path: Path) -> BinaryIO | None:
    try:
        # (Non-blocking, and only a regular file: a named pipe there would hang every process that opens the ledger.)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        log.warning("The old spend ledger %s could not be read (%s): it was not imported.", path, exc.strerror)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        log.warning("The old spend ledger %s is not a regular file: it was not imported.", path)
        return None
    return os.fdopen(fd, "rb")


def _lines(fh: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) over the first `size` bytes, from the start. A line longer than MAX_LINE comes as its
    first MAX_LINE bytes (damaged); the rest is skipped a piece at a time, never held whole."""
    fh.seek(0)
    number, read = 0, 0
    while read < size:
        raw = fh.readline(min(MAX_LINE, size - read))
        if not raw:
            return
        read += len(raw)
        piece = raw
        while not piece.endswith(b"\n") and len(piece) == MAX_LINE and read < size:
            piece = fh.readline(min(MAX_LINE, size - read))
            read += len(piece)
            if not piece:
                break
        number += 1
        yield number, raw


def _parsed(raw: bytes, number: int, path: Path, damaged: int) -> tuple[datetime, Charge] | None:
    """The charge on a line, or None when it is damaged (named in the log while fewer than NAMED were)."""
    try:
        if len(raw) >= MAX_LINE:
            raise ValueError("the line is too long")
        return _charge(raw)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        if damaged < NAMED:
            log.warning("Skipping a damaged line in the ledger %s, line %d (%s): %.80r", path, number, exc,
                        raw.rstrip(b"\n"))
        return None


def _charge(raw: bytes) -> tuple[datetime, Charge]:
    line = json.loads(raw)
    cost = float(line["cost_usd"])
    if not math.isfinite(cost) or not 0 <= cost <= MAX_LINE_USD:
        raise ValueError("cost_usd is not an amount")
    at = datetime.fromisoformat(str(line["time"])).astimezone(UTC)  # (a time without offset is this machine's)
    texts = {key: line.get(key) for key in ("provider", "model", "tier", "cost_source", "generation_id", "path")}
    if not isinstance(texts["provider"], str) or not isinstance(texts["model"], str):
        raise ValueError("provider and model must be text")
    if any(value is not None and not isinstance(value, str) for value in texts.values()):
        raise ValueError("tier, cost_source, generation_id and path must be text")
    return at, Charge(texts["provider"], texts["model"], texts["tier"] or "low", 1, round(cost, 6),
                      texts["cost_source"] or "provider", texts["generation_id"], texts["path"],
                      note="imported from a JSON-lines ledger")


def _aside(path: Path) -> Path:
    """Where an imported file is kept: `<name>.imported`, or `<name>.imported-2`, ... if that is taken."""
    candidate, number = path.with_name(path.name + ".imported"), 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}.imported-{number}")
    return candidate
