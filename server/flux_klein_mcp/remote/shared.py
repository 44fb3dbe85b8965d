"""What replicas share beside the ledger: approvals already used, and answers on their way to the replica that asked.

    claim_once(key, expires) -> bool   True for the first claim of a key (until it expires), False ever after
    post(key, value, expires)          leave an answer for whichever replica waits for it
    take(key) -> str | None            that answer, once

`SqliteShared` keeps both in an SQLite file beside the ledger (`<ledger>.replicas.sqlite3`): every process on this
machine that shares the ledger shares it too, and SQLite makes each claim atomic across them. Replicas on several
machines need a database they all reach: the ledger's shared backend (PostgreSQL) provides the same three
operations there (a table keyed by `key`, with an expiry, and `INSERT ... ON CONFLICT DO NOTHING` for the claim).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import ConsentRefused

if TYPE_CHECKING:
    import sqlite3


class Shared(Protocol):
    def claim_once(self, key: str, expires: float) -> bool: ...

    def post(self, key: str, value: str, expires: float) -> None: ...

    def take(self, key: str) -> str | None: ...


def beside_ledger(ledger: Path) -> Path:
    """Where the replicas' shared state lives: next to the ledger they share (resolved, as the ledger is)."""
    path = Path(os.path.realpath(ledger))
    return path.with_name(path.name + ".replicas.sqlite3")


class SharedStateError(ConsentRefused):
    """The shared state cannot be read or written: an approval cannot be checked, so nothing is spent."""


class SqliteShared:
    """`Shared` in one SQLite file, safe across threads and processes (a connection per operation)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        import sqlite3  # (on first use: stdio servers and start-up never need it)

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise SharedStateError(self._failed(exc)) from None
        try:
            db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, expires REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                       "expires REAL NOT NULL)")
            yield db
        except sqlite3.Error as exc:
            raise SharedStateError(self._failed(exc)) from None
        finally:
            db.close()

    def _failed(self, exc: Exception) -> str:
        return (f"The server could not read or write its shared state {self.path} ({exc}), so it cannot tell whether "
                "this approval was already used; nothing was sent. Check that folder (it sits beside "
                "FLUX_KLEIN_LEDGER), then call again.")

    def claim_once(self, key: str, expires: float) -> bool:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM claims WHERE expires <= ?", (time.time(),))
            claimed = db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?)", (key, expires)).rowcount == 1
            db.execute("COMMIT")
            return claimed

    def post(self, key: str, value: str, expires: float) -> None:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM answers WHERE expires <= ?", (time.time(),))
            db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)", (key, value, expires))
            db.execute("COMMIT")

    def take(self, key: str) -> str | None:
        with self._db() as db:
            # Looked up without a lock first: the waiting replica asks several times a second.
            if db.execute("SELECT 1 FROM answers WHERE key = ?", (key,)).fetchone() is None:
                return None
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value, expires FROM answers WHERE key = ?", (key,)).fetchone()
            db.execute("DELETE FROM answers WHERE key = ?", (key,))
            db.execute("COMMIT")
        return str(row[0]) if row is not None and row[1] > time.time() else None
