"""Spend control: budgets refused before spend, a ledger of what was charged, the person's consent for the
high tier. The pipeline calls it at one point (`guard`); the server and the CLI ask for consent and report usage.

    ledger.py   the JSON-lines ledger shared across processes (file lock, pending reservations, day totals)
    budget.py   the session and daily budgets: reserve, settle, release; what is left
    consent.py  FLUX_KLEIN_HIGH_TIER and what a high-tier call needs from the person
    report.py   `get_usage` and `flux-klein-mcp spend`: the ledger and the provider's credit, as data
"""

from __future__ import annotations

from .budget import Accountant, Quote, Tab
from .consent import HIGH_TIER_MODES, Consent, HighTierMode, needs_consent, question, require_consent
from .ledger import Charge, Ledger, default_ledger

__all__ = [
    "HIGH_TIER_MODES",
    "Accountant",
    "Charge",
    "Consent",
    "HighTierMode",
    "Ledger",
    "Quote",
    "Tab",
    "default_ledger",
    "needs_consent",
    "question",
    "require_consent",
]
