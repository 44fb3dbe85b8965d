"""The ledger in PostgreSQL (psycopg 3), so that replicas of the HTTP server share one budget:
FLUX_KLEIN_LEDGER=postgresql://user@host/db (the `postgres` extra installs the driver).

Reserve and settle take a transaction-level advisory lock, so they run one at a time across every replica, as
`BEGIN IMMEDIATE` does in SQLite. Each process also holds a session-level advisory lock for as long as its
connection lives, and its reservations carry that lock's key: a reservation whose key no session holds belongs to
a process that died, on whatever host (or lost its connection: then its settle replaces the booking), and is
booked as spent.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from .ledger import Ledger, LedgerError, T, Tx, wrapped
from .legacy import import_file
from .location import password_of, shown
from .schema import SCHEMA

log = logging.getLogger("flux_klein_mcp")

#: The advisory locks' first key, "FKLG": (NAMESPACE, 0) serializes reserve and settle, (NAMESPACE, n) is a
#: process's liveness lock.
NAMESPACE = 0x464B4C47
#: How long a transaction waits for another replica's lock before the ledger counts as unusable.
LOCK_TIMEOUT = "30s"
CONNECT_TIMEOUT_S = 10
_ERRORS = (psycopg.Error, OSError)
_TYPES = {"id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "time": "TIMESTAMPTZ", "day": "DATE"}


def _create(db: psycopg.Connection[tuple[Any, ...]]) -> None:
    """The tables and indexes that are missing (replicas starting together create them one at a time)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
        for statement in SCHEMA.format(**_TYPES).split(";"):
            if statement.strip():
                db.execute(statement)


class _PostgresTx(Tx):
    def __init__(self, connection: psycopg.Connection[tuple[Any, ...]]) -> None:
        self._db = connection

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._db.execute(sql.replace("?", "%s"), params).fetchall()

    def run(self, sql: str, *params: Any) -> int:
        return self._db.execute(sql.replace("?", "%s"), params).rowcount

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.cursor().executemany(sql.replace("?", "%s"), rows)


class PostgresLedger(Ledger):
    def __init__(self, url: str, timezone: Any = None, legacy: Path | None = None) -> None:
        super().__init__(timezone)
        self.url = url
        self.where = shown(url)
        self._hidden = password_of(url)
        self.legacy = legacy
        self._db: psycopg.Connection[tuple[Any, ...]] | None = None
        self._key: int | None = None

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._db is not None and not self._db.closed and not self._db.broken:
            return self._db
        self.close()  # a connection that broke: this process's liveness lock went with it; a new one is taken
        db = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                             application_name="flux-klein-mcp")
        try:
            db.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            while True:  # a random key no live session holds
                key = secrets.randbelow(2**31 - 2) + 1
                if db.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, key)).fetchone() == (True,):
                    break
            tables = db.execute("SELECT to_regclass('charges'), to_regclass('reservations'), "
                                "to_regclass('imports'), to_regclass('claims'), to_regclass('answers'), "
                                "to_regclass('charges_by_person')").fetchone()
            if tables is None or None in tables[:5]:  # (a role that may only read never gets here)
                _create(db)
            elif tables[5] is None:  # a ledger made before the index: a role that may only read does without it
                with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                    _create(db)
        except BaseException:
            db.close()
            raise
        self._db, self._key = db, key
        if self.legacy is not None:
            try:
                import_file(self, self.legacy)
            except BaseException:
                self.close()
                raise
        return db

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._db, self._key = None, None

    @contextlib.contextmanager
    def _write(self) -> Iterator[Tx]:
        with wrapped(_ERRORS, self.where, self._hidden):
            db = self._connect()
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (NAMESPACE,))
                yield _PostgresTx(db)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Tx]:
        with wrapped(_ERRORS, self.where, self._hidden):
            db = self._connect()
            with db.transaction():
                yield _PostgresTx(db)

    def _transact(self, work: Callable[[Tx], T], write: bool = True) -> T:
        try:
            return super()._transact(work, write)
        except LedgerError:
            # A connection that broke (a server restart, a failover, an idle connection a proxy dropped) is worth
            # one more try on a new one; `work` is written to come out the same when run twice.
            if self._db is None or not self._db.broken:
                raise
            log.warning("The connection to the ledger %s broke; trying again on a new one.", self.where)
            return super()._transact(work, write)

    def _owner_lock(self) -> int | None:
        return self._key

    def _dead(self, tx: Tx, owners: list[tuple[str, int | None]]) -> set[tuple[str, int | None]]:
        held = {row[0] for row in tx.rows(
            "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND "
            "classid::bigint = ? AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            NAMESPACE)}
        return {(name, lock) for name, lock in owners if lock is not None and lock not in held}
