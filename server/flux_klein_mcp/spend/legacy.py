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
from datetime import UTC, datetime
from pathlib import Path

from .ledger import MAX_LINE_USD, Charge, Ledger

log = logging.getLogger("flux_klein_mcp")

#: Damaged lines named one by one in the log; past these, a count.
NAMED = 20
#: An old ledger larger than this is not read into memory at once (it would be years of heavy use).
MAX_BYTES = 1 << 30


def import_file(ledger: Ledger, path: Path) -> None:
    """Import `path` (if it is there) into `ledger`, then rename it aside."""
    try:
        # (Non-blocking, and only a regular file: a named pipe there would hang every process that opens the ledger.)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        log.warning("The old spend ledger %s could not be read (%s): it was not imported.", path, exc.strerror)
        return
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        log.warning("The old spend ledger %s is not a regular file: it was not imported.", path)
        return
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        log.warning("The old spend ledger %s is over 1 GB: it was not imported; import it in parts.", path)
        return
    charges, damaged = parse(data, str(path))
    if ledger.import_charges(hashlib.sha256(data).hexdigest(), str(path), charges, damaged):
        log.warning("Imported %d charge(s) from the old spend ledger %s into %s%s.", len(charges), path,
                    ledger.where, f" ({damaged} damaged line(s) skipped)" if damaged else "")
    aside = _aside(path)
    try:
        os.replace(path, aside)
        os.chmod(aside, 0o600)  # (an old ledger was readable by others; what it holds is no more public now)
    except OSError as exc:
        log.warning("The old spend ledger %s was imported but could not be renamed to %s (%s); it will not be "
                    "imported again.", path, aside.name, exc.strerror)


def parse(data: bytes, name: str) -> tuple[list[tuple[datetime, Charge]], int]:
    """The charges of a JSON-lines ledger, and how many lines were damaged."""
    charges, damaged = [], 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            charges.append(_charge(raw))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            damaged += 1
            if damaged <= NAMED:
                log.warning("Skipping a damaged line in the ledger %s, line %d (%s): %.80r", name, number, exc, raw)
    if damaged > NAMED:
        log.warning("... and %d more damaged line(s) in the ledger %s.", damaged - NAMED, name)
    return charges, damaged


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
