"""An old JSON-lines ledger, on both backends: imported once, on the day each charge was made, kept beside itself
and renamed; damaged lines reported, never fatal; whatever sits at its path never hangs or crashes the start."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import rows_at
from tests.ledger_helpers import KLEIN, charge, open_at, reservation, reserve

# --- an old JSON-lines ledger ------------------------------------------------------------------------------

def test_an_old_ledger_is_imported_once_and_kept_beside_it(ledger_at, tmp_path, caplog):
    old = tmp_path / "old" / "ledger.jsonl"
    old.parent.mkdir()
    line = {"time": "2026-03-04T23:30:00-05:00", "provider": "openrouter", "model": "m", "tier": "low",
            "cost_usd": 0.014, "cost_source": "provider", "generation_id": "gen-1", "path": "/x.png"}
    text = "\n".join([json.dumps(line), "not json", json.dumps({**line, "cost_usd": -1}), json.dumps(line)])
    old.write_text(text)  # (the last line without its newline)
    ledger = open_at(ledger_at, ZoneInfo("America/New_York"), legacy=old)
    try:
        assert ledger.total(date(2026, 3, 4), date(2026, 3, 4)).images == 2  # the day where it was charged
        assert "line 2" in caplog.text and "line 3" in caplog.text and "damaged line" in caplog.text
        kept = old.with_name("ledger.jsonl.imported")
        assert not old.exists() and kept.read_text() == text and kept.stat().st_mode & 0o777 == 0o600
        [row, _] = rows_at(ledger_at)
        assert (row["usd"], row["source"], row["generation_id"], row["path"]) == (0.014, "provider", "gen-1", "/x.png")
        old.write_text(text)  # the same file again (say its rename failed): not counted twice
        ledger.close()
        assert ledger.total().images == 2 and old.with_name("ledger.jsonl.imported-2").exists()
    finally:
        ledger.close()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_an_old_ledger_that_is_no_file_is_left_alone(tmp_path, kind, caplog):
    old = tmp_path / "ledger.jsonl"
    os.mkfifo(old) if kind == "fifo" else old.mkdir()  # (a pipe opened the plain way would hang every start)
    ledger = open_at(str(tmp_path / "ledger.sqlite3"), legacy=old)
    try:
        assert ledger.total().images == 0 and "not a regular file" in caplog.text
        ledger.settle(reserve(ledger, reservation(KLEIN)), [charge(KLEIN)], datetime.now(UTC))
        assert ledger.total().images == 1 and old.exists()
    finally:
        ledger.close()


def test_an_endless_line_in_an_old_ledger_is_damaged_and_the_rest_imported(tmp_path, caplog):
    old = tmp_path / "ledger.jsonl"
    good = json.dumps({"time": datetime.now().astimezone().isoformat(), "provider": "openrouter", "model": "m",
                       "cost_usd": 0.014})
    old.write_bytes(b"[" * (10 << 20) + b"\n" + good.encode() + b"\n")  # 10 MB in one line: never held whole
    ledger = open_at(str(tmp_path / "ledger.sqlite3"), legacy=old)
    try:
        assert ledger.total().images == 1 and "line 1 (the line is too long)" in caplog.text
    finally:
        ledger.close()
