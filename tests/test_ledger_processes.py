"""The ledger shared by real processes, on both backends: racers stop exactly at a daily budget, a call killed in
flight is booked when the ledger is next used, and two replicas of the HTTP server share one budget."""

from __future__ import annotations

import json
import signal
import subprocess

import anyio
import pytest

from flux_klein_mcp.spend.ledger import DEAD_NOTE, UNSETTLED
from tests.conftest import error_text, provider_env, rows_at
from tests.fakes.core import Fault, Loopback
from tests.fakes.openrouter import FakeOpenRouter
from tests.ledger_helpers import KLEIN, worker
from tests.test_cli import BASE_ENV, COMMAND, cli

RACERS, CAP_IMAGES = 6, 120


def test_six_processes_racing_a_daily_budget_stop_exactly_at_the_cap(ledger_at):
    """They also open the ledger, which does not exist yet, at the same moment (two used to fail: "File exists")."""
    budget = round(CAP_IMAGES * KLEIN, 6)
    racers = [worker(ledger_at, "race", str(budget)) for _ in range(RACERS)]
    try:
        for step in ("ready", "connected"):  # all open the new ledger at once, then all race at once
            for racer in racers:
                assert racer.stdout is not None and racer.stdout.readline().strip() == step
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
        counts = [int(racer.communicate(timeout=120)[0]) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    charges = rows_at(ledger_at)
    assert sum(counts) == CAP_IMAGES and len(charges) == CAP_IMAGES
    assert sum(row["micro_usd"] for row in charges) == CAP_IMAGES * 14_000  # exactly the cap, to the micro-dollar
    assert rows_at(ledger_at, "reservations") == []
    assert len({row["owner"] for row in charges}) > 1  # they did race (released together, 120 calls to share)


def test_a_call_killed_in_flight_is_booked_at_its_worst_case_once_the_ledger_is_used_again(ledger_at, workdir):
    """Issue 15: a request in flight when its process was SIGKILLed was never booked, though the provider may have
    charged it."""
    fake = FakeOpenRouter()
    fake.then(Fault.HANG)
    server = Loopback(fake)
    env = {**BASE_ENV, **provider_env(fake, server.url), "FLUX_KLEIN_LEDGER": ledger_at}
    try:
        call = subprocess.Popen([COMMAND, "generate", "a fox", "-n", "2"], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert fake.arrived.wait(60), "the request never reached the provider"
        finally:
            call.send_signal(signal.SIGKILL)
            call.wait(30)  # (its parent reaps it, as a shell or a supervisor would)
        assert [row["images"] for row in rows_at(ledger_at, "reservations")] == [2]
        done = cli(["spend", "--json"], workdir, **{k: v for k, v in env.items() if k not in BASE_ENV})
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    today = json.loads(done.stdout)["today"]
    assert today["spent_usd"] == pytest.approx(2 * KLEIN) and today["images"] == 2
    [booked] = rows_at(ledger_at)
    assert (booked["source"], booked["note"], booked["path"]) == (UNSETTLED, DEAD_NOTE, None)
    assert rows_at(ledger_at, "reservations") == []


@pytest.mark.anyio
async def test_two_replicas_of_the_http_server_share_one_daily_budget(ledger_at, workdir, tmp_path):
    from tests.test_http import client, http_server

    fake = FakeOpenRouter()
    server = Loopback(fake)
    env = {**provider_env(fake, server.url), "FLUX_KLEIN_LEDGER": ledger_at,
           "FLUX_KLEIN_DAILY_BUDGET_USD": str(3 * KLEIN)}
    results: list = []
    try:
        with http_server(workdir, **{**env, "FLUX_KLEIN_OUTPUT_DIR": str(tmp_path / "a")}) as first, \
                http_server(workdir, **{**env, "FLUX_KLEIN_OUTPUT_DIR": str(tmp_path / "b")}) as second:
            async def three(url: str) -> None:
                async with client(url) as session:
                    async with anyio.create_task_group() as group:
                        for _ in range(3):
                            async def one() -> None:
                                results.append(await session.call_tool("generate_image", {"prompt": "a fox"}))

                            group.start_soon(one)

            async with anyio.create_task_group() as group:
                group.start_soon(three, first)
                group.start_soon(three, second)
    finally:
        server.close()
    assert len(fake.completions) == 3 and sum(not r.is_error for r in results) == 3
    assert all("FLUX_KLEIN_DAILY_BUDGET_USD" in error_text(r) for r in results if r.is_error)
    assert len(rows_at(ledger_at)) == 3 and rows_at(ledger_at, "reservations") == []
