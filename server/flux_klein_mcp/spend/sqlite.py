"""The ledger in SQLite (Python's own `sqlite3`): one file, mode 0600, in write-ahead-log mode so that readers never
wait for a writer; reserve and settle are `BEGIN IMMEDIATE` transactions, so processes sharing the file take turns.

The file is made only when something is written: reading a ledger that does not exist yet (`spend` on a fresh
machine, `get_usage` before any paid call) reads an empty one and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ..store import room
from . import owner
from .ledger import Ledger, Tx, wrapped
from .legacy import import_file
from .schema import SCHEMA

#: How long a transaction waits for another process's to end before the ledger counts as unusable.
BUSY_TIMEOUT_S = 30.0
#: What the ledger's file system must have free before a paid call: room for its rows and the write-ahead log.
MIN_ROOM_BYTES = 64 * 1024
MIN_FREE_FILES = 4
HEADER = b"SQLite format 3\x00"
_ERRORS = (sqlite3.Error, OSError)
_TYPES = {"id": "INTEGER PRIMARY KEY", "time": "TEXT", "day": "TEXT"}


class _SQLiteTx(Tx):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def run(self, sql: str, *params: Any) -> int:
        return self._db.execute(sql, params).rowcount

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)


class SQLiteLedger(Ledger):
    def __init__(self, path: Path, timezone: Any = None, legacy: Path | None = None) -> None:
        super().__init__(timezone)
        # Resolved: every spelling of one ledger (a symlink, a relative path) is one database.
        self.path = Path(os.path.realpath(path))
        self.where = str(self.path)
        #: An earlier version's JSON-lines ledger, imported on first use (see `legacy.py`).
        self.legacy = legacy
        self._db: sqlite3.Connection | None = None

    # --- connections ---------------------------------------------------------------------------------------

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """The connection, opened (and the file made, with `create`) on first use; None when there is no file."""
        if self._db is not None:
            if not self._still_there():
                self.close()  # replaced or removed under us: open what is there now
            else:
                return self._db
        with wrapped(_ERRORS, self.where):
            if not self._check_file(create or (self.legacy is not None and self.legacy.exists())):
                return None
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            try:
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "charges" not in tables:  # a path mistyped onto another program's database
                    raise OSError(errno.EINVAL, f"it is another program's database (tables: "
                                  f"{', '.join(sorted(tables)[:5])}); nothing was changed in it")
                info = os.stat(self.path)
                if info.st_mode & 0o077 and info.st_uid == getattr(os, "getuid", lambda: -1)():
                    os.chmod(self.path, 0o600)  # a ledger copied in, or made by hand: others may not read it
                _into_wal(db)
                # In WAL mode, NORMAL never corrupts and loses nothing when a process dies; only a power cut can
                # lose the last commits. FULL would sync the disk twice per call: 1-7 ms here, at the disk's mercy.
                db.execute("PRAGMA synchronous = NORMAL")
                with _immediate(db):
                    for statement in SCHEMA.format(**_TYPES).split(";"):
                        if statement.strip():
                            db.execute(statement)
            except BaseException:
                db.close()
                raise
            self._db, self._identity = db, _identity(self.path)
        if self.legacy is not None:
            try:
                import_file(self, self.legacy)
            except BaseException:
                self.close()  # tried again on the next use
                raise
        return self._db

    def _check_file(self, create: bool) -> bool:
        """The file is a SQLite database we may use (made 0600 if missing and `create`); False if absent."""
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            if not create:
                return False
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                                 0o600))
                return True
            except FileExistsError:  # another process made it a moment ago: check what is there now
                info = os.lstat(self.path)
        if not stat.S_ISREG(info.st_mode):  # a folder, a FIFO that would block the reader, a link swapped in
            raise OSError(errno.EINVAL, "it is not a regular file")
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:  # (non-blocking: a pipe swapped in a moment ago must not hang us)
            header = fh.read(len(HEADER))
        if header not in (b"", HEADER):
            raise OSError(errno.EINVAL, "it is not a SQLite database (a JSON-lines ledger of an earlier version "
                          "is imported from a file named *.jsonl beside it: rename it so)")
        return True

    def _still_there(self) -> bool:
        try:
            return _identity(self.path) == self._identity
        except OSError:
            return False

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- transactions --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[Tx]:
        with wrapped(_ERRORS, self.where):
            db = self._connect(create=True)
            assert db is not None
            too_small = room(self.path.parent, MIN_ROOM_BYTES, MIN_FREE_FILES)
            if too_small is not None:  # SQLite would take a row or two, then fail mid-call on a full disk
                raise OSError(errno.ENOSPC, f"its folder {self.path.parent} {too_small}")
            with _immediate(db):
                yield _SQLiteTx(db)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Tx]:
        with wrapped(_ERRORS, self.where):
            db = self._connect(create=False)
            if db is None:  # nothing written yet: an empty ledger, and no file made for it
                with contextlib.closing(sqlite3.connect(":memory:")) as empty:
                    empty.executescript(SCHEMA.format(**_TYPES))
                    yield _SQLiteTx(empty)
                return
            db.execute("BEGIN")
            try:
                yield _SQLiteTx(db)
            finally:
                db.execute("ROLLBACK")

    def _dead(self, tx: Tx, owners: list[tuple[str, int | None]]) -> set[tuple[str, int | None]]:
        return {(name, lock) for name, lock in owners if owner.alive(name) is False}

    def _time(self, moment: datetime) -> str:
        return moment.astimezone(UTC).isoformat(timespec="microseconds")

    def _day(self, day: date) -> str:
        return day.isoformat()


def _into_wal(db: sqlite3.Connection) -> None:
    """Put the database in WAL mode (it stays so). Switching needs the file to itself, and SQLite answers "database is
    locked" at once, without waiting on the busy timeout, while another process holds it open: processes creating
    the ledger together retry until one has switched it (then the others find it switched)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # (a lock held for the microseconds another process takes to switch it)


@contextlib.contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino
