"""A long ledger, on both backends: reserve and settle stay on indexes however many charges it holds (the 5 ms
target itself is measured by `make bench`, never asserted on this noisy machine)."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from flux_klein_mcp.spend import Ledger
from tests.ledger_helpers import KLEIN, charge, reservation, reserve


def test_reserve_and_settle_stay_on_indexes_in_a_ledger_of_200000_rows(book, ledger_at, monkeypatch):
    """The 5 ms target is measured by `make bench`; here, that no statement reads the whole table of charges."""
    book.probe()  # the tables
    fill(ledger_at, 200_000)

    def calls() -> None:
        late = reserve(book, reservation(KLEIN, at=datetime.now(UTC) - timedelta(hours=4)))
        book.settle(reserve(book, reservation(KLEIN)), [charge(KLEIN)], datetime.now(UTC))  # books `late` as dead
        book.settle(late, [charge(KLEIN)], datetime.now(UTC))  # replaces that booking

    statements = recorded(monkeypatch, calls)
    touching = {(sql, params) for sql, params in statements if "charges" in sql and not sql.startswith("INSERT")}
    # The day's sum and its highest price; for the call settled after it was booked as dead: whether it was
    # settled already, and the booking it replaces.
    assert len({sql for sql, _ in touching}) == 4
    for sql, params in touching:
        plan = explain(book, ledger_at, sql, params)
        assert "SCAN charges" not in plan and "Seq Scan on charges" not in plan, (sql, plan)


def fill(where: str, count: int) -> None:
    """`count` charges over the last 400 days, written straight into the tables (as years of use would)."""
    values = "(CAST(? AS {t}), CAST(? AS {d}), 'openrouter', 'm', 'low', 1, 14000, 'provider', ?, 'o')"
    if where.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as db:
            db.execute("INSERT INTO charges (at, day, provider, model, tier, images, micro_usd, source, request_id, "
                       "owner) SELECT now(), current_date - mod(i, 400), 'openrouter', 'm', 'low', 1, 14000, "
                       "'provider', 'r' || i, 'o' FROM generate_series(1, %s) AS i", (count,))
            db.execute("ANALYZE charges")
        return
    import sqlite3

    with contextlib.closing(sqlite3.connect(where)) as db, db:
        today = date.today()
        rows = [(datetime.now(UTC).isoformat(), (today - timedelta(days=i % 400)).isoformat(), f"r{i}")
                for i in range(count)]
        db.executemany("INSERT INTO charges (at, day, provider, model, tier, images, micro_usd, source, request_id, "
                       f"owner) VALUES {values.format(t='TEXT', d='TEXT')}", rows)
        db.execute("ANALYZE")


def recorded(monkeypatch: pytest.MonkeyPatch, action: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements (and their parameters) `action` ran through the ledger's transactions."""
    from flux_klein_mcp.spend.ledger import Tx

    seen: list[tuple[str, tuple[Any, ...]]] = []

    def spying(real: Any) -> Any:
        def spy(self: Any, sql: str, *params: Any) -> Any:
            seen.append((sql, params))
            return real(self, sql, *params)

        return spy

    for cls in Tx.__subclasses__():
        for name in ("rows", "run"):
            monkeypatch.setattr(cls, name, spying(getattr(cls, name)))
    action()
    return seen


def explain(ledger: Ledger, where: str, sql: str, params: tuple[Any, ...]) -> str:
    if where.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(where, autocommit=True) as db:
            return "\n".join(row[0] for row in db.execute("EXPLAIN " + sql.replace("?", "%s"), params))
    import sqlite3

    with contextlib.closing(sqlite3.connect(where)) as db:
        return "\n".join(str(row[-1]) for row in db.execute("EXPLAIN QUERY PLAN " + sql, params))
