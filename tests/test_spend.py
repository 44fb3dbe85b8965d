"""Spend control: budgets refused before any request (atomically, in one process and across processes sharing a
ledger), a ledger of what was charged that survives restarts, failed and cancelled calls free, the provider's own
figure preferred to the price list, and usage in every result and in `get_usage`."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import error_text, ledger_rows, output_files, provider_env, summary
from tests.fakes.core import Fault, Loopback
from tests.fakes.images_api import AIGATEWAY, FakeImagesAPI
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter, error
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = pytest.mark.anyio

KLEIN = 0.014  # OpenRouter's list price for one klein image (PROVIDERS.md §1)


def ledger_lines(ledger: Path) -> list[dict]:
    return ledger_rows(ledger)


async def call_many(client, count: int, arguments: dict | None = None) -> list:
    results: list = []

    async def one() -> None:
        results.append(await client.call_tool("generate_image", arguments or {"prompt": "a fox"}))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return results


# --- the session budget ------------------------------------------------------------------------------------

async def test_concurrent_calls_against_a_small_budget_send_exactly_what_it_allows(connect, fake, workdir, ledger):
    async with connect(FLUX_KLEIN_BUDGET_USD="0.05") as client:  # three images at $0.014 fit, a fourth does not
        results = await call_many(client, 10)
    ok = [r for r in results if not r.is_error]
    refused = [error_text(r) for r in results if r.is_error]
    assert len(fake.completions) == 3 and len(ok) == 3 and len(refused) == 7
    for text in refused:
        assert "Budget reached" in text and "FLUX_KLEIN_BUDGET_USD is $0.05" in text and "STOP" in text
        assert "do not retry" in text and "Nothing was sent" in text
    assert max(summary(r)["spent_session_usd"] for r in ok) == pytest.approx(3 * KLEIN)
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 3
    assert len(ledger_lines(ledger)) == 3


async def test_a_refusal_names_what_was_spent_the_budget_and_what_is_left(connect, fake):
    async with connect(FLUX_KLEIN_BUDGET_USD="0.02") as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        refused = await client.call_tool("generate_image", {"prompt": "a fox"})
    text = error_text(refused)
    assert "$0.014 was already spent in this session" in text and "leaving $0.006" in text
    assert "up to $0.014 (1 image at $0.014 on OpenRouter)" in text and len(fake.completions) == 1


async def test_the_reservation_settles_to_the_providers_own_figure(connect, workdir):
    fake = FakeOpenRouter(cost=0.004)  # the provider reports less than the list price
    async with connect(fake, FLUX_KLEIN_BUDGET_USD="0.03") as client:
        data = [summary(await client.call_tool("generate_image", {"prompt": f"fox {i}"})) for i in range(5)]
        refused = await client.call_tool("generate_image", {"prompt": "one more"})
    # 5 x $0.004 = $0.020 spent; a sixth could cost the list price $0.014, which $0.010 left does not cover.
    assert [d["spent_session_usd"] for d in data] == pytest.approx([0.004 * (i + 1) for i in range(5)])
    assert data[-1]["budget_left_usd"] == pytest.approx(0.01)
    assert refused.is_error and len(fake.completions) == 5


async def test_without_a_reported_cost_the_list_price_is_charged(connect, ledger):
    fake = FakeOpenRouter(cost=None)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}))
    assert data["spent_session_usd"] == pytest.approx(2 * KLEIN) and "budget_left_usd" not in data
    assert [line["source"] for line in ledger_lines(ledger)] == ["price list", "price list"]


async def test_a_provider_without_a_price_is_reserved_and_charged_at_the_klein_estimate(connect, ledger):
    gateway = FakeImagesAPI(AIGATEWAY)
    async with connect(gateway, FLUX_KLEIN_BUDGET_USD="0.02") as client:
        refused = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2})
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert "an estimate: the provider publishes no price" in error_text(refused) and len(gateway.generations) == 1
    assert data["cost_usd"] is None and data["spent_session_usd"] == pytest.approx(KLEIN)
    assert ledger_lines(ledger)[0]["source"] == "estimate"


# --- failed and cancelled calls cost nothing ---------------------------------------------------------------

async def test_failed_calls_cost_nothing_and_free_their_reservation(connect, fake, ledger):
    fake.then(error(500, "boom"), error(400, "bad"), error(403, "flagged"))
    async with connect(FLUX_KLEIN_BUDGET_USD="0.014") as client:
        for _ in range(3):
            assert (await client.call_tool("generate_image", {"prompt": "a fox"})).is_error
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert data["spent_session_usd"] == pytest.approx(KLEIN) and data["budget_left_usd"] == 0
    assert len(ledger_lines(ledger)) == 1


async def test_a_call_cancelled_after_its_request_was_sent_is_booked_at_its_worst_case(connect, fake, ledger):
    """The provider may charge a request whose answer nobody waited for (issue 15: it used to cost nothing)."""
    fake.then(Fault.HANG)
    async with connect(loopback=True, FLUX_KLEIN_BUDGET_USD="0.03") as client:
        with anyio.CancelScope() as scope:
            async def cancel_when_it_arrives() -> None:
                await anyio.to_thread.run_sync(fake.arrived.wait, 10)
                scope.cancel()

            async with anyio.create_task_group() as group:
                group.start_soon(cancel_when_it_arrives)
                await client.call_tool("generate_image", {"prompt": "a fox"})
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        refused = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert data["spent_session_usd"] == pytest.approx(2 * KLEIN) and refused.is_error
    cancelled, kept = ledger_lines(ledger)
    assert (cancelled["usd"], cancelled["images"], cancelled["path"]) == (KLEIN, 1, None)
    assert "cancelled after the request was sent" in cancelled["note"] and kept["path"]


async def test_images_kept_by_a_call_that_failed_after_them_are_charged(connect, fake, ledger):
    first_saved = threading.Event()

    def out_of_credits_after_the_first(incoming):
        assert first_saved.wait(10)
        return error(402, "Insufficient credits")

    async def progress(done, total, message):
        if done == 1:
            first_saved.set()

    fake.then(fake.respond, out_of_credits_after_the_first)
    async with connect(loopback=True) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}, progress_callback=progress)
    assert result.is_error and "1 image finished before this and was saved" in error_text(result)
    assert len(ledger_lines(ledger)) == 1


# --- the ledger ----------------------------------------------------------------------------------------------

async def test_each_charged_image_is_one_ledger_line_with_what_was_charged(connect, fake, ledger):
    async with connect() as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2, "seed": 5}))
    lines = ledger_lines(ledger)
    assert len(lines) == 2
    for line in lines:
        assert set(line) == {"id", "at", "day", "provider", "model", "tier", "images", "micro_usd", "usd", "source",
                             "request_id", "generation_id", "owner", "person", "path", "note"}
        assert (line["provider"], line["model"], line["tier"]) == ("openrouter", "black-forest-labs/flux.2-klein-4b",
                                                                   "low")
        assert line["usd"] == KLEIN and line["source"] == "provider" and line["images"] == 1
        assert line["generation_id"].startswith("gen-")
        at = datetime.fromisoformat(line["at"])
        assert at.utcoffset() == timedelta(0) and line["day"] == at.astimezone().date().isoformat()  # local day
        assert line["person"] is None and line["note"] is None
    assert lines[0]["request_id"] == lines[1]["request_id"]  # one call
    assert ledger_rows(ledger, "reservations") == []  # settled
    assert sorted(line["path"] for line in lines) == sorted(i["path"] for i in data["images"])


async def test_the_sandbox_is_never_charged(connect, ledger):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", FLUX_KLEIN_BUDGET_USD="0") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 4, "tier": "high"}))
    assert data["spent_session_usd"] == 0 and not ledger.exists()


async def test_a_sandbox_run_shows_its_own_zero_spend_and_never_opens_the_ledger(connect, fake, ledger):
    """Issue 16: the first `make demo` on a machine with a ledger reported the day's real spend on a free run."""
    async with connect() as client:  # a real charge today
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    before = {path.name: path.stat().st_mtime_ns for path in ledger.parent.iterdir()}
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", FLUX_KLEIN_DAILY_BUDGET_USD="0.01") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert (data["spent_session_usd"], data["spent_today_usd"]) == (0, 0) and "budget_left_usd" not in data
    assert data["spend_scope"].startswith("sandbox: nothing is charged")
    assert {path.name: path.stat().st_mtime_ns for path in ledger.parent.iterdir()} == before


async def test_a_sandbox_run_works_when_the_ledger_is_unusable(connect, ledger):
    ledger.mkdir(parents=True)  # a folder where the ledger should be: every paid call is refused
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        paid = await client.call_tool("generate_image", {"prompt": "a fox", "provider": "openrouter"})
    assert data["spend_scope"] and "The spend ledger cannot be written" in error_text(paid)


async def test_a_damaged_ledger_line_is_skipped_not_fatal(connect, fake, ledger, caplog):
    ledger.parent.mkdir(parents=True)
    ledger = ledger.with_suffix(".jsonl")  # an earlier version's ledger, imported
    good = {"time": "2020-01-01T10:00:00+00:00", "provider": "openrouter", "model": "m", "tier": "low",
            "cost_usd": 0.5, "cost_source": "provider", "generation_id": None, "path": "/x.png"}
    ledger.write_text(f"{json.dumps(good)}\nnot json at all\n{{\"cost_usd\": \"NaN\"}}\n")
    async with connect() as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        usage = json.loads((await client.call_tool("get_usage", {})).content[0].text)
    assert data["spent_today_usd"] == pytest.approx(KLEIN)
    assert usage["today"]["images"] == 1
    assert "damaged line" in caplog.text


# --- several processes, one ledger, one daily budget -------------------------------------------------------

def stdio_server(env: dict[str, str], cwd: Path) -> Client:
    return Client(StdioServerParameters(command=COMMAND, args=[], env={**BASE_ENV, **env}, cwd=cwd))


async def test_two_processes_share_one_daily_budget_through_the_ledger(workdir, tmp_path):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    ledger = tmp_path / "shared" / "ledger.jsonl"
    env = {**provider_env(fake, server.url), "FLUX_KLEIN_LEDGER": str(ledger),
           "FLUX_KLEIN_DAILY_BUDGET_USD": str(3 * KLEIN)}
    results: list = []
    try:
        async with stdio_server(env, workdir) as first, stdio_server(env, workdir) as second:
            async def both(client) -> None:
                results.extend(await call_many(client, 3))

            async with anyio.create_task_group() as group:
                group.start_soon(both, first)
                group.start_soon(both, second)
    finally:
        server.close()
    assert len(fake.completions) == 3  # six calls, two processes, one budget of three images
    assert sum(not r.is_error for r in results) == 3
    assert all("FLUX_KLEIN_DAILY_BUDGET_USD" in error_text(r) for r in results if r.is_error)
    assert len(ledger_lines(ledger)) == 3


async def test_the_ledger_survives_a_restart(workdir, tmp_path):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    env = {**provider_env(fake, server.url), "FLUX_KLEIN_LEDGER": str(tmp_path / "ledger.jsonl"),
           "FLUX_KLEIN_DAILY_BUDGET_USD": str(3 * KLEIN)}
    try:
        async with stdio_server(env, workdir) as client:
            for _ in range(2):
                summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        async with stdio_server(env, workdir) as client:  # a new process: the day's spend is still there
            data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
            refused = await client.call_tool("generate_image", {"prompt": "a fox"})
            usage = json.loads((await client.call_tool("get_usage", {})).content[0].text)
    finally:
        server.close()
    assert usage["today"]["images"] == 3 and usage["session"]["images"] == 1
    assert usage["budgets"]["today_left_usd"] == 0
    assert data["spent_session_usd"] == pytest.approx(KLEIN) and data["spent_today_usd"] == pytest.approx(3 * KLEIN)
    assert data["budget_left_usd"] == 0
    assert refused.is_error and "was already spent today" in error_text(refused)
    assert len(fake.completions) == 3


# --- get_usage ----------------------------------------------------------------------------------------------

async def test_get_usage_reports_spend_budgets_and_the_openrouter_credit_without_spending(connect, fake):
    fake.key_info.update(limit=10.0, usage=2.5, limit_remaining=7.5)
    async with connect(FLUX_KLEIN_BUDGET_USD="1", FLUX_KLEIN_DAILY_BUDGET_USD="5") as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}))
        before = len(fake.completions)
        result = await client.call_tool("get_usage", {})
    usage = json.loads(result.content[0].text)
    assert len(fake.completions) == before  # no generation
    assert usage["session"]["spent_usd"] == pytest.approx(2 * KLEIN) and usage["session"]["images"] == 2
    assert usage["session"]["by_provider_model"] == [{"provider": "openrouter",
                                                       "model": "black-forest-labs/flux.2-klein-4b",
                                                       "spent_usd": pytest.approx(2 * KLEIN), "images": 2}]
    assert usage["today"]["spent_usd"] == pytest.approx(2 * KLEIN)
    assert usage["budgets"]["session_usd"] == 1 and usage["budgets"]["daily_usd"] == 5
    assert usage["budgets"]["left_usd"] == pytest.approx(1 - 2 * KLEIN)
    assert usage["provider_credit"]["openrouter"] == {"limit": 10.0, "usage": 2.5, "limit_remaining": 7.5}
    assert usage["high_tier"] == "ask" and TEST_KEY not in result.content[0].text


async def test_get_usage_with_an_unlimited_key_and_no_budgets(connect, fake):
    async with connect() as client:
        usage = json.loads((await client.call_tool("get_usage", {})).content[0].text)
    assert usage["provider_credit"]["openrouter"] == {"limit": None, "usage": 1.25, "limit_remaining": None}
    assert usage["budgets"]["left_usd"] is None and usage["session"]["spent_usd"] == 0


# --- found by the adversarial pass ---------------------------------------------------------------------------

def full_file_system_at(folder: Path, monkeypatch, *, space: bool = True, files: bool = False) -> None:
    """`os.statvfs` says the file system of `folder` (only) is out of space or of files (inodes): a file there
    still opens for appending, as on a real full disk."""
    import os
    import types

    real = os.statvfs

    def statvfs(path):
        found = real(path)
        if Path(path).resolve() != folder.resolve():
            return found
        return types.SimpleNamespace(f_frsize=found.f_frsize, f_bavail=0 if space else found.f_bavail,
                                     f_files=1000, f_favail=1 if files else 900)

    monkeypatch.setattr(os, "statvfs", statvfs)


@pytest.mark.parametrize("kind", ["folder", "fifo", "full-disk", "out-of-inodes"])
@pytest.mark.parametrize("budget", [{}, {"FLUX_KLEIN_BUDGET_USD": "0.03"}, {"FLUX_KLEIN_DAILY_BUDGET_USD": "1"}],
                         ids=["no-budget", "session-budget", "daily-budget"])
async def test_a_ledger_that_cannot_record_refuses_the_call_before_any_request(connect, fake, workdir, ledger, kind,
                                                                              budget, monkeypatch):
    import os

    ledger.parent.mkdir(parents=True)
    if kind == "folder":
        ledger.mkdir()
    elif kind == "fifo":
        os.mkfifo(ledger)  # opened the plain way for writing, it would hang the server holding the lock
    else:  # an O_APPEND open succeeds on a full disk (found by the third adversarial pass)
        ledger.write_text("")
        full_file_system_at(ledger.parent, monkeypatch, space=kind == "full-disk", files=kind == "out-of-inodes")
    async with connect(**budget) as client:
        with anyio.fail_after(20):
            result = await client.call_tool("generate_image", {"prompt": "a fox"})
    text = error_text(result)
    assert result.is_error and "The spend ledger cannot be written" in text and "FLUX_KLEIN_LEDGER" in text
    assert "nothing was sent" in text and fake.requests == [] and output_files(workdir) == []


async def test_a_call_cancelled_after_the_provider_delivered_still_counts_what_was_billed(connect, fake, ledger):
    fake.then(fake.respond, Fault.HANG)
    first_saved = anyio.Event()

    async def progress(done, total, message):
        if done >= 1:
            first_saved.set()

    async with connect(loopback=True, FLUX_KLEIN_BUDGET_USD="0.03") as client:
        with anyio.CancelScope() as scope:
            async def cancel_after_the_first_image() -> None:
                await first_saved.wait()
                scope.cancel()

            async with anyio.create_task_group() as group:
                group.start_soon(cancel_after_the_first_image)
                await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}, progress_callback=progress)
        usage = json.loads((await client.call_tool("get_usage", {})).content[0].text)
    delivered, unanswered = ledger_lines(ledger)
    assert delivered["usd"] == KLEIN and not Path(delivered["path"]).exists()  # rolled back, but billed
    # The second request was sent and never answered: the provider may charge it too (issue 15).
    assert (unanswered["usd"], unanswered["path"]) == (KLEIN, None) and "cancelled" in unanswered["note"]
    assert usage["session"]["spent_usd"] == pytest.approx(2 * KLEIN)


async def test_a_billed_reply_without_a_usable_image_counts_against_the_budget(connect, ledger):
    from tests.fakes.openrouter import success_with

    def billed_text(body):
        body["choices"][0]["message"] = {"role": "assistant", "content": "no picture today"}

    fake = FakeOpenRouter()
    fake.then(success_with(billed_text))  # a text answer, for which usage.cost still reports $0.014
    async with connect(fake, FLUX_KLEIN_BUDGET_USD="0.02") as client:
        failed = await client.call_tool("generate_image", {"prompt": "a fox"})
        refused = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert failed.is_error and "without an image" in error_text(failed)
    assert refused.is_error and "Budget reached" in error_text(refused)  # $0.006 left
    [line] = ledger_lines(ledger)
    assert line["path"] is None and line["source"] == "provider" and len(fake.completions) == 1


async def test_an_empiriolabs_job_that_outlives_the_timeout_is_counted_at_its_list_price(connect, ledger):
    from tests.fakes.images_api import EMPIRIOLABS

    gateway = FakeImagesAPI(EMPIRIOLABS)
    gateway.force_jobs, gateway.job_polls = True, 10_000  # never finishes
    async with connect(gateway, FLUX_KLEIN_TIMEOUT_S="0.5") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2})
    assert result.is_error and "may still finish and be charged" in error_text(result)
    lines = ledger_lines(ledger)
    assert [(line["usd"], line["images"], line["path"]) for line in lines] == [(0.017, 2, None)]


async def test_a_provider_without_a_price_is_quoted_at_the_most_it_was_seen_to_charge(connect, ledger):
    from tests.fakes.images_api import FLUXROUTER

    gateway = FakeImagesAPI(FLUXROUTER, cost_usd="0.05")  # far above the klein estimate
    async with connect(gateway, FLUX_KLEIN_BUDGET_USD="0.12") as client:
        first = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        second = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        refused = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert first["cost_usd"] == 0.05 and second["spent_session_usd"] == pytest.approx(0.1)
    # $0.02 left; the next call is quoted at the $0.05 seen, not the $0.014 estimate.
    assert "highest charge seen" not in error_text(refused) and "up to $0.05" in error_text(refused)
    assert len(gateway.generations) == 2


@pytest.mark.parametrize("cost", ["1e308", "5e307"])
async def test_huge_reported_costs_never_add_up_to_infinity(connect, cost):
    from tests.fakes.images_api import FLUXROUTER

    gateway = FakeImagesAPI(FLUXROUTER, cost_usd=cost)
    async with connect(gateway) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2})
        usage = (await client.call_tool("get_usage", {})).content[0].text
    for text in (result.content[0].text, usage):
        json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert "not an amount" in result.content[0].text


async def test_odd_ledger_lines_are_skipped_not_fatal(connect, fake, ledger, caplog):
    ledger.parent.mkdir(parents=True)
    ledger = ledger.with_suffix(".jsonl")  # an earlier version's ledger, imported
    good = {"time": "2020-01-01T10:00:00+00:00", "provider": "openrouter", "model": "m", "tier": "low",
            "cost_usd": 0.5, "cost_source": "provider", "generation_id": None, "path": "/x.png"}
    odd = [{k: v for k, v in good.items() if k != "provider"}, {**good, "time": "0001-01-01T00:00:00+14:00"},
           {**good, "time": "9999-12-31T23:59:59-14:00"}, {**good, "model": ["not", "text"]}]
    ledger.write_text("\n".join([*map(json.dumps, odd), '{"cost_usd": ' + "9" * 400 + "}", "[[[[" * 3000, ""]))
    async with connect(FLUX_KLEIN_DAILY_BUDGET_USD="1") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert data["spent_today_usd"] == pytest.approx(KLEIN)
    assert caplog.text.count("damaged line") >= 6


async def test_a_long_old_ledger_is_imported_once(connect, fake, ledger, caplog):
    ledger.parent.mkdir(parents=True)
    old = json.dumps({"time": "2020-01-01T10:00:00+00:00", "provider": "openrouter", "model": "m", "tier": "low",
                      "cost_usd": 0.014, "cost_source": "provider", "generation_id": None, "path": "/x.png"})
    jsonl = ledger.with_suffix(".jsonl")
    with jsonl.open("w") as fh:  # a damaged line at the very start, then years of history (about 8 MB)
        fh.write("damaged at the start\n")
        fh.write((old + "\n") * 40_000)
    async with connect(FLUX_KLEIN_DAILY_BUDGET_USD="1") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert data["spent_today_usd"] == pytest.approx(KLEIN)
    assert caplog.text.count("damaged at the start") == 1 and "line 1" in caplog.text  # reported, not fatal
    assert not jsonl.exists() and jsonl.with_name("ledger.jsonl.imported").stat().st_size > 7_000_000  # kept
    caplog.clear()
    async with connect(FLUX_KLEIN_DAILY_BUDGET_USD="1") as client:  # the next start: nothing to import
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert data["spent_today_usd"] == pytest.approx(2 * KLEIN) and "damaged" not in caplog.text
    assert len(ledger_lines(ledger)) == 40_002


# --- found by the third adversarial pass ---------------------------------------------------------------------

def test_every_spelling_of_one_ledger_shares_its_reservations(tmp_path):
    from flux_klein_mcp.spend.sqlite import SQLiteLedger
    from tests.ledger_helpers import reservation

    real = tmp_path / "state" / "ledger.sqlite3"
    real.parent.mkdir()
    link = tmp_path / "link.sqlite3"
    link.symlink_to(real)
    through_link, direct = SQLiteLedger(link), SQLiteLedger(real)
    through_link.reserve(reservation(0.03), lambda snapshot: reservation(0.03))
    assert direct.snapshot(reservation(0.01)).reserved_usd == pytest.approx(0.03)  # a daily budget sees it


async def test_an_image_without_a_cost_is_booked_at_the_estimate_not_the_highest_charge_seen(connect, ledger):
    from tests.fakes.images_api import FLUXROUTER

    gateway = FakeImagesAPI(FLUXROUTER, cost_usd="0.05")
    async with connect(gateway) as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        gateway.cost_usd = "nan"  # a cost the server cannot read
        second = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    first_line, second_line = ledger_lines(ledger)
    assert first_line["usd"] == 0.05 and first_line["source"] == "provider"
    # Quoted at the $0.05 seen (the worst case), but booked at the klein estimate, as an estimate.
    assert second_line["usd"] == KLEIN and second_line["source"] == "estimate"
    assert second["spent_session_usd"] == pytest.approx(0.05 + KLEIN)


async def test_a_ledger_that_cannot_be_read_is_named_by_get_usage_and_spend(connect, workdir, ledger):
    from tests.test_cli import cli

    ledger.mkdir(parents=True)  # a folder where the ledger should be
    async with connect() as client:
        result = await client.call_tool("get_usage", {})
    text = error_text(result)
    assert result.is_error and "The spend ledger" in text and "FLUX_KLEIN_LEDGER" in text
    for arguments in (["spend"], ["spend", "--json"]):
        done = cli(arguments, workdir, FLUX_KLEIN_LEDGER=str(ledger))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "FLUX_KLEIN_LEDGER" in done.stderr and "is not a regular file" in done.stderr and done.stdout == ""


def test_a_ledger_replaced_by_a_link_while_the_server_runs_is_not_written_through(tmp_path):
    """Found by the fifth adversarial pass: a charge was appended to whatever file a link put there pointed to."""
    from flux_klein_mcp.spend.ledger import LedgerError
    from flux_klein_mcp.spend.sqlite import SQLiteLedger

    path = tmp_path / "state" / "ledger.sqlite3"
    path.parent.mkdir()
    ledger = SQLiteLedger(path)
    ledger.probe()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    path.unlink()
    path.symlink_to(victim)
    with pytest.raises(LedgerError, match="not a regular file"):
        ledger.probe()
    assert victim.read_text() == "mine\n"


async def test_a_charge_the_ledger_could_not_take_still_counts_today(connect, ledger, monkeypatch):
    """Found by the fifth adversarial pass: after a failed ledger write, today's figure (and a refusal's words)
    left the charge out."""
    from flux_klein_mcp.spend.ledger import Ledger, LedgerError

    real, writes = Ledger.settle, []

    def fails_once(self, reservation, charges, at):
        writes.append(len(charges))
        if len(writes) == 1:
            raise LedgerError("No space left on device")
        return real(self, reservation, charges, at)

    monkeypatch.setattr(Ledger, "settle", fails_once)
    async with connect(FLUX_KLEIN_DAILY_BUDGET_USD="1") as client:
        first = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        second = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert any("could not be written to the ledger" in note for note in first["notes"])
    assert second["spent_today_usd"] == pytest.approx(2 * KLEIN) and len(ledger_lines(ledger)) == 1


# --- the ledger in PostgreSQL, when it cannot be used ----------------------------------------------------------

async def test_a_postgres_ledger_without_its_driver_refuses_paid_calls_naming_the_extra(connect, fake, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    monkeypatch.delitem(sys.modules, "flux_klein_mcp.spend.postgres", raising=False)
    async with connect(FLUX_KLEIN_LEDGER="postgresql://flux:s3cret-pw@db.example/flux") as client:
        paid = await client.call_tool("generate_image", {"prompt": "a fox"})
        usage = await client.call_tool("get_usage", {})
        free = summary(await client.call_tool("generate_image", {"prompt": "a fox", "provider": "sandbox"}))
    for result in (paid, usage):
        text = error_text(result)
        assert result.is_error and "pip install 'flux-klein-mcp[postgres]'" in text and "s3cret-pw" not in text
    assert "nothing was sent" in error_text(paid) and fake.requests == [] and free["spend_scope"]


async def test_a_postgres_ledger_that_cannot_be_reached_refuses_paid_calls_before_any_request(connect, fake):
    from tests.test_http import free_port

    url = f"postgresql://flux:s3cret-pw@127.0.0.1:{free_port()}/flux"  # nothing listens there
    async with connect(FLUX_KLEIN_LEDGER=url) as client:
        with anyio.fail_after(30):
            paid = await client.call_tool("generate_image", {"prompt": "a fox"})
    text = error_text(paid)
    assert paid.is_error and "The spend ledger cannot be written" in text and "FLUX_KLEIN_LEDGER" in text
    assert f"postgresql://flux@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}/flux" in text
    assert "s3cret-pw" not in text and fake.requests == []
