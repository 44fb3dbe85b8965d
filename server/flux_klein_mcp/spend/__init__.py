"""Spend control: budgets refused before spend, a ledger of what was charged, the person's consent for the
high tier. The pipeline calls it at two points (reserve before sending, settle after); the server and the CLI ask
for consent through one pre-check and report usage.

    billing.py   the worst case a call can cost (`quote_for`) and what it was charged (`Bill`)
    budget.py    the session and daily budgets: reserve, settle, release; what is left
    precheck.py  the one budget check before asking the person, for MCP and the CLI alike
    consent.py   FLUX_KLEIN_HIGH_TIER and what a high-tier call needs from the person
    ledger.py    the ledger's interface and its SQL: charges and reservations, totals by budget day
    schema.py    its tables, one schema for both backends
    sqlite.py    the default backend (a file in the per-user state folder)
    postgres.py  the backend for replicas sharing one budget (FLUX_KLEIN_LEDGER=postgresql://...)
    location.py  FLUX_KLEIN_LEDGER: which backend, where
    owner.py     which process made a reservation, and whether it is still alive
    legacy.py    the JSON-lines ledger of earlier versions, imported once
    report.py    `get_usage` and `flux-klein-mcp spend`: the ledger and the provider's credit, as data
"""

from __future__ import annotations

from .billing import Bill, Delivered, Quote, quote_for
from .budget import Accountant, Tab
from .consent import HIGH_TIER_MODES, Consent, HighTierMode, needs_consent, question, require_consent
from .ledger import Charge, Ledger, LedgerError, default_ledger
from .location import LedgerURL, Location, open_ledger
from .precheck import consent_quote

__all__ = [
    "HIGH_TIER_MODES",
    "Accountant",
    "Bill",
    "Charge",
    "Consent",
    "Delivered",
    "HighTierMode",
    "Ledger",
    "LedgerError",
    "LedgerURL",
    "Location",
    "Quote",
    "Tab",
    "consent_quote",
    "default_ledger",
    "needs_consent",
    "open_ledger",
    "question",
    "quote_for",
    "require_consent",
]
