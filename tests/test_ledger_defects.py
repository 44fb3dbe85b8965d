"""What the hand-made JSON-lines ledger got wrong where money was at stake (issue 15), each as the person met it.

Every test points FLUX_KLEIN_LEDGER at a `.jsonl` file, as a configuration written for an earlier version does:
the ledger is now the SQLite database beside it, and what the file held is imported once. (The killed process and
the cancelled call are in test_ledger_processes.py and test_spend.py.)
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import error_text, ledger_rows, summary
from tests.fakes.images_api import FLUXROUTER, FakeImagesAPI
from tests.test_cli import cli

pytestmark = pytest.mark.anyio

KLEIN = 0.014
MODEL = "black-forest-labs/flux.2-klein-4b"


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "state" / "ledger.jsonl"
    path.parent.mkdir()
    return path


def line(when: datetime, usd: float = KLEIN, model: str = MODEL) -> str:
    return json.dumps({"time": when.isoformat(), "provider": "openrouter", "model": model, "tier": "low",
                       "cost_usd": usd, "cost_source": "provider", "generation_id": None, "path": "/x.png"})


def spent_today(jsonl: Path, workdir: Path) -> dict:
    """`spend --json`'s today, read by a process of its own."""
    done = cli(["spend", "--json"], workdir, FLUX_KLEIN_LEDGER=str(jsonl))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["today"]


async def test_old_dated_lines_in_a_long_ledger_do_not_hide_todays_spend(connect, fake, jsonl, workdir):
    """$30 spent today, then over 4 MB of lines dated 2020 (a process with a wrong clock): the daily total read
    $0 and a $20 daily budget let calls through."""
    now, wrong_clock = datetime.now().astimezone(), datetime(2020, 1, 1, 12).astimezone()
    with jsonl.open("w") as fh:
        fh.write("\n".join([line(now)] * 2200) + "\n")  # $30.80
        fh.write("\n".join([line(wrong_clock)] * 26_000) + "\n")  # about 5 MB
    assert jsonl.stat().st_size > 4 * 1024 * 1024
    async with connect(FLUX_KLEIN_LEDGER=str(jsonl), FLUX_KLEIN_DAILY_BUDGET_USD="20") as client:
        refused = await client.call_tool("generate_image", {"prompt": "a fox"})
        usage = json.loads((await client.call_tool("get_usage", {})).content[0].text)
    assert refused.is_error and "FLUX_KLEIN_DAILY_BUDGET_USD is $20" in error_text(refused)
    assert fake.completions == [] and usage["today"]["spent_usd"] == pytest.approx(2200 * KLEIN)


async def test_an_unusable_lock_file_never_means_paid_but_unrecorded(connect, fake, jsonl, workdir):
    """A `.lock` that could not be opened (a folder, or root's after one sudo run): calls were paid, never
    recorded, and `spend` showed $0."""
    jsonl.with_name("ledger.jsonl.lock").mkdir()
    async with connect(FLUX_KLEIN_LEDGER=str(jsonl)) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert not data.get("notes") or not any("could not be written" in note for note in data["notes"])
    assert spent_today(jsonl, workdir)["images"] == 1 and len(fake.completions) == 1


async def test_a_last_line_without_its_newline_does_not_swallow_the_next_charge(connect, fake, jsonl, workdir):
    jsonl.write_text(line(datetime.now().astimezone()))  # no newline at the end
    async with connect(FLUX_KLEIN_LEDGER=str(jsonl)) as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    today = spent_today(jsonl, workdir)
    assert today["images"] == 2 and today["spent_usd"] == pytest.approx(2 * KLEIN)


async def test_a_line_dated_tomorrow_does_not_set_todays_price(connect, fake, jsonl):
    """One $5 line dated tomorrow made every call cost up to $5 an image, refused under a $1 daily budget."""
    jsonl.write_text(line(datetime.now().astimezone() + timedelta(days=1), usd=5.0) + "\n")
    async with connect(FLUX_KLEIN_LEDGER=str(jsonl), FLUX_KLEIN_DAILY_BUDGET_USD="1") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert data["cost_usd"] == KLEIN and data["spent_today_usd"] == pytest.approx(KLEIN)


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual one: files are made readable by everybody unless asked otherwise
    yield
    os.umask(previous)


async def test_no_file_of_the_ledger_is_readable_by_others(connect, fake, jsonl, umask):
    """The `.pending` file of reservations was world-readable."""
    jsonl.write_text(line(datetime.now().astimezone()) + "\n")
    async with connect(FLUX_KLEIN_LEDGER=str(jsonl), FLUX_KLEIN_DAILY_BUDGET_USD="1") as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    files = {path.name: path.stat().st_mode & 0o777 for path in jsonl.parent.iterdir()}
    assert files and all(mode == 0o600 for mode in files.values()), files


async def test_a_negative_reservation_left_by_another_process_is_not_believed(connect, fake, jsonl):
    """A `.pending` entry of -$100 let calls through a daily budget they had used up."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    host = f"{socket.gethostname()} {namespace}".strip()
    jsonl.write_text(line(datetime.now().astimezone()) + "\n")  # the day's budget, spent
    jsonl.with_name("ledger.jsonl.pending").write_text(json.dumps(
        {"x": {"usd": -100.0, "pid": os.getpid(), "host": host, "time": time.time()}}))
    async with connect(FLUX_KLEIN_LEDGER=str(jsonl), FLUX_KLEIN_DAILY_BUDGET_USD=str(KLEIN)) as client:
        refused = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert refused.is_error and "Budget reached" in error_text(refused) and fake.completions == []


@pytest.mark.parametrize(("cost", "booked"), [(None, 3 * KLEIN), ("0.03", 0.03)], ids=["no-cost", "reported-cost"])
async def test_images_a_gateway_returns_beyond_n_are_booked(connect, jsonl, workdir, cost, booked):
    """Images beyond `n` were dropped without being booked, though the gateway made (and billed) them."""
    gateway = FakeImagesAPI(FLUXROUTER, cost_usd=cost)
    gateway.then(lambda incoming: gateway.images_answer(incoming.json, gateway.render({**incoming.json, "n": 3})))
    async with connect(gateway, FLUX_KLEIN_LEDGER=str(jsonl)) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert len(data["images"]) == 1 and data["spent_session_usd"] == pytest.approx(booked)
    today = spent_today(jsonl, workdir)
    assert today["images"] == 3 and today["spent_usd"] == pytest.approx(booked)
    assert sum(row["images"] for row in ledger_rows(jsonl)) == 3
