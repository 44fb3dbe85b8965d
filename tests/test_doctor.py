"""`flux-klein-mcp doctor`: key checks without spend, the output folder, the provider a call would use."""

from __future__ import annotations

import json

import pytest

from flux_klein_mcp.config import Settings
from flux_klein_mcp.doctor import diagnose, render
from flux_klein_mcp.runtime import Runtime
from tests.fakes.core import Loopback, mock_transport
from tests.fakes.images_api import AIGATEWAY, FLUXROUTER, FakeImagesAPI
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter
from tests.test_cli import cli

pytestmark = pytest.mark.anyio


async def test_each_key_is_checked_without_any_generation(workdir):
    openrouter, aigateway, fluxrouter = FakeOpenRouter(), FakeImagesAPI(AIGATEWAY), FakeImagesAPI(FLUXROUTER)
    settings = Settings.from_env({
        "OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": "https://or.test/api/v1",
        "AIGATEWAY_API_KEY": "ag-wrong", "AIGATEWAY_BASE_URL": "https://ag.test/v1",
        "FLUX_API_KEY": FLUXROUTER.key, "FLUXROUTER_BASE_URL": "https://fx.test/v1",
        "EMPIRIOLABS_API_KEY": "el-key", "EMPIRIOLABS_BASE_URL": "https://down.test/v1",
    }, cwd=workdir)
    transport = mock_transport({"or.test": openrouter, "ag.test": aigateway, "fx.test": fluxrouter})
    async with Runtime.open(settings, transport) as runtime:
        report = await diagnose(runtime)
    status = {row["provider"]: row["status"] for row in report["providers"]}
    assert status == {"openrouter": "ok", "empiriolabs": "unreachable", "aigateway": "invalid", "fluxrouter": "ok",
                      "openai-compatible": "missing", "sandbox": "ok"}
    assert [r.path for r in openrouter.requests] == ["/api/v1/key"]
    assert [r.path for r in aigateway.requests] == ["/v1/models"] == [r.path for r in fluxrouter.requests]
    assert report["provider_for_calls"] == "openrouter" and report["usable"] is True
    assert report["output_dir"] == str(workdir / "output")
    text = render(report)
    assert "OPENROUTER_API_KEY" in text and "Calls would use: openrouter" in text
    assert TEST_KEY not in json.dumps(report) and "ag-wrong" not in json.dumps(report)


async def test_a_model_missing_from_the_list_is_reported(workdir):
    fluxrouter = FakeImagesAPI(FLUXROUTER)
    fluxrouter.listed = ["flux-pro-only"]  # the alias was retired
    settings = Settings.from_env({"FLUX_API_KEY": FLUXROUTER.key, "FLUXROUTER_BASE_URL": "https://fx.test/v1",
                                  "FLUX_KLEIN_PROVIDER": "fluxrouter"}, cwd=workdir)
    async with Runtime.open(settings, mock_transport({"fx.test": fluxrouter})) as runtime:
        report = await diagnose(runtime)
    row = next(r for r in report["providers"] if r["provider"] == "fluxrouter")
    assert row["status"] == "invalid" and "'flux-image' is not listed" in row["detail"]
    assert report["usable"] is False


def test_doctor_exits_1_when_nothing_is_configured(workdir):
    done = cli(["doctor"], workdir)
    assert done.returncode == 1
    assert "No image provider is configured" in done.stdout and "FLUX_KLEIN_PROVIDER=sandbox" in done.stdout


def test_doctor_exits_0_with_a_valid_key_and_prints_json(workdir):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    try:
        done = cli(["doctor", "--json"], workdir, OPENROUTER_API_KEY=TEST_KEY,
                   OPENROUTER_BASE_URL=f"{server.url}/api/v1")
    finally:
        server.close()
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["provider_for_calls"] == "openrouter" and fake.completions == []


async def test_an_odd_key_reply_is_a_row_not_a_crash(workdir):
    from tests.fakes.core import Answer, FakeBase

    class Odd(FakeBase):
        def scripted_paths(self):
            return ()

        def respond(self, incoming):
            return Answer(200, b"<html>captive portal</html>", {"Content-Type": "text/html"})

    settings = Settings.from_env({"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": "https://or.test/api/v1",
                                  "FLUX_KLEIN_PROVIDER": "openrouter"}, cwd=workdir)
    async with Runtime.open(settings, mock_transport({"or.test": Odd()})) as runtime:
        report = await diagnose(runtime)
    row = next(r for r in report["providers"] if r["provider"] == "openrouter")
    assert row["status"] == "unreachable" and "HTML" in row["detail"]
    assert report["usable"] is False


@pytest.mark.parametrize(("info", "warned"), [
    ({"limit": 10, "usage": 9.99, "limit_remaining": 0.01}, True),  # less than one $0.014 image
    ({"limit": 10, "usage": 2.5, "limit_remaining": 7.5}, False),
    ({"limit": None, "usage": 2.5, "limit_remaining": None}, False),  # an unlimited key
])
def test_doctor_json_carries_the_key_credit_as_numbers_and_warns_when_it_cannot_pay(workdir, info, warned):
    fake = FakeOpenRouter()
    fake.key_info.update(info)
    server = Loopback(fake)
    try:
        done = cli(["doctor", "--json"], workdir, OPENROUTER_API_KEY=TEST_KEY,
                   OPENROUTER_BASE_URL=f"{server.url}/api/v1")
        table = cli(["doctor"], workdir, OPENROUTER_API_KEY=TEST_KEY, OPENROUTER_BASE_URL=f"{server.url}/api/v1")
    finally:
        server.close()
    report = json.loads(done.stdout)
    row = next(r for r in report["providers"] if r["provider"] == "openrouter")
    assert row["credit"] == {key: (None if value is None else float(value)) for key, value in info.items()}
    assert bool(report["warnings"]) is warned
    if warned:
        assert "less than one image ($0.014)" in report["warnings"][0]
        assert "https://openrouter.ai/settings/credits" in report["warnings"][0] and "Warning:" in table.stdout
    assert fake.completions == []


def test_doctor_tells_an_unreachable_provider_from_nothing_configured_and_a_rejected_key(workdir):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once the probe closes
    nothing = cli(["doctor", "--json"], workdir)
    unreachable = cli(["doctor"], workdir, OPENROUTER_API_KEY=TEST_KEY,
                      OPENROUTER_BASE_URL=f"http://127.0.0.1:{closed}/api/v1")
    fake = FakeOpenRouter()
    server = Loopback(fake)
    try:
        rejected = cli(["doctor", "--json"], workdir, OPENROUTER_API_KEY="sk-or-v1-" + "f" * 64,
                       OPENROUTER_BASE_URL=f"{server.url}/api/v1")
    finally:
        server.close()
    assert json.loads(nothing.stdout)["state"] == "nothing configured" and nothing.returncode == 1
    assert unreachable.returncode == 1 and "could not be reached: the key may well be fine" in unreachable.stdout
    assert "Nothing is configured" not in unreachable.stdout
    assert json.loads(rejected.stdout)["state"] == "key rejected" and rejected.returncode == 1


def test_doctor_reports_a_ledger_that_cannot_record_and_is_not_ready(workdir):
    """Found by the third adversarial pass: with the ledger a folder every paid call is refused, so doctor says so."""
    (workdir / "ledger-folder").mkdir()
    fake = FakeOpenRouter()
    server = Loopback(fake)
    try:
        env = {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{server.url}/api/v1",
               "FLUX_KLEIN_LEDGER": str(workdir / "ledger-folder")}
        as_json = cli(["doctor", "--json"], workdir, **env)
        table = cli(["doctor"], workdir, **env)
        sandbox = cli(["doctor", "--json"], workdir, **{**env, "FLUX_KLEIN_PROVIDER": "sandbox"})
    finally:
        server.close()
    report = json.loads(as_json.stdout)
    assert report["state"] == "ledger" and not report["usable"] and as_json.returncode == 1
    assert "cannot be written" in report["ledger_status"] and "FLUX_KLEIN_LEDGER" in report["ledger_status"]
    assert "Spend ledger:" in table.stdout and "every paid call is refused" in table.stdout
    assert json.loads(sandbox.stdout)["usable"]  # the sandbox spends nothing, so needs no ledger


def test_doctor_proves_the_ledger_takes_a_write_and_leaves_nothing_behind(workdir, tmp_path):
    from tests.conftest import ledger_rows

    fake = FakeOpenRouter()
    server = Loopback(fake)
    ledger = tmp_path / "state" / "ledger.sqlite3"
    try:
        env = {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{server.url}/api/v1",
               "FLUX_KLEIN_LEDGER": str(ledger)}
        ready = cli(["doctor", "--json"], workdir, **env)
        assert ledger_rows(ledger) == [] and ledger_rows(ledger, "reservations") == []  # rolled back
        ledger.with_name("ledger.sqlite3-wal").unlink(missing_ok=True)
        ledger.with_name("ledger.sqlite3-wal").mkdir()  # SQLite cannot keep its write-ahead log: no write can land
        broken = cli(["doctor", "--json"], workdir, **env)
    finally:
        server.close()
    report = json.loads(ready.stdout)
    assert report["usable"] and report["ledger"] == str(ledger) and "rolled back" in report["ledger_status"]
    assert json.loads(broken.stdout)["state"] == "ledger" and broken.returncode == 1
