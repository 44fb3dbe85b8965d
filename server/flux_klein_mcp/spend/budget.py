"""Budgets, refused before any spend: a call reserves its worst case against the session and daily budgets, then
settles to what was charged or releases the reservation (a call that failed before the provider did any work).

- The session budget (FLUX_KLEIN_BUDGET_USD) covers this process: its reservations and charges are counted here,
  under one lock, so concurrent calls cannot both pass a check only one of them fits.
- The daily budget (FLUX_KLEIN_DAILY_BUDGET_USD) covers every process sharing the ledger: the check and the
  reservation are one ledger transaction, counting the day's charges and every call in flight.
- When people sign in, each has an accountant of their own (`person`): the daily budget is then each person's,
  counted from their rows on the ledger, and FLUX_KLEIN_SERVER_DAILY_BUDGET_USD caps everyone together. The session
  budget is each person's share of this process. What one person sees never includes another's spend.

Every paid call is reserved in the ledger, budget or not: a ledger that cannot take a write refuses the call before
anything is sent, and a call whose process is killed is still booked (see `ledger.py`). The ledger is opened on
first use: a server that only ever runs the free sandbox never reads or writes it.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from ..errors import BudgetExceeded, ConfigError
from .billing import Quote, budget_reached, shared_budget_reached
from .ledger import Charge, Ledger, LedgerError, Reservation, Snapshot, Total
from .owner import me

log = logging.getLogger("flux_klein_mcp")

#: Amounts are compared to the micro-dollar; float sums drift below that.
_EPSILON = 1e-9


@dataclass
class Tab:
    """One call's reservation (None for a call that costs nothing)."""

    quote: Quote
    reservation: Reservation | None
    open: bool = True


class Accountant:
    def __init__(self, open_ledger: Callable[[], Ledger], session_budget: float | None, daily_budget: float | None,
                 clock: Callable[[], datetime], person: str | None = None,
                 everyone_daily_budget: float | None = None) -> None:
        self._open_ledger = open_ledger
        self._ledger: Ledger | None = None
        self.session_budget = session_budget
        self.daily_budget = daily_budget
        #: The signed-in person this accountant books for (None: nobody signed in).
        self.person = person
        #: What everyone sharing the ledger may spend in a day (FLUX_KLEIN_SERVER_DAILY_BUDGET_USD).
        self.everyone_daily_budget = everyone_daily_budget
        self._clock = clock
        self._lock = threading.RLock()
        self._session = Total()
        #: The most one image of each (provider, model) cost in this session.
        self._highest: dict[tuple[str, str], float] = {}
        self._reserved = 0.0
        #: Charges the ledger could not take, by day: still part of today's spend (and of what a refusal says).
        self._unrecorded: dict[date, float] = {}

    @property
    def ledger(self) -> Ledger:
        """The ledger, opened on first use (a failure is tried again next time: the person may have fixed it)."""
        with self._lock:
            if self._ledger is None:
                self._ledger = self._open_ledger()
            return self._ledger

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()

    # --- a call's life -------------------------------------------------------------------------------------

    def check(self, quote: Quote) -> None:
        """Raise `BudgetExceeded` if the quote would be refused now; reserves nothing (for asking the person
        only about calls the budget allows)."""
        if quote.usd <= 0:
            return
        with self._lock:
            try:
                snapshot = self.ledger.snapshot(self._reservation(quote))
            except LedgerError as exc:  # (opening it included: a PostgreSQL URL without its driver)
                raise unwritable(exc) from None
            self._checked(quote, snapshot)

    def reserve(self, quote: Quote) -> Tab:
        """Reserve the quote against both budgets, or raise `BudgetExceeded`, before anything is sent. A ledger
        that could not record the charge refuses the call too (ConfigError): spend must never go unrecorded."""
        if quote.usd <= 0:
            return Tab(quote, None)
        with self._lock:
            learned = quote

            def check(snapshot: Snapshot) -> Reservation:
                nonlocal learned
                learned = self._checked(quote, snapshot)
                return replace(draft, usd=learned.usd, source=learned.source)

            try:
                draft = self._reservation(quote)
                reservation = self.ledger.reserve(draft, check)
            except LedgerError as exc:  # (opening it included: a PostgreSQL URL without its driver)
                raise unwritable(exc) from None
            self._reserved += learned.usd
        return Tab(learned, reservation)

    def _reservation(self, quote: Quote) -> Reservation:
        at = self._clock().astimezone(UTC)
        return Reservation(uuid.uuid4().hex, at, self._day(at), quote.provider, quote.model, quote.tier, quote.images,
                           quote.usd, quote.source, me(), self.person)

    def _checked(self, quote: Quote, snapshot: Snapshot) -> Quote:
        """The quote raised to what was learned, checked against both budgets (hold `_lock`)."""
        quote = self._learned(quote, snapshot.highest_usd)
        self._check(quote, "FLUX_KLEIN_BUDGET_USD", self.session_budget, self._session.usd, self._reserved,
                    "in this session (this process)")
        unrecorded = self._unrecorded.get(self._day(self._clock()), 0.0)
        if self.daily_budget is not None and self.person is None:
            self._check(quote, "FLUX_KLEIN_DAILY_BUDGET_USD", self.daily_budget, snapshot.spent_usd + unrecorded,
                        snapshot.reserved_usd, "today (every process sharing the ledger)")
        elif self.daily_budget is not None:
            self._check(quote, "FLUX_KLEIN_DAILY_BUDGET_USD", self.daily_budget,
                        snapshot.person_spent_usd + unrecorded, snapshot.person_reserved_usd,
                        "by you today (each person signed in has this budget)")
        everyone = self.everyone_daily_budget
        spent, reserved = snapshot.spent_usd + unrecorded, snapshot.reserved_usd
        if everyone is not None and self.person is None:
            self._check(quote, "FLUX_KLEIN_SERVER_DAILY_BUDGET_USD", everyone, spent, reserved,
                        "today by everyone using this server")
        elif everyone is not None and spent + reserved + quote.usd > everyone + _EPSILON:
            raise BudgetExceeded(shared_budget_reached(quote, everyone))  # (never what the others spent)
        return quote

    def _learned(self, quote: Quote, highest_today: float) -> Quote:
        """The quote, raised to the most this provider and model was seen to charge for one image (today, or in
        this session): a provider that publishes no price is quoted at an estimate until it reports its own."""
        seen = max(highest_today, self._highest.get((quote.provider, quote.model), 0.0))
        if seen <= quote.per_image_usd + _EPSILON:
            return quote
        return replace(quote, per_image_usd=seen, source="highest charge seen",
                       book=(quote.per_image_usd, quote.source))

    def settle(self, tab: Tab, charges: list[Charge]) -> str | None:
        """Book what the call was charged and free its reservation, in one ledger transaction. The session's total
        counts the charges even when the ledger cannot take them (then a warning comes back, for the notes)."""
        if not tab.open:
            return None
        with self._lock:
            tab.open = False
            if tab.reservation is None:
                return None
            self._reserved = max(0.0, self._reserved - tab.quote.usd)
            for charge in charges:
                self._session.add(charge.provider, charge.model, charge.usd, charge.images)
                if charge.images:
                    key = (charge.provider, charge.model)
                    self._highest[key] = max(self._highest.get(key, 0.0), charge.usd / charge.images)
            try:
                self.ledger.settle(tab.reservation, charges, self._clock().astimezone(UTC))
            except LedgerError as exc:
                day = tab.reservation.day
                self._unrecorded[day] = self._unrecorded.get(day, 0.0) + sum(c.usd for c in charges)
                log.error("Could not record %d charge(s) in the ledger: %s", len(charges), exc)
                return (f"The charge for this call could not be written to the ledger {self.ledger.where} ({exc}); "
                        "this session's budget still counts it. Check FLUX_KLEIN_LEDGER.")
        return None

    def release(self, tab: Tab) -> None:
        """A call that failed before anything was charged."""
        self.settle(tab, [])

    # --- what has been spent -------------------------------------------------------------------------------

    def standing(self, quote: Quote | None = None) -> dict[str, Any]:
        """`spent_session_usd`, `spent_today_usd`, and `budget_left_usd` when a budget is set. For a call that
        cost nothing (the sandbox), its own spend, labelled, without reading the ledger."""
        if quote is not None and quote.usd <= 0:
            return {"spent_session_usd": 0.0, "spent_today_usd": 0.0,
                    "spend_scope": f"{quote.provider}: nothing is charged, and the spend ledger is not read"}
        with self._lock:
            out: dict[str, Any] = {"spent_session_usd": round(self._session.usd, 6)}
            try:
                today = self._today_spent()
            except LedgerError as exc:
                log.error("Could not read today's spend from the ledger: %s", exc)
                return out
            out["spent_today_usd"] = round(today, 6)
            left = self._left(today, today if self.person is None else None)
            if left is not None:
                out["budget_left_usd"] = left
            return out

    def usage(self) -> dict[str, Any]:
        """Everything `get_usage` reports from the ledger and this process (for a person: their own spend)."""
        with self._lock:
            try:
                day = self._day(self._clock())
                reap(self.ledger, self._clock())
                today = self.ledger.total(day, day, self.person)
                everyone = self.ledger.total(day, day).usd if self.person is None else None
            except LedgerError as exc:
                raise unusable(exc) from None
            today.usd += self._unrecorded.get(day, 0.0)
            budgets: dict[str, Any] = {
                "session_usd": self.session_budget,
                "session_left_usd": _left(self.session_budget, self._session.usd),
                "daily_usd": self.daily_budget,
                "today_left_usd": _left(self.daily_budget, today.usd),
                "left_usd": self._left(today.usd, everyone),
            }
            if self.everyone_daily_budget is not None:
                budgets["server_daily_usd"] = self.everyone_daily_budget
            report = {
                "session": summary(self._session),
                "today": summary(today),
                "in_flight_usd": max(0.0, round(self._reserved, 6)),
                "budgets": budgets,
                "ledger": self.ledger.where,
            }
            if self.person is not None:  # (where the ledger is, a path or a database's address, is the operator's)
                del report["ledger"]
                report["person"] = self.person
                report["spend_scope"] = ("yours: you are signed in, and each person's spend and budget are their "
                                         "own (FLUX_KLEIN_DAILY_BUDGET_USD is each person's)")
            return report

    def _day(self, moment: datetime) -> date:
        return self.ledger.day_of(moment)

    def _today_spent(self) -> float:
        day = self._day(self._clock())
        return self.ledger.total(day, day, self.person).usd + self._unrecorded.get(day, 0.0)

    def _left(self, today: float, everyone: float | None = None) -> float | None:
        """What the budgets leave. A person is not told what the server-wide cap leaves: that would tell them what
        the others spent."""
        lefts = [x for x in (_left(self.session_budget, self._session.usd), _left(self.daily_budget, today),
                             _left(self.everyone_daily_budget, everyone) if everyone is not None else None)
                 if x is not None]
        return min(lefts) if lefts else None

    @staticmethod
    def _check(quote: Quote, variable: str, budget: float | None, spent: float, reserved: float,
               scope: str) -> None:
        if budget is None or spent + reserved + quote.usd <= budget + _EPSILON:
            return
        raise BudgetExceeded(budget_reached(quote, variable, budget, spent, reserved, scope))


def reap(ledger: Ledger, now: datetime) -> None:
    """Book the calls of processes that died, before a report (a ledger only readable here is read as it is)."""
    try:
        ledger.reap(now.astimezone(UTC))
    except LedgerError as exc:
        log.warning("Calls left unsettled by processes that ended could not be booked now: %s", exc)


def unwritable(exc: LedgerError) -> ConfigError:
    return ConfigError(f"The spend ledger cannot be written ({exc}), so this call's charge could not be recorded: "
                       "nothing was sent. Set FLUX_KLEIN_LEDGER to a file you can write, or fix the one named.")


def unusable(exc: LedgerError) -> ConfigError:
    """A ledger that cannot be read, in words that name the variable to fix."""
    return ConfigError(f"The spend ledger cannot be read ({exc}). Set FLUX_KLEIN_LEDGER to a file you can write (a "
                       "regular file, or a path where one can be made), or fix the one named.")


def _left(budget: float | None, spent: float) -> float | None:
    return None if budget is None else round(max(0.0, budget - spent), 6)


def summary(total: Total) -> dict[str, Any]:
    return {
        "spent_usd": round(total.usd, 6),
        "images": total.images,
        "by_provider_model": [
            {"provider": provider, "model": model, "spent_usd": round(usd, 6), "images": int(images)}
            for (provider, model), (usd, images) in sorted(total.by.items())
        ],
    }
