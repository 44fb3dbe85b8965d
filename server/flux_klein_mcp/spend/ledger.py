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
import errno
import json
import logging
import math
import os
import socket
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..store import room, user_folder

log = logging.getLogger("flux_klein_mcp")

#: A pending reservation this old counts no more, whoever made it (a call never runs this long).
PENDING_STALE_S = 3 * 3600

def _host() -> str:
    """This host, and on Linux its pid namespace: two containers sharing a host name cannot see each other's pids."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}".strip()


_HOST = _host()


def default_ledger() -> Path:
    """The per-user state folder's ledger: ~/.local/state on Linux, the platform's equivalent elsewhere."""
    return user_folder("XDG_STATE_HOME", ".local/state") / "ledger.jsonl"


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
    #: The saved image; None when it was charged but not kept (unusable, or more than asked for).
    path: str | None

    def line(self) -> bytes:
        return (json.dumps(self.__dict__, ensure_ascii=False, allow_nan=False) + "\n").encode()


@dataclass
class DayTotal:
    usd: float = 0.0
    images: int = 0
    #: By "provider model": [USD, images, the highest cost of one image].
    by: dict[str, list[float]] = field(default_factory=dict)

    def add(self, provider: str, model: str, usd: float) -> None:
        self.usd += usd
        self.images += 1
        entry = self.by.setdefault(f"{provider} {model}", [0.0, 0, 0.0])
        entry[0] += usd
        entry[1] += 1
        entry[2] = max(entry[2], usd)


class LedgerError(OSError):
    """The ledger cannot be read or written (a folder, a FIFO, no permission, a full disk)."""


def unusable(exc: OSError, path: Path) -> ConfigError:
    """A ledger that cannot be read, in words that name the variable to fix."""
    return ConfigError(f"The spend ledger {path} cannot be read ({exc.strerror or exc}). Set FLUX_KLEIN_LEDGER to "
                       "a file you can write (a regular file, or a path where one can be made), or fix the one named.")


#: Reading starts this far back from a day asked about (clocks of processes sharing a ledger may disagree).
_SLACK = timedelta(days=1)
_CHUNK = 1 << 20


class Ledger:
    def __init__(self, path: Path) -> None:
        # Resolved, so that every spelling of one ledger (a symlink, a relative path) shares one lock and one
        # record of reservations.
        self.path = path = Path(os.path.realpath(path))
        self._lock_path = path.with_name(path.name + ".lock")
        self._pending_path = path.with_name(path.name + ".pending")
        self._days: dict[date, DayTotal] = {}
        self._read_to = 0  # how far into the file the totals go
        self._identity: tuple[int, int] | None = None  # (device, inode) the totals were read from
        self._since: date | None = None  # the totals are complete from this day on (None: from the start)

    # --- reading -------------------------------------------------------------------------------------------

    def days(self, since: date | None = None) -> dict[date, DayTotal]:
        """Totals per local calendar day, brought up to date with what other processes appended. With `since`,
        only the end of a long ledger is read (lines are appended in time order), and days before it may be
        incomplete."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            self._days, self._read_to, self._identity, self._since = {}, 0, None, None
            return self._days
        except OSError as exc:
            raise LedgerError(exc.errno, f"{self.path}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):  # a folder, or a FIFO that would block the reader
            raise LedgerError(errno.EINVAL, f"{self.path} is not a regular file")
        identity = (info.st_dev, info.st_ino)
        wider = self._since is not None and (since is None or since < self._since)
        if identity != self._identity or info.st_size < self._read_to or wider:  # replaced, cut, or more wanted
            self._days, self._identity, self._since = {}, identity, since
            self._read_to = self._start(since, info.st_size) if since is not None else 0
        if info.st_size > self._read_to:
            with self.path.open("rb") as fh:
                fh.seek(self._read_to)
                while self._read_to < info.st_size:
                    chunk = fh.read(min(_CHUNK * 4, info.st_size - self._read_to))
                    complete = chunk.rfind(b"\n") + 1  # a line still being written is read next time
                    if complete == 0:
                        break
                    for raw in chunk[:complete].splitlines():
                        self._count(raw)
                    self._read_to += complete
                    fh.seek(self._read_to)
        return self._days

    def spent_on(self, day: date) -> float:
        total = self.days(since=day).get(day)
        return 0.0 if total is None else total.usd

    def _start(self, since: date, size: int) -> int:
        """Where to start reading for the days from `since`: the start of a line older than that (with slack),
        found by stepping back from the end; 0 for a small ledger."""
        if size <= _CHUNK * 4:
            return 0
        with self.path.open("rb") as fh:
            pos = size
            while pos > 0:
                pos = max(0, pos - _CHUNK)
                fh.seek(pos)
                chunk = fh.read(_CHUNK)
                first = chunk.find(b"\n") + 1 if pos else 0
                line = chunk[first:].split(b"\n", 1)[0]
                when = _time_of(line)
                if pos == 0 or (when is not None and when < since - _SLACK):
                    return pos + first
        return 0

    def _count(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            charge = json.loads(raw)
            cost = float(charge["cost_usd"])
            provider, model = charge["provider"], charge["model"]
            day = datetime.fromisoformat(str(charge["time"])).astimezone().date()
            if not math.isfinite(cost) or not 0 <= cost <= MAX_LINE_USD:
                raise ValueError("cost_usd is not an amount")
            if not isinstance(provider, str) or not isinstance(model, str):
                raise ValueError("provider and model must be text")
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            log.warning("Skipping a damaged line in the ledger %s (%s): %.80r", self.path, exc, raw)
            return
        self._days.setdefault(day, DayTotal()).add(provider, model, cost)

    # --- writing, under the lock ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger's lock (across processes) for a read-check-write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_regular(self._lock_path, os.O_RDWR)
        try:
            _lock(fd)
            try:
                yield
            finally:
                _unlock(fd)
        finally:
            os.close(fd)

    def check_writable(self) -> None:
        """Raise `LedgerError` unless a charge could be appended now (before any spend): the file opens for
        appending and its file system has room for a few lines (opening succeeds on a full disk)."""
        try:
            os.close(_open_regular(self.path, os.O_WRONLY | os.O_APPEND))
        except LedgerError as exc:
            if exc.errno != errno.ENOENT:
                raise
            self.path.parent.mkdir(parents=True, exist_ok=True)  # a first run, or a state folder cleaned up
            os.close(_open_regular(self.path, os.O_WRONLY | os.O_APPEND))
        too_small = room(self.path.parent, MIN_ROOM_BYTES, MIN_FREE_FILES)
        if too_small is not None:
            raise LedgerError(errno.ENOSPC, f"the ledger's folder {self.path.parent} {too_small}")

    def append(self, charges: list[Charge]) -> None:
        """Add charged images (call under `locked()`)."""
        if not charges:
            return
        fd = _open_regular(self.path, os.O_WRONLY | os.O_APPEND)
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
            fd = _open_regular(self._pending_path, os.O_RDONLY, create=False)
            with os.fdopen(fd, "rb") as fh:
                pending = json.loads(fh.read(1 << 20))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(pending, dict):
            return {}
        return {key: entry for key, entry in pending.items()
                if isinstance(entry, dict) and _alive(entry, now)}


#: What the ledger's file system must have free before a call: room for many lines, the lock and the reservations.
MIN_ROOM_BYTES = 64 * 1024
MIN_FREE_FILES = 4

#: A ledger line above this is damaged (no image costs a thousand dollars).
MAX_LINE_USD = 1000.0


def _time_of(line: bytes) -> date | None:
    try:
        return datetime.fromisoformat(str(json.loads(line)["time"])).astimezone().date()
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None


def _open_regular(path: Path, flags: int, *, create: bool = True) -> int:
    """Open a ledger file without ever blocking (a FIFO there would hang the server holding the lock), and only
    if it is a regular file."""
    # O_NOFOLLOW: the path was resolved when the server started; a link put there since is not the ledger.
    flags |= (getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
              | getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags | (os.O_CREAT if create else 0), 0o600)
    except OSError as exc:
        raise LedgerError(exc.errno, f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LedgerError(errno.EINVAL, f"{path} is not a regular file")
    return fd


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
