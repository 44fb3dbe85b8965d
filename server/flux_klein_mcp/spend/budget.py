"""Budgets, refused before any spend: a call reserves its worst case against the session and daily budgets, then
settles to what was charged (saved images only) or releases the reservation (a failed or cancelled call).

- The session budget (FLUX_KLEIN_BUDGET_USD) covers this process: its reservations and charges are counted here,
  under one lock, so concurrent calls cannot both pass a check only one of them fits.
- The daily budget (FLUX_KLEIN_DAILY_BUDGET_USD) covers every process sharing the ledger: its check and the
  reservation happen under the ledger's file lock, counting the day's charges and every live reservation.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from ..errors import BudgetExceeded, ConfigError
from ..words import either, plural, usd
from .ledger import Charge, DayTotal, Ledger, unusable

log = logging.getLogger("flux_klein_mcp")

#: Amounts are compared to the micro-dollar; float sums drift below that.
_EPSILON = 1e-9


@dataclass(frozen=True)
class Quote:
    """The worst case a call can cost, known before any request."""

    provider: str
    label: str
    model: str
    tier: str
    images: int
    per_image_usd: float
    #: "price list" when the provider publishes a price, "estimate" when the klein list price stands in, "highest
    #: charge seen" when the provider charged more than either.
    source: str
    #: With "highest charge seen": the price and source an image is booked at when the provider reports no cost
    #: (a worst case learned from one odd charge must not become every image's price).
    book: tuple[float, str] | None = None

    @property
    def usd(self) -> float:
        return round(self.per_image_usd * self.images, 6)

    @property
    def booked(self) -> tuple[float, str]:
        """What one image with no cost of its own is recorded at, and the source named for it."""
        return self.book or (self.per_image_usd, self.source)


@dataclass
class Tab:
    """One call's reservation."""

    quote: Quote
    key: str
    open: bool = True


class Accountant:
    def __init__(self, ledger: Ledger, session_budget: float | None, daily_budget: float | None,
                 clock: Callable[[], datetime]) -> None:
        self.ledger = ledger
        self.session_budget = session_budget
        self.daily_budget = daily_budget
        self._clock = clock
        self._lock = threading.Lock()
        self._session = DayTotal()
        self._reserved = 0.0
        self._keys = itertools.count(1)
        #: Charges the ledger could not take, by day: still part of today's spend (and of what a refusal says).
        self._unrecorded: dict[date, float] = {}

    # --- a call's life -------------------------------------------------------------------------------------

    def check(self, quote: Quote) -> None:
        """Raise `BudgetExceeded` if the quote would be refused now; reserves nothing (for asking the person
        only about calls the budget allows)."""
        if quote.usd > 0:
            with self._lock, self._ledger_locked():
                self._check_both(self._learned(quote))

    def reserve(self, quote: Quote) -> Tab:
        """Reserve the quote against both budgets, or raise `BudgetExceeded`, before anything is sent. A ledger
        that could not record the charge refuses the call too (ConfigError): spend must never go unrecorded."""
        if quote.usd <= 0:
            return Tab(quote, "")
        # Only a daily budget needs the other processes' calls in flight: without one, no shared reservation is
        # written and the ledger's lock is not taken (the check runs under this process's lock alone).
        shared = self.daily_budget is not None
        with self._lock:
            with self._ledger_locked() if shared else self._ledger_writable():
                quote = self._learned(quote)
                self._check_both(quote)
                tab = Tab(quote, f"{os.getpid()}-{id(self)}-{next(self._keys)}" if shared else "")
                if shared:
                    self.ledger.set_pending(tab.key, quote.usd)
            self._reserved += quote.usd
        return tab

    def _learned(self, quote: Quote) -> Quote:
        """The quote, raised to the most this provider and model was seen to charge for one image (today, or in
        this session): a provider that publishes no price is quoted at an estimate until it reports its own."""
        key = f"{quote.provider} {quote.model}"
        totals = [self._session, *self.ledger.days(since=self._today()).values()]
        seen = max((total.by[key][2] for total in totals if key in total.by), default=0.0)
        if seen <= quote.per_image_usd:
            return quote
        return replace(quote, per_image_usd=seen, source="highest charge seen",
                       book=(quote.per_image_usd, quote.source))

    def _check_both(self, quote: Quote) -> None:
        """Both budgets against the quote (hold `_lock` and the ledger's lock)."""
        self._check(quote, "FLUX_KLEIN_BUDGET_USD", self.session_budget, self._session.usd, self._reserved,
                    "in this session (this process)")
        if self.daily_budget is not None:
            self._check(quote, "FLUX_KLEIN_DAILY_BUDGET_USD", self.daily_budget, self._today_spent(),
                        self.ledger.pending_total(), "today (every process sharing the ledger)")

    def settle(self, tab: Tab, charges: list[Charge]) -> str | None:
        """Record what the call was charged and free the rest of its reservation. The session's total counts the
        charges even when the ledger cannot take them (then a warning comes back, for the result's notes)."""
        if not tab.open:
            return None
        with self._lock:
            tab.open = False
            if tab.quote.usd > 0:
                self._reserved = max(0.0, self._reserved - tab.quote.usd)
            for charge in charges:
                self._session.add(charge.provider, charge.model, charge.cost_usd)
            if not charges and tab.quote.usd <= 0:
                return None
            try:
                with self.ledger.locked():
                    self.ledger.append(charges)
                    if tab.key:
                        self.ledger.set_pending(tab.key, None)
            except OSError as exc:
                today = self._today()
                self._unrecorded[today] = self._unrecorded.get(today, 0.0) + sum(c.cost_usd for c in charges)
                log.error("Could not record %d charge(s) in the ledger %s: %s", len(charges), self.ledger.path, exc)
                return (f"The charge for this call could not be written to the ledger {self.ledger.path} ({exc}); "
                        "this session's budget still counts it. Check FLUX_KLEIN_LEDGER.")
        return None

    def release(self, tab: Tab) -> None:
        """A call that failed before anything was charged."""
        self.settle(tab, [])

    @contextlib.contextmanager
    def _ledger_locked(self) -> Iterator[None]:
        """The ledger's lock, with a ledger that could not record a charge turned into a refusal naming it."""
        try:
            with self.ledger.locked():
                self.ledger.check_writable()
                yield
        except OSError as exc:  # (LedgerError for a folder, a FIFO, a file that refuses writes)
            raise _unwritable(exc) from None

    @contextlib.contextmanager
    def _ledger_writable(self) -> Iterator[None]:
        """Like `_ledger_locked`, without the lock (nothing shared is read or written under it)."""
        try:
            self.ledger.check_writable()
        except OSError as exc:
            raise _unwritable(exc) from None
        yield

    # --- what has been spent -------------------------------------------------------------------------------

    def standing(self) -> dict[str, float]:
        """`spent_session_usd`, `spent_today_usd`, and `budget_left_usd` when a budget is set."""
        with self._lock:
            out = {"spent_session_usd": round(self._session.usd, 6), "spent_today_usd": round(self._today_spent(), 6)}
            left = self._left()
            if left is not None:
                out["budget_left_usd"] = left
            return out

    def usage(self) -> dict[str, Any]:
        """Everything `get_usage` reports from the ledger and this process."""
        with self._lock:
            try:
                today = self.ledger.days(since=self._today()).get(self._today(), DayTotal())
            except OSError as exc:
                raise unusable(exc, self.ledger.path) from None
            return {
                "session": _summary(self._session),
                "today": _summary(today),
                "in_flight_usd": max(0.0, round(self._reserved, 6)),
                "budgets": {
                    "session_usd": self.session_budget,
                    "session_left_usd": _left(self.session_budget, self._session.usd),
                    "daily_usd": self.daily_budget,
                    "today_left_usd": _left(self.daily_budget, today.usd),
                    "left_usd": self._left(),
                },
                "ledger": str(self.ledger.path),
            }

    def _today(self) -> date:
        return self._clock().astimezone().date()

    def _today_spent(self) -> float:
        today = self._today()
        return self.ledger.spent_on(today) + self._unrecorded.get(today, 0.0)

    def _left(self) -> float | None:
        lefts = [x for x in (_left(self.session_budget, self._session.usd),
                             _left(self.daily_budget, self._today_spent())) if x is not None]
        return min(lefts) if lefts else None

    @staticmethod
    def _check(quote: Quote, variable: str, budget: float | None, spent: float, reserved: float,
               scope: str) -> None:
        if budget is None or spent + reserved + quote.usd <= budget + _EPSILON:
            return
        left = max(0.0, budget - spent - reserved)
        in_flight = f" (and {usd(reserved)} is reserved by calls still running)" if reserved > _EPSILON else ""
        estimate = " (an estimate: the provider publishes no price)" if quote.source == "estimate" else ""
        each = " each" if quote.images > 1 else ""
        raise BudgetExceeded(
            f"Budget reached: this call could cost up to {usd(quote.usd)} ({plural(quote.images, 'image')} at "
            f"{usd(quote.per_image_usd)}{each}{estimate} on {quote.label}), but {variable} is {usd(budget)} and "
            f"{usd(spent)} was already spent {scope}{in_flight}, leaving {usd(left)}. Nothing was sent. "
            + either("STOP: do not retry, and do not switch tier, model or provider to get around it. Tell the user "
                     f"the budget is reached; they can raise {variable} (in the server's environment) if they want "
                     "to spend more.", f"To spend more, raise {variable}.")
        )


def _unwritable(exc: OSError) -> ConfigError:
    return ConfigError(f"The spend ledger cannot be written ({exc.strerror or exc}), so this call's charge could not "
                       "be recorded: nothing was sent. Set FLUX_KLEIN_LEDGER to a file you can write, or fix the "
                       "one named.")


def _left(budget: float | None, spent: float) -> float | None:
    return None if budget is None else round(max(0.0, budget - spent), 6)


def _summary(total: DayTotal) -> dict[str, Any]:
    return {
        "spent_usd": round(total.usd, 6),
        "images": total.images,
        "by_provider_model": [
            {"provider": key.split(" ", 1)[0], "model": key.split(" ", 1)[1], "spent_usd": round(usd, 6),
             "images": int(images)}
            for key, (usd, images, _) in sorted(total.by.items())
        ],
    }
