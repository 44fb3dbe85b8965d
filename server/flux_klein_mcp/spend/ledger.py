"""The ledger: what was charged, and what calls in flight have reserved, in a real database shared by every process
(and every replica) that points at it. SQLite by default (`sqlite.py`), PostgreSQL when FLUX_KLEIN_LEDGER is a
`postgresql://` URL (`postgres.py`); one schema and one interface, the SQL below shared by both.

    charges       one row per booking: when (UTC), the budget day, provider, model, tier, images, micro-USD, where
                  the figure came from (`source`), the call's request id, the provider's generation id, the owner
                  (the process that booked it), the person (signed-in user, when there is one), the image's path
                  and a note
    reservations  one row per paid call in flight: its worst case, owner, person, when it expires

Amounts are whole micro-dollars (USD x 1,000,000): sums are exact, and a budget stops exactly at its cap. Totals
always come from SQL over the budget day, never from the order rows were written in. A call reserves in one
transaction that also checks the budget (`reserve`); it settles in one transaction that deletes its reservation
and books its charges (`settle`). A reservation whose owner died is booked as spent at its worst case
(`UNSETTLED`), never silently freed: the provider may have charged it. Should the owner turn out alive after all
(its connection came back), its settle replaces that booking with what was charged.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from ..store import user_folder
from .schema import INSERT_CHARGE, INSERT_RESERVATION, RESERVATION_COLUMNS

log = logging.getLogger("flux_klein_mcp")
T = TypeVar("T")

#: A reservation this old is booked as spent whoever holds it (no call runs this long: two requests of at most
#: an hour each, and a wait). It is how a process on another host is known dead on SQLite.
RESERVATION_TTL = timedelta(hours=3)
#: The source of a booking made for a reservation whose owner died before settling it.
UNSETTLED = "unsettled"
DEAD_NOTE = ("the process that made this call ended (or its reservation expired) before it was settled; booked at "
             "its worst case, since the provider may have charged it")
#: A charge above this for one image is damaged (no image costs a thousand dollars).
MAX_LINE_USD = 1000.0
MICRO = 1_000_000
#: What the `spend` command can group by.
GROUPS = ("day", "provider", "model")


def default_ledger() -> Path:
    """The per-user state folder's ledger: ~/.local/state on Linux, the platform's equivalent elsewhere."""
    return user_folder("XDG_STATE_HOME", ".local/state") / "ledger.sqlite3"


def micro(usd: float) -> int:
    return round(usd * MICRO)


class LedgerError(Exception):
    """The ledger cannot be opened, read or written (a folder, no permission, a full disk, a server down)."""


@dataclass(frozen=True)
class Charge:
    """What one call was charged for some of its images (the billing's side; the ledger adds when, the day, the
    request id, owner and person)."""

    provider: str
    model: str
    tier: str
    images: int
    usd: float
    #: "provider", "price list", "estimate", "highest charge seen", or `UNSETTLED`.
    source: str
    generation_id: str | None = None
    #: The saved image; None when it was charged but not kept (unusable, cancelled, more than asked for).
    path: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Reservation:
    """One paid call in flight: its worst case, reserved before anything is sent."""

    id: str
    at: datetime  # UTC
    day: date  # the budget day it was made on
    provider: str
    model: str
    tier: str
    images: int
    usd: float
    source: str
    owner: str
    person: str | None = None

    @property
    def expires(self) -> datetime:
        return self.at + RESERVATION_TTL


@dataclass(frozen=True)
class Snapshot:
    """What a budget check needs, read in the transaction that reserves."""

    spent_usd: float  # booked on the day
    reserved_usd: float  # reserved by every call in flight
    #: The most one image of the provider and model was booked at on the day (0 when none was).
    highest_usd: float
    #: The same two for the reservation's person alone (0 when nobody is signed in).
    person_spent_usd: float = 0.0
    person_reserved_usd: float = 0.0


@dataclass
class Total:
    """Spend over some rows: USD, images, and by (provider, model)."""

    usd: float = 0.0
    images: int = 0
    by: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, provider: str, model: str, usd: float, images: int) -> None:
        self.usd += usd
        self.images += images
        entry = self.by.setdefault((provider, model), [0.0, 0])
        entry[0] += usd
        entry[1] += images


class Tx(abc.ABC):
    """One transaction (or one read) on a backend's connection; SQL is written with `?` placeholders."""

    @abc.abstractmethod
    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    def run(self, sql: str, *params: Any) -> int:
        """Execute; the number of rows changed."""

    @abc.abstractmethod
    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def one(self, sql: str, *params: Any) -> tuple[Any, ...]:
        return self.rows(sql, *params)[0]


class Ledger(abc.ABC):
    """The interface the budgets, `get_usage`, `spend` and `doctor` use. Thread-safe (one operation at a time)."""

    #: Where it is, for messages: a path, or a URL without its password.
    where: str

    def __init__(self, timezone: Any = None) -> None:
        #: The budget day's time zone (None: this machine's).
        self.timezone = timezone
        self._lock = threading.RLock()

    # --- what a backend provides -------------------------------------------------------------------------

    @abc.abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Tx]:
        """An exclusive transaction (reserve and settle run one at a time across every process), committed when
        the block ends, rolled back on any exception. Database errors come out as `LedgerError`."""

    @abc.abstractmethod
    def _read(self) -> contextlib.AbstractContextManager[Tx]:
        """A consistent read."""

    @abc.abstractmethod
    def _dead(self, tx: Tx, owners: list[tuple[str, int | None]]) -> set[tuple[str, int | None]]:
        """Which of these (owner, owner_lock) are gone."""

    def _owner_lock(self) -> int | None:
        """This process's liveness lock (PostgreSQL), recorded with its reservations."""
        return None

    def _time(self, moment: datetime) -> Any:
        return moment

    def _day(self, day: date) -> Any:
        return day

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection (and with it, on PostgreSQL, this process's liveness lock)."""

    # --- the budget day ----------------------------------------------------------------------------------

    def day_of(self, moment: datetime) -> date:
        """The budget day a moment falls on: the calendar day in FLUX_KLEIN_TIMEZONE, else this machine's."""
        return moment.astimezone(self.timezone).date()

    # --- a call's life -----------------------------------------------------------------------------------

    def reserve(self, reservation: Reservation, check: Callable[[Snapshot], Reservation]) -> Reservation:
        """Reserve a call's worst case in one exclusive transaction: book dead owners' reservations, read the
        day (`check` may raise to refuse the call, or return the reservation to record), write it."""
        def work(tx: Tx) -> Reservation:
            self._reap(tx, reservation.at)
            chosen = check(self._snapshot(tx, reservation))
            tx.run(INSERT_RESERVATION, chosen.id, self._time(chosen.at), self._time(chosen.expires),
                   self._day(chosen.day), chosen.provider, chosen.model, chosen.tier, chosen.images, micro(chosen.usd),
                   chosen.source, chosen.owner, self._owner_lock(), chosen.person)
            return chosen

        return self._transact(work)

    def snapshot(self, reservation: Reservation) -> Snapshot:
        """What `check` would be given now, without reserving (to ask the person only about calls a budget allows)."""
        return self._transact(lambda tx: self._snapshot(tx, reservation), write=False)

    def settle(self, reservation: Reservation, charges: Sequence[Charge], at: datetime) -> None:
        """Delete the reservation and book what the call was charged, in one transaction. Had the reservation been
        booked as its owner's death, that booking is replaced by these charges; had it been settled already (this
        run again after a commit whose answer was lost), nothing changes."""
        def work(tx: Tx) -> None:
            if tx.run("DELETE FROM reservations WHERE id = ?", reservation.id) == 0:
                if tx.rows("SELECT 1 FROM charges WHERE request_id = ? AND source <> ? LIMIT 1", reservation.id,
                           UNSETTLED):
                    return
                tx.run("DELETE FROM charges WHERE request_id = ? AND source = ?", reservation.id, UNSETTLED)
            tx.many(INSERT_CHARGE, [self._charge_row(charge, at, reservation.day, reservation.id, reservation.owner,
                                                     reservation.person) for charge in charges])

        self._transact(work)

    def reap(self, now: datetime) -> None:
        """Book the reservations whose owner died (run before reporting, so a killed call shows as spent)."""
        # (Nothing is written, or made, when nothing is in flight.)
        if self._transact(lambda tx: bool(tx.rows("SELECT 1 FROM reservations LIMIT 1")), write=False):
            self._transact(lambda tx: self._reap(tx, now))

    def _transact(self, work: Callable[[Tx], T], write: bool = True) -> T:
        """`work` in one transaction, exclusive when it writes (a backend may run it again on a new connection:
        what `work` does must come out the same when it is run twice)."""
        with self._lock, (self._write() if write else self._read()) as tx:
            return work(tx)

    def probe(self) -> None:
        """Prove a charge could be written now: a real write, rolled back."""
        def work(tx: Tx) -> None:
            tx.run(INSERT_CHARGE, *self._charge_row(Charge("probe", "probe", "low", 0, 0.0, "probe"),
                                                    datetime.now(UTC), date.today(), None, "probe", None))
            raise _RolledBack

        with contextlib.suppress(_RolledBack):
            self._transact(work)

    # --- what replicas share (remote/shared.py) ---------------------------------------------------------

    def claim_once(self, key: str, expires: float) -> bool:
        """True for the first claim of `key` until `expires` (a Unix time), False for every later one."""
        def work(tx: Tx) -> bool:
            tx.run("DELETE FROM claims WHERE expires <= ?", time.time())
            return tx.run("INSERT INTO claims (key, expires) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                          key, expires) == 1

        return self._transact(work)

    def post(self, key: str, value: str, expires: float) -> None:
        """Leave `value` under `key` for whichever process takes it, until `expires`."""
        def work(tx: Tx) -> None:
            tx.run("DELETE FROM answers WHERE expires <= ?", time.time())
            tx.run("INSERT INTO answers (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = excluded.value, expires = excluded.expires", key, value, expires)

        self._transact(work)

    def take(self, key: str) -> str | None:
        """The value left under `key` (and gone from there), or None."""
        # Looked up without the write lock first: a waiting replica asks several times a second.
        if not self._transact(lambda tx: bool(tx.rows("SELECT 1 FROM answers WHERE key = ?", key)), write=False):
            return None

        def work(tx: Tx) -> str | None:
            found = tx.rows("SELECT value, expires FROM answers WHERE key = ?", key)
            tx.run("DELETE FROM answers WHERE key = ?", key)
            return str(found[0][0]) if found and float(found[0][1]) > time.time() else None

        return self._transact(work)

    # --- what was spent ----------------------------------------------------------------------------------

    def total(self, first: date | None = None, last: date | None = None, person: str | None = None) -> Total:
        """Spend over the budget days from `first` to `last` (inclusive; None: unbounded)."""
        total = Total()
        for _, provider, model, usd, images in self.grouped(first, last, person):
            total.add(provider, model, usd, images)
        return total

    def grouped(self, first: date | None = None, last: date | None = None,
                person: str | None = None) -> list[tuple[date, str, str, float, int]]:
        """(day, provider, model, USD, images) over the budget days from `first` to `last`."""
        where, params = self._where(first, last, person)
        rows = self._transact(lambda tx: tx.rows(
            "SELECT day, provider, model, SUM(micro_usd), SUM(images) FROM charges" + where
            + " GROUP BY day, provider, model ORDER BY day, provider, model", *params), write=False)
        return [(_as_date(day), provider, model, int(usd) / MICRO, int(images)) for day, provider, model, usd, images
                in rows]

    def by_person(self, first: date | None = None, last: date | None = None) -> list[tuple[str | None, float, int]]:
        """(person, USD, images) over the budget days from `first` to `last`; None for calls nobody signed in to."""
        where, params = self._where(first, last, None)
        rows = self._transact(lambda tx: tx.rows(
            "SELECT person, SUM(micro_usd), SUM(images) FROM charges" + where + " GROUP BY person ORDER BY person",
            *params), write=False)
        return [(person, int(usd) / MICRO, int(images)) for person, usd, images in rows]

    def import_charges(self, sha256: str, file: str, charges: Callable[[], Iterable[tuple[datetime, Charge]]],
                       good: int, damaged: int) -> bool:
        """Book the charges read from an old JSON-lines ledger (`charges()` yields them, as many times as asked),
        once per file content; False when that content was imported before."""
        def work(tx: Tx) -> bool:
            if tx.rows("SELECT 1 FROM imports WHERE sha256 = ?", sha256):
                return False
            tx.many(INSERT_CHARGE, (self._charge_row(charge, at, self.day_of(at), None, f"imported from {file}",
                                                     None) for at, charge in charges()))
            tx.run("INSERT INTO imports (sha256, file, at, charges, damaged) VALUES (?, ?, ?, ?, ?)", sha256, file,
                   self._time(datetime.now(UTC)), good, damaged)
            return True

        return self._transact(work)

    # --- shared SQL ----------------------------------------------------------------------------------------

    def _where(self, first: date | None, last: date | None, person: str | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if first is not None:
            clauses.append("day >= ?")
            params.append(self._day(first))
        if last is not None:
            clauses.append("day <= ?")
            params.append(self._day(last))
        if person is not None:
            clauses.append("person = ?")
            params.append(person)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _snapshot(self, tx: Tx, reservation: Reservation) -> Snapshot:
        day = self._day(reservation.day)
        spent = tx.one("SELECT COALESCE(SUM(micro_usd), 0) FROM charges WHERE day = ?", day)[0]
        reserved = tx.one("SELECT COALESCE(SUM(micro_usd), 0) FROM reservations WHERE id <> ?", reservation.id)[0]
        # Only real charges teach a price (a booking at a worst case repeats a quote).
        highest = tx.one("SELECT MAX(CAST(micro_usd AS DOUBLE PRECISION) / images) FROM charges WHERE day = ? AND "
                         "provider = ? AND model = ? AND source <> ? AND images > 0", day, reservation.provider,
                         reservation.model, UNSETTLED)[0]
        mine = mine_reserved = 0
        if reservation.person is not None:  # (the charges_by_person index)
            mine = tx.one("SELECT COALESCE(SUM(micro_usd), 0) FROM charges WHERE day = ? AND person = ?", day,
                          reservation.person)[0]
            mine_reserved = tx.one("SELECT COALESCE(SUM(micro_usd), 0) FROM reservations WHERE id <> ? AND "
                                   "person = ?", reservation.id, reservation.person)[0]
        return Snapshot(int(spent) / MICRO, int(reserved) / MICRO, float(highest or 0) / MICRO, int(mine) / MICRO,
                        int(mine_reserved) / MICRO)

    def _reap(self, tx: Tx, now: datetime) -> None:
        rows = tx.rows(f"SELECT {RESERVATION_COLUMNS} FROM reservations")
        if not rows:
            return
        owners = {(row[10], row[11]) for row in rows}
        dead = self._dead(tx, sorted(owners - {(_me(), self._owner_lock())}, key=str))
        for (rid, _, expires, day, provider, model, tier, images, micro_usd, _, owner, owner_lock,
             person) in rows:
            if (owner, owner_lock) not in dead and _as_time(expires) > now:
                continue
            tx.run("DELETE FROM reservations WHERE id = ?", rid)
            charge = Charge(provider, model, tier, images, micro_usd / MICRO, UNSETTLED, note=DEAD_NOTE)
            tx.run(INSERT_CHARGE, *self._charge_row(charge, now, _as_date(day), rid, owner, person))
            log.warning("A call that was never settled (its process, %s, ended, or its reservation expired) is booked "
                        "as spent at its worst case: $%.4f for %d image(s) on %s.", owner, micro_usd / MICRO, images,
                        provider)

    def _charge_row(self, charge: Charge, at: datetime, day: date, request_id: str | None, owner: str,
                    person: str | None) -> tuple[Any, ...]:
        return (self._time(at), self._day(day), charge.provider, charge.model, charge.tier, charge.images,
                micro(charge.usd), charge.source, request_id, charge.generation_id, owner, person, charge.path,
                charge.note)


class _RolledBack(Exception):
    """Ends `probe`'s transaction without committing it."""


def _me() -> str:
    from .owner import me

    return me()


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _as_time(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@contextlib.contextmanager
def wrapped(errors: tuple[type[BaseException], ...], where: str, hidden: Sequence[str] = ()) -> Iterator[None]:
    """Database and file errors as `LedgerError`, naming the ledger (and never what `hidden` holds)."""
    try:
        yield
    except errors as exc:
        reason = _reason(exc)
        for secret in hidden:
            reason = reason.replace(secret, "***")
        raise LedgerError(f"{where}: {reason}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
