"""What the ledger's tests share: a reservation and a charge to write, a ledger opened on either backend, and a
process of its own (`ledger_worker.py`)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from flux_klein_mcp.spend import Charge, Ledger
from flux_klein_mcp.spend.ledger import Reservation
from flux_klein_mcp.spend.owner import me

KLEIN = 0.014
WORKER = Path(__file__).with_name("ledger_worker.py")
ELSEWHERE = "another-host pid:[1]|-|4242|-"  # a process on another host: this one cannot tell if it lives


def reservation(usd: float, *, images: int = 1, at: datetime | None = None, owner: str | None = None,
                day: date | None = None, model: str = "m") -> Reservation:
    at = at or datetime.now(UTC)
    return Reservation(uuid.uuid4().hex, at, day or at.astimezone().date(), "openrouter", model, "low", images, usd,
                       "price list", owner or me())


def charge(usd: float, images: int = 1, model: str = "m", source: str = "provider") -> Charge:
    return Charge("openrouter", model, "low", images, usd, source, "gen-1", None)


def open_at(where: str, timezone: Any = None, legacy: Path | None = None) -> Ledger:
    if where.startswith("postgresql://"):
        from flux_klein_mcp.spend.postgres import PostgresLedger

        return PostgresLedger(where, timezone, legacy)
    from flux_klein_mcp.spend.sqlite import SQLiteLedger

    return SQLiteLedger(Path(where), timezone, legacy)


def reserve(ledger: Ledger, r: Reservation) -> Reservation:
    return ledger.reserve(r, lambda snapshot: r)


def worker(where: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent.parent)}
    return subprocess.Popen([sys.executable, str(WORKER), where, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
