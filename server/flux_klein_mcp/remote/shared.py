"""What replicas share beside the budget: approvals already used, and answers on their way to the replica that asked.

    claim_once(key, expires) -> bool   True for the first claim of a key (until it expires), False ever after
    post(key, value, expires)          leave an answer for whichever replica waits for it
    take(key) -> str | None            that answer, once

Both live in the ledger's own database (`spend/ledger.py`: the `claims` and `answers` tables), which every replica
sharing a budget already reaches: SQLite for processes on one machine, PostgreSQL for replicas on several. The
database makes each claim atomic across all of them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..errors import ConsentRefused

if TYPE_CHECKING:
    from ..spend import Ledger, Location

T = TypeVar("T")


class Shared(Protocol):
    def claim_once(self, key: str, expires: float) -> bool: ...

    def post(self, key: str, value: str, expires: float) -> None: ...

    def take(self, key: str) -> str | None: ...


class SharedStateError(ConsentRefused):
    """The shared state cannot be read or written: an approval cannot be checked, so nothing is spent."""


class LedgerShared:
    """`Shared` in the ledger's database, on a connection of its own (opened on first use)."""

    def __init__(self, location: Location, timezone: Any = None) -> None:
        self._location = location
        self._timezone = timezone
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    def _on_ledger(self, work: Callable[[Ledger], T]) -> T:
        from ..spend import LedgerError, open_ledger

        try:
            with self._lock:
                if self._ledger is None:
                    self._ledger = open_ledger(self._location, self._timezone)
                ledger = self._ledger
            return work(ledger)
        except LedgerError as exc:
            raise SharedStateError(
                f"The server could not read or write the state its replicas share ({exc}), so it cannot tell whether "
                "this approval was already used; nothing was sent. It lives in the ledger's database "
                "(FLUX_KLEIN_LEDGER): fix that, then call again.") from None

    def claim_once(self, key: str, expires: float) -> bool:
        return self._on_ledger(lambda ledger: ledger.claim_once(key, expires))

    def post(self, key: str, value: str, expires: float) -> None:
        self._on_ledger(lambda ledger: ledger.post(key, value, expires))

    def take(self, key: str) -> str | None:
        return self._on_ledger(lambda ledger: ledger.take(key))
