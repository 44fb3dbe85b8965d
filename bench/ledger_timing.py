"""One paid call's bookkeeping, timed: reserve + settle through the budgets (`Accountant`) on a SQLite ledger that
already holds ROWS charges (years of use), and on an empty one beside it. Run by the benchmark with the measured
server's own Python:

    python bench/ledger_timing.py FOLDER ROWS CALLS   ->   {"full": [seconds, ...], "empty": [seconds, ...]}
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from flux_klein_mcp.spend import Accountant, Charge, Quote, open_ledger

QUOTE = Quote("openrouter", "OpenRouter", "black-forest-labs/flux.2-klein-4b", "low", 1, 0.014, "price list")
CHARGE = Charge(QUOTE.provider, QUOTE.model, "low", 1, 0.014, "provider", "gen-1", "/x.png")


def fill(path: Path, rows: int) -> None:
    """`rows` charges over the last 400 days, written at once (as if by years of calls); once per folder."""
    ledger = open_ledger(path)
    ledger.probe()  # the tables
    ledger.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        if db.execute("SELECT COUNT(*) FROM charges").fetchone()[0] >= rows:
            return
        today, at = date.today(), datetime.now(UTC).isoformat()
        db.executemany("INSERT INTO charges (at, day, provider, model, tier, images, micro_usd, source, request_id, "
                       "owner) VALUES (?, ?, 'openrouter', ?, 'low', 1, 14000, 'provider', ?, 'bench')",
                       ((at, (today - timedelta(days=i % 400)).isoformat(), QUOTE.model, f"r{i}")
                        for i in range(rows)))


def timings(path: Path, calls: int) -> list[float]:
    ledger = open_ledger(path)
    accountant = Accountant(lambda: ledger, 1_000_000.0, 1_000_000.0, clock=lambda: datetime.now().astimezone())
    accountant.settle(accountant.reserve(QUOTE), [CHARGE])  # the connection and the pages, untimed
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        accountant.settle(accountant.reserve(QUOTE), [CHARGE])
        out.append(time.perf_counter() - start)
    ledger.close()
    return out


def main(folder: str, rows: str, calls: str) -> None:
    full, empty = Path(folder) / "full.sqlite3", Path(folder) / "empty.sqlite3"
    fill(full, int(rows))
    print(json.dumps({"full": timings(full, int(calls)), "empty": timings(empty, int(calls))}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
