"""The CLI: the same pipeline from a terminal, a JSON summary on stdout, errors on stderr with an exit code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.core import Loopback, png
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter, error

COMMAND = shutil.which("flux-klein-mcp", path=str(Path(sys.executable).parent)) or "flux-klein-mcp"
# XDG_STATE_HOME is the test session's own (conftest.py): no test writes to the user's ledger.
BASE_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "SYSTEMROOT", "TMPDIR", "XDG_STATE_HOME")}


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], cwd=cwd, env={**BASE_ENV, **env}, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_generate_on_the_sandbox_prints_the_json_summary(workdir):
    done = cli(["generate", "a fox", "--aspect-ratio", "9:16", "-n", "2", "--seed", "3", "--provider", "sandbox"],
               workdir)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [i["seed"] for i in data["images"]] == [3, 4]
    assert all(Path(i["path"]).parent == workdir / "output" for i in data["images"])
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (768, 1344)


def test_edit_and_compose_against_a_loopback_openrouter(workdir, tmp_path):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    try:
        (workdir / "a.png").write_bytes(png(20, 20))
        (workdir / "b.png").write_bytes(png(20, 20, (0, 0, 255)))
        env = {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{server.url}/api/v1"}
        out = tmp_path / "elsewhere"
        edit = cli(["edit", "make it blue", "--image", "a.png", "--output-dir", str(out)], workdir, **env)
        compose = cli(["compose", "a and b", "--image", "a.png", "--image", "b.png", "--filename", "duo"], workdir,
                      **env)
    finally:
        server.close()
    assert edit.returncode == 0 and compose.returncode == 0, edit.stderr + compose.stderr
    assert Path(json.loads(edit.stdout)["images"][0]["path"]).parent == out
    assert Path(json.loads(compose.stdout)["images"][0]["path"]).name.endswith("-duo.png")
    assert [len(r.json["messages"][0]["content"]) for r in fake.completions] == [2, 3]


def test_402_exits_3_with_the_message_on_stderr_and_nothing_on_stdout(workdir):
    fake = FakeOpenRouter().then(error(402, "Insufficient credits"))
    server = Loopback(fake)
    try:
        done = cli(["generate", "a fox"], workdir, OPENROUTER_API_KEY=TEST_KEY,
                   OPENROUTER_BASE_URL=f"{server.url}/api/v1")
    finally:
        server.close()
    assert done.returncode == 3 and done.stdout == ""
    assert "https://openrouter.ai/settings/credits" in done.stderr and TEST_KEY not in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "phrase"),
    [
        (["generate", "a fox"], {}, 2, "OPENROUTER_API_KEY"),
        (["generate", "a fox", "-n", "7", "--provider", "sandbox"], {}, 2, "n must be a whole number from 1 to 4"),
        (["compose", "x", "--image", "a.png", "--provider", "sandbox"], {}, 2, "compose needs 2 to 4 --image options"),
        (["generate", "a fox", "--provider", "sandbox"], {"FLUX_KLEIN_THUMBNAIL_PX": "big"}, 2,
         "FLUX_KLEIN_THUMBNAIL_PX"),
        (["generate", "a fox", "--aspect-ratio", "7:1"], {}, 2, "invalid choice"),
        (["generate", "a fox", "--aspect-ratio", "²:1"], {}, 2, "invalid choice"),  # (a digit to isdigit, not int)
        (["serve", "--port", "9000"], {}, 2, "--host and --port only apply with --http"),
    ],
)
def test_bad_input_exits_non_zero_with_the_reason_on_stderr(workdir, args, env, code, phrase):
    done = cli(args, workdir, **env)
    assert done.returncode == code and phrase in done.stderr and done.stdout == ""
    assert not (workdir / "output").exists() or not any((workdir / "output").iterdir())


def test_demo_runs_the_server_over_stdio_on_the_sandbox_without_a_key(workdir):
    done = cli(["demo", "a tiny robot"], workdir)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["provider"] == "sandbox" and Path(data["images"][0]["path"]).exists()
    assert "generate_image, edit_image, compose_images" in done.stderr


def test_the_demo_on_a_machine_with_a_ledger_shows_the_sandboxs_own_spend(workdir, tmp_path):
    """Issue 16: the first `make demo` on a machine with a ledger reported spent_today_usd: 5.00 on a free run."""
    from datetime import datetime

    state = tmp_path / "xdg-state"
    old = state / "flux-klein-mcp" / "ledger.jsonl"  # an earlier version's ledger, at the default place
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"time": datetime.now().astimezone().isoformat(), "provider": "openrouter",
                               "model": "black-forest-labs/flux.2-klein-4b", "tier": "low", "cost_usd": 5.0,
                               "cost_source": "provider", "generation_id": None, "path": None}) + "\n")
    done = cli(["demo"], workdir, XDG_STATE_HOME=str(state))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["spent_today_usd"], data["spent_session_usd"]) == (0, 0) and "sandbox" in data["spend_scope"]
    assert [path.name for path in old.parent.iterdir()] == ["ledger.jsonl"]  # not even opened
    generated = cli(["generate", "a fox", "--provider", "sandbox"], workdir, XDG_STATE_HOME=str(state))
    assert json.loads(generated.stdout)["spent_today_usd"] == 0 and not old.with_suffix(".sqlite3").exists()


def test_spend_reports_today_this_month_and_each_day_from_the_ledger(workdir, tmp_path):
    from datetime import datetime, timedelta

    ledger = tmp_path / "ledger.jsonl"
    now = datetime.now().astimezone()
    rows = [(now, "openrouter", "black-forest-labs/flux.2-klein-4b", 0.014),
            (now, "empiriolabs", "flux-2-klein-4b", 0.0085),
            (now - timedelta(days=1), "openrouter", "bytedance-seed/seedream-4.5", 0.04),
            (now - timedelta(days=400), "openrouter", "black-forest-labs/flux.2-klein-4b", 1.0)]
    lines = [json.dumps({"time": when.isoformat(), "provider": provider, "model": model, "tier": "low",
                         "cost_usd": usd, "cost_source": "provider", "generation_id": None, "path": "/x.png"})
             for when, provider, model, usd in rows]
    ledger.write_text("\n".join([*lines, "a damaged line", ""]))
    done = cli(["spend", "--json", "--days", "3"], workdir, FLUX_KLEIN_LEDGER=str(ledger))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["today"]["spent_usd"] == pytest.approx(0.0225) and report["today"]["images"] == 2
    assert [day["spent_usd"] for day in report["days"]] == pytest.approx([0.0225, 0.04, 0])
    assert {row["provider"] for row in report["today"]["by_provider_model"]} == {"openrouter", "empiriolabs"}
    assert report["all_time"]["spent_usd"] == pytest.approx(1.0625)
    assert "damaged line" in done.stderr
    table = cli(["spend"], workdir, FLUX_KLEIN_LEDGER=str(ledger))
    assert table.returncode == 0 and "Today (" in table.stdout and "$0.0225" in table.stdout


def test_spend_with_no_ledger_yet_reports_nothing_spent(workdir, tmp_path):
    done = cli(["spend", "--json"], workdir, FLUX_KLEIN_LEDGER=str(tmp_path / "none.jsonl"))
    assert done.returncode == 0 and json.loads(done.stdout)["today"]["spent_usd"] == 0
    assert not (tmp_path / "none.jsonl").exists() and not (tmp_path / "none.sqlite3").exists()


def test_spend_groups_the_last_days_by_day_provider_or_model(workdir, tmp_path):
    from datetime import datetime, timedelta

    ledger = tmp_path / "ledger.jsonl"
    now = datetime.now().astimezone()
    rows = [(now, "openrouter", "black-forest-labs/flux.2-klein-4b", 0.014),
            (now, "openrouter", "bytedance-seed/seedream-4.5", 0.04),
            (now - timedelta(days=1), "empiriolabs", "flux-2-klein-4b", 0.0085),
            (now - timedelta(days=30), "fluxrouter", "flux-2-klein", 3.0)]  # outside the last 7 days
    ledger.write_text("".join(json.dumps({"time": when.isoformat(), "provider": provider, "model": model,
                                          "tier": "low", "cost_usd": usd, "cost_source": "provider"}) + "\n"
                              for when, provider, model, usd in rows))
    by = {}
    for group in ("day", "provider", "model"):
        done = cli(["spend", "--json", "--by", group], workdir, FLUX_KLEIN_LEDGER=str(ledger))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["by"] == group and report["today"]["spent_usd"] == pytest.approx(0.054)
        by[group] = report["rows"]
    assert [(row["date"], row["spent_usd"]) for row in by["day"][:2]] == [
        (now.date().isoformat(), pytest.approx(0.054)), ((now - timedelta(days=1)).date().isoformat(), 0.0085)]
    assert len(by["day"]) == 7
    assert by["provider"] == [{"provider": "openrouter", "spent_usd": pytest.approx(0.054), "images": 2},
                              {"provider": "empiriolabs", "spent_usd": 0.0085, "images": 1}]
    assert [(row["model"], row["images"]) for row in by["model"]] == [
        ("bytedance-seed/seedream-4.5", 1), ("black-forest-labs/flux.2-klein-4b", 1), ("flux-2-klein-4b", 1)]
    table = cli(["spend", "--by", "model", "--days", "2"], workdir, FLUX_KLEIN_LEDGER=str(ledger))
    assert table.returncode == 0 and "The last 2 days by model:" in table.stdout
    assert "bytedance-seed/seedream-4.5" in table.stdout and "fluxrouter" not in table.stdout
    assert cli(["spend", "--by", "tier"], workdir).returncode == 2  # not a grouping it knows
