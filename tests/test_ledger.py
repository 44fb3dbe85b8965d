"""The ledger, on both backends (SQLite, and PostgreSQL under `make test-postgres`): one suite, one interface.

A call reserves its worst case and settles it in one transaction each; totals are SQL over the budget day; what
the database holds cannot go negative; a reservation whose owner died is booked at its worst case, never freed;
an old JSON-lines ledger is imported once; reserve and settle stay on indexes however long the ledger grows.
"""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from flux_klein_mcp.errors import BudgetExceeded
from flux_klein_mcp.spend import Accountant, LedgerError, LedgerURL, Quote, open_ledger
from flux_klein_mcp.spend.ledger import DEAD_NOTE, UNSETTLED, Reservation
from flux_klein_mcp.spend.owner import me
from tests.conftest import rows_at
from tests.ledger_helpers import ELSEWHERE, KLEIN, charge, open_at, reservation, reserve, worker

# --- a call's life ---------------------------------------------------------------------------------------------

def test_a_call_reserves_its_worst_case_then_settles_to_what_was_charged(book, ledger_at):
    r = reserve(book, reservation(4 * KLEIN, images=4))
    [row] = rows_at(ledger_at, "reservations")
    assert (row["id"], row["usd"], row["images"], row["owner"]) == (r.id, 4 * KLEIN, 4, me())
    book.settle(r, [charge(0.004), charge(0.004)], datetime.now(UTC))
    assert rows_at(ledger_at, "reservations") == []
    booked = rows_at(ledger_at)
    assert [(c["usd"], c["images"], c["request_id"], c["owner"]) for c in booked] == [(0.004, 1, r.id, me())] * 2
    assert book.total(r.day, r.day).usd == pytest.approx(0.008)


def test_a_call_that_charged_nothing_books_nothing(book, ledger_at):
    book.settle(reserve(book, reservation(KLEIN)), [], datetime.now(UTC))
    assert rows_at(ledger_at) == [] and rows_at(ledger_at, "reservations") == []


def test_the_check_sees_the_days_charges_and_every_call_in_flight(book):
    today = datetime.now(UTC)
    book.settle(reserve(book, reservation(0.05)), [charge(0.05)], today)
    book.settle(reserve(book, reservation(0.01, day=date(2020, 1, 1))), [charge(0.9)], today)  # another day
    reserve(book, reservation(0.03))
    seen = []
    book.reserve(reservation(0.02), lambda snapshot: seen.append(snapshot) or reservation(0.02))
    assert seen[0].spent_usd == pytest.approx(0.05) and seen[0].reserved_usd == pytest.approx(0.03)
    assert seen[0].highest_usd == pytest.approx(0.05)


def test_a_refused_check_writes_nothing(book, ledger_at):
    def refuse(snapshot: Any) -> Reservation:
        raise BudgetExceeded("no")

    with pytest.raises(BudgetExceeded):
        book.reserve(reservation(KLEIN), refuse)
    assert rows_at(ledger_at, "reservations") == []


# --- totals by budget day, never by row order --------------------------------------------------------------------

def test_totals_are_summed_over_the_budget_day_whatever_order_the_rows_came_in(book):
    """Issue 15: a long ledger holding lines with older dates (a process with a wrong clock) undercounted today."""
    today, now = datetime.now().astimezone().date(), datetime.now(UTC)
    for day in [today, date(2019, 5, 1), today, today + timedelta(days=1), date(2020, 1, 1), today]:
        book.settle(reserve(book, reservation(0.01, day=day)), [charge(0.01)], now)
    assert book.total(today, today).usd == pytest.approx(0.03) and book.total(today, today).images == 3
    assert book.total().usd == pytest.approx(0.06)
    assert [(day, usd) for day, _, _, usd, _ in book.grouped(date(2020, 1, 1), today)] == [
        (date(2020, 1, 1), 0.01), (today, pytest.approx(0.03))]


def test_a_charge_dated_tomorrow_does_not_set_todays_price(book):
    """Issue 15: one line dated tomorrow set today's price to $5 an image and refused every call under $1."""
    tomorrow = datetime.now().astimezone().date() + timedelta(days=1)
    book.settle(reserve(book, reservation(5.0, day=tomorrow)), [charge(5.0)], datetime.now(UTC))
    accountant = Accountant(lambda: book, None, 1.0, clock=lambda: datetime.now().astimezone())
    tab = accountant.reserve(Quote("openrouter", "OpenRouter", "m", "low", 1, KLEIN, "price list"))
    assert tab.quote.per_image_usd == KLEIN and tab.quote.source == "price list"


def test_the_highest_charge_seen_today_raises_the_quote(book):
    book.settle(reserve(book, reservation(0.1)), [charge(0.1, images=2)], datetime.now(UTC))  # $0.05 an image
    accountant = Accountant(lambda: book, None, None, clock=lambda: datetime.now().astimezone())
    tab = accountant.reserve(Quote("openrouter", "OpenRouter", "m", "low", 2, KLEIN, "estimate"))
    assert (tab.quote.per_image_usd, tab.quote.source, tab.quote.usd) == (0.05, "highest charge seen", 0.1)
    assert tab.reservation is not None and tab.reservation.usd == 0.1


@pytest.mark.parametrize(("zone", "day"), [("Pacific/Kiritimati", date(2026, 1, 2)),
                                           ("Pacific/Pago_Pago", date(2026, 1, 1)), ("UTC", date(2026, 1, 1))])
def test_the_budget_day_is_the_calendar_day_of_FLUX_KLEIN_TIMEZONE(ledger_at, zone, day):
    ledger = open_at(ledger_at, ZoneInfo(zone))
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    accountant = Accountant(lambda: ledger, None, None, clock=lambda: moment)
    try:
        tab = accountant.reserve(Quote("openrouter", "OpenRouter", "m", "low", 1, KLEIN, "price list"))
        accountant.settle(tab, [charge(KLEIN)])
        assert [row["day"] for row in rows_at(ledger_at)] in ([day], [day.isoformat()])
        assert ledger.total(day, day).usd == KLEIN
    finally:
        ledger.close()


# --- what the database refuses -----------------------------------------------------------------------------

def test_a_negative_amount_is_refused_by_the_database_and_books_nothing(book, ledger_at):
    """Issue 15: a negative reservation in the old `.pending` file was believed, and let calls past the budget."""
    with pytest.raises(LedgerError, match="(?i)check"):
        reserve(book, reservation(-100.0))
    r = reserve(book, reservation(KLEIN))
    with pytest.raises(LedgerError, match="(?i)check"):
        book.settle(r, [charge(KLEIN), charge(-5.0)], datetime.now(UTC))
    assert rows_at(ledger_at) == [] and [row["id"] for row in rows_at(ledger_at, "reservations")] == [r.id]


def test_every_file_of_a_sqlite_ledger_is_private(tmp_path):
    """Issue 15: the old `.pending` file of reservations was readable by every user on the machine."""
    path = tmp_path / "state" / "ledger.sqlite3"
    ledger = open_at(str(path))
    ledger.settle(reserve(ledger, reservation(KLEIN)), [charge(KLEIN)], datetime.now(UTC))
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["ledger.sqlite3", "ledger.sqlite3-shm", "ledger.sqlite3-wal"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files) and path.parent.stat().st_mode & 0o777 == 0o700
    ledger.close()
    path.chmod(0o644)  # made by hand, or copied in
    reopened = open_at(str(path))
    assert reopened.total().images == 1 and path.stat().st_mode & 0o777 == 0o600
    reopened.close()


# --- owners that died --------------------------------------------------------------------------------------

def test_a_reservation_whose_process_died_is_booked_at_its_worst_case(book, ledger_at):
    """Issue 15: a call in flight when its process was SIGKILLed was never booked, though it may have been charged."""
    process = worker(ledger_at, "reserve-and-die", "3")
    assert process.communicate(timeout=60)[0].strip() == "reserved" and process.returncode == 0
    [left] = rows_at(ledger_at, "reservations")
    book.settle(reserve(book, reservation(KLEIN)), [charge(KLEIN)], datetime.now(UTC))  # any call books it
    dead, mine = rows_at(ledger_at)
    assert (dead["usd"], dead["images"], dead["source"], dead["note"]) == (3 * KLEIN, 3, UNSETTLED, DEAD_NOTE)
    assert dead["request_id"] == left["id"] and dead["owner"] == left["owner"] and mine["source"] == "provider"
    assert rows_at(ledger_at, "reservations") == [] and book.total().usd == pytest.approx(4 * KLEIN)


def test_a_report_books_the_calls_of_processes_that_died(book, ledger_at):
    process = worker(ledger_at, "reserve-and-die", "1")
    process.communicate(timeout=60)
    book.reap(datetime.now(UTC))
    assert [(row["source"], row["usd"]) for row in rows_at(ledger_at)] == [(UNSETTLED, KLEIN)]


def test_a_live_call_elsewhere_stays_reserved_until_it_expires(book, ledger_at):
    other = open_at(ledger_at)  # (on PostgreSQL, another session holding its own liveness lock)
    try:
        live = reserve(other, reservation(0.02, owner=ELSEWHERE))
        stale = reserve(other, reservation(0.03, owner=ELSEWHERE, at=datetime.now(UTC) - timedelta(hours=4)))
        seen = []
        book.reserve(reservation(0.01), lambda snapshot: seen.append(snapshot) or reservation(0.01))
        assert seen[0].reserved_usd == pytest.approx(0.02)  # the stale one was booked, the live one is reserved
        assert {row["id"] for row in rows_at(ledger_at, "reservations")} >= {live.id}
        [booked] = rows_at(ledger_at)
        assert (booked["request_id"], booked["usd"], booked["source"]) == (stale.id, 0.03, UNSETTLED)
    finally:
        other.close()


def test_a_call_settled_after_it_was_booked_as_dead_replaces_that_booking(book, ledger_at):
    late = reserve(book, reservation(0.04, images=2, at=datetime.now(UTC) - timedelta(hours=4)))
    book.reap(datetime.now(UTC))  # taken for dead: booked at its worst case
    assert [row["source"] for row in rows_at(ledger_at)] == [UNSETTLED]
    book.settle(late, [charge(0.004), charge(0.004)], datetime.now(UTC))  # it was alive after all
    assert [(row["source"], row["usd"]) for row in rows_at(ledger_at)] == [("provider", 0.004)] * 2
    assert book.total().usd == pytest.approx(0.008)


def test_settling_twice_books_once(book, ledger_at):
    """A settle run again (after a commit whose answer was lost) changes nothing."""
    r = reserve(book, reservation(KLEIN))
    book.settle(r, [charge(KLEIN)], datetime.now(UTC))
    book.settle(r, [charge(KLEIN)], datetime.now(UTC))
    assert reserve(book, r).id == r.id and book.total().images == 1  # and reserving twice is harmless too


@pytest.mark.postgres
def test_a_replica_whose_connection_broke_mid_call_still_books_what_it_was_charged(postgres_at):
    """A server restart, a failover or an idle connection dropped by a proxy: the call's reservation is booked at
    its worst case by the others (its liveness lock went with the connection), and its settle, on a new
    connection, replaces that booking with what was charged."""
    import psycopg

    replica, other = open_at(postgres_at), open_at(postgres_at)
    try:
        r = reserve(replica, reservation(0.04, images=2))
        backend = replica._db.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(postgres_at, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 30000)", (backend,))  # (waits until it is gone)
        other.reap(datetime.now(UTC))
        assert [(row["source"], row["usd"]) for row in rows_at(postgres_at)] == [(UNSETTLED, 0.04)]
        replica.settle(r, [charge(0.01)], datetime.now(UTC))  # (its first try meets the broken connection)
        assert [(row["source"], row["usd"]) for row in rows_at(postgres_at)] == [("provider", 0.01)]
        reserve(replica, reservation(KLEIN))  # and it goes on working
    finally:
        replica.close()
        other.close()


# --- writing, and proving it can be written ----------------------------------------------------------------

def test_doctors_probe_writes_for_real_and_rolls_back(book, ledger_at):
    book.probe()
    assert rows_at(ledger_at) == [] and book.total().images == 0


def test_reading_a_ledger_that_does_not_exist_makes_nothing(tmp_path):
    path = tmp_path / "state" / "ledger.sqlite3"
    ledger = open_at(str(path))
    ledger.reap(datetime.now(UTC))
    assert ledger.total().usd == 0 and ledger.grouped() == [] and not path.parent.exists()


@pytest.mark.parametrize("what", ["write-ahead log", "not a database", "another program's database"])
def test_a_sqlite_ledger_that_cannot_take_a_write_refuses_the_reservation(tmp_path, what):
    import contextlib
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    if what == "write-ahead log":
        path.with_name("ledger.sqlite3-wal").mkdir()  # what SQLite must create next to the file
    elif what == "not a database":
        path.write_text("somebody's notes\n")
    else:
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    ledger = open_at(str(path))
    for attempt in (ledger.probe, lambda: reserve(ledger, reservation(KLEIN))):
        with pytest.raises(LedgerError, match="ledger.sqlite3"):
            attempt()
    if what == "not a database":
        assert path.read_text() == "somebody's notes\n"
    if what == "another program's database":
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert [row[0] for row in db.execute("SELECT name FROM sqlite_master")] == ["photos"]
            assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # not even its journal


@pytest.mark.postgres
def test_a_postgres_role_that_may_only_read_cannot_reserve(postgres_at):
    import psycopg

    ledger_at = postgres_at
    owner = open_at(ledger_at)
    owner.probe()  # the tables exist
    owner.close()
    role, schema = f"reader_{uuid.uuid4().hex[:8]}", ledger_at.rsplit("%3D", 1)[1]
    with psycopg.connect(ledger_at, autocommit=True) as db:
        db.execute(f"CREATE ROLE {role} LOGIN")
        db.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    reader = open_at(ledger_at.replace("postgresql://postgres@", f"postgresql://{role}@"))
    try:
        with pytest.raises(LedgerError, match="permission denied"):
            reserve(reader, reservation(KLEIN))
        with pytest.raises(LedgerError, match="permission denied"):
            reader.probe()
        assert reader.total().usd == 0
    finally:
        reader.close()
        with psycopg.connect(ledger_at, autocommit=True) as db:
            db.execute(f"DROP OWNED BY {role}")
            db.execute(f"DROP ROLE {role}")


def test_a_postgres_ledger_without_its_driver_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "flux_klein_mcp.spend.postgres", raising=False)
    with pytest.raises(LedgerError, match=r"pip install 'flux-klein-mcp\[postgres\]'"):
        open_ledger(LedgerURL("postgresql://me:s3cret@db.example/flux"))


def test_a_postgres_url_is_shown_without_its_password():
    assert str(LedgerURL("postgresql://me:s3cret@db.example:5433/flux?sslmode=require")) == \
        "postgresql://me@db.example:5433/flux"
    assert "s3cret" not in repr(LedgerURL("postgresql://me:s3cret@db.example/flux"))


@pytest.mark.parametrize("url", ["postgresql://me:top%zzsecret@127.0.0.1:1/flux",  # a bad %-escape, quoted back
                                 "postgresql://me:topsecret@[::1:1/flux",  # a URL the driver quotes whole
                                 "postgresql://me:topsecret@127.0.0.1:1/flux?sslmode=bogus"])
def test_a_postgres_ledger_that_cannot_connect_never_repeats_the_password(url):
    ledger = open_ledger(LedgerURL(url))
    with pytest.raises(LedgerError) as refused:
        ledger.probe()
    assert "secret" not in str(refused.value) and "postgresql://me" in str(refused.value)
    assert refused.value.__cause__ is None  # (a traceback in a log would carry the driver's words)
