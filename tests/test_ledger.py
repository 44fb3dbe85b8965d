"""The ledger itself."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from flux_klein_mcp.spend.ledger import Reservation
from flux_klein_mcp.spend.owner import me


def reservation(usd: float, *, images: int = 1, at: datetime | None = None, owner: str | None = None,
                day: date | None = None) -> Reservation:
    at = at or datetime.now(UTC)
    return Reservation(uuid.uuid4().hex, at, day or at.astimezone().date(), "openrouter", "m", "low", images, usd,
                       "price list", owner or me())
