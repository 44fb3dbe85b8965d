"""A process that uses a ledger, for the tests that need several processes (or one that dies).

    python tests/ledger_worker.py WHERE race BUDGET        print "ready", wait for a line on stdin, open the ledger;
                                                           print "connected", wait for a line, then reserve and
                                                           settle $0.014 calls against a daily budget until
                                                           refused; print how many
    python tests/ledger_worker.py WHERE reserve-and-die N  reserve N images at $0.014, print "reserved", and end
                                                           without settling (as a SIGKILL would leave it)
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from flux_klein_mcp.errors import BudgetExceeded
from flux_klein_mcp.spend import Accountant, Charge, LedgerURL, Quote, open_ledger

KLEIN = 0.014


def main(where: str, command: str, argument: str) -> None:
    ledger = open_ledger(LedgerURL(where) if where.startswith("postgresql://") else Path(where))
    budget = float(argument) if command == "race" else None
    accountant = Accountant(lambda: ledger, None, budget, clock=lambda: datetime.now().astimezone())
    if command == "reserve-and-die":
        accountant.reserve(Quote("openrouter", "OpenRouter", "m", "low", int(argument), KLEIN, "price list"))
        print("reserved", flush=True)
        os._exit(0)  # no settle, no close: what a killed process leaves behind
    quote = Quote("openrouter", "OpenRouter", "m", "low", 1, KLEIN, "price list")
    for step in ("ready", "connected"):  # each step starts on a line from the test, for every racer at once
        print(step, flush=True)
        sys.stdin.readline()
        if step == "ready":
            ledger.probe()  # all open a ledger that does not exist yet at the same moment
    booked = 0
    while True:
        try:
            tab = accountant.reserve(quote)
        except BudgetExceeded:
            break
        accountant.settle(tab, [Charge("openrouter", "m", "low", 1, KLEIN, "provider")])
        booked += 1
    ledger.close()
    print(booked, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
