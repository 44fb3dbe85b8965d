"""The ledger: one JSON line per charged image, shared by every process that points at the same file.

    {"time": "2026-11-21T09:05:07+01:00", "provider": "openrouter", "model": "black-forest-labs/flux.2-klein-4b",
     "tier": "low", "cost_usd": 0.014, "cost_source": "provider", "generation_id": "gen-1", "path": "/.../a.png"}

Appends happen under a file lock (`<ledger>.lock`), so several processes can share one ledger. Beside it,
`<ledger>.pending` holds the reservations of calls still in flight (so a daily budget counts every process's
calls, not only the settled ones); a reservation whose process is gone does not count. A damaged line is skipped
with a warning, never fatal. Totals are kept per day and read incrementally: each look reads only the lines
appended since the last one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("flux_klein_mcp")

#: A pending reservation this old counts no more, whoever made it (a call never runs this long).
PENDING_STALE_S = 3 * 3600
_HOST = socket.gethostname()


def default_ledger() -> Path:
    """The per-user state folder's ledger: ~/.local/state on Linux, the platform's equivalent elsewhere."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or home / ".local" / "state")
    return base / "flux-klein-mcp" / "ledger.jsonl"


@dataclass(frozen=True)
class Charge:
    """One charged image, as a ledger line."""

    time: str
    provider: str
    model: str
    tier: str
    cost_usd: float
    cost_source: str
    generation_id: str | None
    path: str

    def line(self) -> bytes:
        return (json.dumps(self.__dict__, ensure_ascii=False, allow_nan=False) + "\n").encode()


@dataclass
class DayTotal:
    usd: float = 0.0
    images: int = 0
    #: USD and images by "provider model".
    by: dict[str, list[float]] = field(default_factory=dict)

    def add(self, charge: Mapping[str, Any]) -> None:
        usd = float(charge["cost_usd"])
        self.usd += usd
        self.images += 1
        key = f"{charge['provider']} {charge['model']}"
        entry = self.by.setdefault(key, [0.0, 0])
        entry[0] += usd
        entry[1] += 1


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._pending_path = path.with_name(path.name + ".pending")
        self._days: dict[date, DayTotal] = {}
        self._read_to = 0  # how far into the file the totals go
        self._identity: tuple[int, int] | None = None  # (device, inode) the totals were read from

    # --- reading -------------------------------------------------------------------------------------------

    def days(self) -> dict[date, DayTotal]:
        """Totals per local calendar day, brought up to date with what other processes appended."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._days, self._read_to, self._identity = {}, 0, None
            return self._days
        identity = (info.st_dev, info.st_ino)
        if identity != self._identity or info.st_size < self._read_to:  # replaced or cut: read it all again
            self._days, self._read_to, self._identity = {}, 0, identity
        if info.st_size > self._read_to:
            with self.path.open("rb") as fh:
                fh.seek(self._read_to)
                chunk = fh.read(info.st_size - self._read_to)
            complete = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            for number, raw in enumerate(chunk[:complete].splitlines()):
                self._count(raw, number)
            self._read_to += complete
        return self._days

    def spent_on(self, day: date) -> float:
        total = self.days().get(day)
        return 0.0 if total is None else total.usd

    def _count(self, raw: bytes, number: int) -> None:
        if not raw.strip():
            return
        try:
            charge = json.loads(raw)
            cost = float(charge["cost_usd"])
            when = datetime.fromisoformat(str(charge["time"]))
            if not math.isfinite(cost) or cost < 0:
                raise ValueError("cost_usd is not an amount")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Skipping a damaged line in the ledger %s (%s): %.80r", self.path, exc, raw)
            return
        self._days.setdefault(when.astimezone().date(), DayTotal()).add(charge)

    # --- writing, under the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger's lock (across processes) for a read-check-write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a+b") as fh:
            _lock(fh.fileno())
            try:
                yield
            finally:
                _unlock(fh.fileno())

    def append(self, charges: list[Charge]) -> None:
        """Add charged images (call under `locked()`)."""
        if not charges:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o600)
        try:
            os.write(fd, b"".join(charge.line() for charge in charges))
        finally:
            os.close(fd)

    def pending_total(self, now: float | None = None) -> float:
        """What calls in flight, in every process sharing the ledger, have reserved (call under `locked()`)."""
        now = time.time() if now is None else now
        return sum(float(entry["usd"]) for entry in self._live_pending(now).values())

    def set_pending(self, key: str, usd: float | None) -> None:
        """Record (or, with None, remove) one call's reservation (call under `locked()`)."""
        pending = self._live_pending(time.time())
        if usd is None:
            pending.pop(key, None)
        else:
            pending[key] = {"usd": usd, "pid": os.getpid(), "host": _HOST, "time": time.time()}
        tmp = self._pending_path.with_name(self._pending_path.name + f".{os.getpid()}")
        tmp.write_text(json.dumps(pending))
        os.replace(tmp, self._pending_path)

    def _live_pending(self, now: float) -> dict[str, dict[str, Any]]:
        try:
            pending = json.loads(self._pending_path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(pending, dict):
            return {}
        return {key: entry for key, entry in pending.items()
                if isinstance(entry, dict) and _alive(entry, now)}


def _alive(entry: dict[str, Any], now: float) -> bool:
    try:
        usd, pid, made = float(entry["usd"]), int(entry["pid"]), float(entry["time"])
    except (KeyError, TypeError, ValueError):
        return False
    if not math.isfinite(usd) or now - made > PENDING_STALE_S:
        return False
    if entry.get("host") != _HOST or sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
