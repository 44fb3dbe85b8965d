"""The command line speaks to a person: one sentence and the documented exit code instead of a traceback (docs/cli.md),
the person's own terms (flags, variables) instead of the words meant for an agent, "did you mean" for a slip, amounts
and plurals as a person writes them, and no text from a provider or the ledger able to drive the terminal. The
agent, over MCP, keeps its own words."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import error_text, ledger_rows, output_files, provider_env
from tests.fakes.core import Loopback, png
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter, error
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = pytest.mark.anyio

#: Words for an agent that a person at the terminal should never be shown.
AGENT_WORDS = ("An AI agent", "Tell the user", "tell the user", "the user", "Do not retry", "restart the server",
               "STOP", "generate_image", "edit_image", "compose_images", "tier='", "provider=", "(s)",
               "MCP client", "Error executing tool")


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, *, close: Iterable[int] = (),
        stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """The CLI with stdin on /dev/null and, with `close`, those standard streams closed (as `<&-` or `>&-` do)."""
    shut = tuple(close)
    return subprocess.run([COMMAND, *args], cwd=cwd, env={**BASE_ENV, **(env or {})}, stdin=subprocess.DEVNULL,
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=(lambda: [os.close(fd) for fd in shut]) if shut else None)


def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    """stderr, asserted to be one line naming the program, with no traceback."""
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flux-klein-mcp: "), done.stderr
    return lines[0]


@pytest.fixture
def openrouter():
    fake = FakeOpenRouter()
    server = Loopback(fake)
    yield fake, provider_env(fake, server.url)
    server.close()


def write_ledger(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    now = datetime.now().astimezone().isoformat()
    path.write_text("".join(json.dumps({"time": now, "provider": provider, "model": model, "tier": "low",
                                        "cost_usd": usd, "cost_source": "provider", "generation_id": None,
                                        "path": None}) + "\n" for provider, model, usd in rows))
    return path


# --- messages, not tracebacks ----------------------------------------------------------------------------------

@pytest.mark.parametrize("port", ["70000", "-1", "0", "eighty"])
def test_a_port_out_of_range_is_one_sentence_and_exit_2(workdir, port):
    done = run(["serve", "--http", "--port", port], workdir)
    assert done.returncode == 2 and "--port: must be a whole number from 1 to 65535" in one_sentence(done)


@pytest.mark.parametrize("where", ["CLAUDE_CONFIG_DIR", "--dir"])
def test_the_home_folder_of_an_unknown_user_is_one_sentence_and_exit_2(workdir, where):
    args, env = (["skill", "install"], {"CLAUDE_CONFIG_DIR": "~nosuchuser/x"}) if where == "CLAUDE_CONFIG_DIR" \
        else (["skill", "install", "--dir", "~nosuchuser/x"], {})
    done = run(args, workdir, env)
    sentence = one_sentence(done)
    assert done.returncode == 2 and where in sentence and "user this machine does not know" in sentence
    assert not (workdir / "~nosuchuser").exists()


def test_a_high_tier_call_with_stdin_closed_asks_for_yes_and_sends_nothing(workdir, openrouter):
    fake, env = openrouter
    done = run(["generate", "a final", "--tier", "high"], workdir, env, close=[0])
    assert done.returncode == 2 and "--yes" in one_sentence(done)
    assert fake.requests == [] and output_files(workdir) == []


def test_spend_into_a_pipe_nobody_reads_is_one_sentence_and_exit_1(workdir, tmp_path):
    ledger = write_ledger(tmp_path / "ledger.jsonl", [("openrouter", "black-forest-labs/flux.2-klein-4b", 0.014)])
    reader, writer = os.pipe()
    os.close(reader)  # as `spend | head -c 10` once head has what it wanted
    try:
        done = run(["spend"], workdir, {"FLUX_KLEIN_LEDGER": str(ledger)}, stdout=writer)
    finally:
        os.close(writer)
    assert done.returncode == 1
    assert one_sentence(done) == "flux-klein-mcp: could not write the output: the program reading it stopped reading."


@pytest.mark.parametrize("closed", [0, 1])
def test_the_stdio_server_with_stdin_or_stdout_closed_is_one_sentence_and_exit_2(workdir, closed):
    done = run(["serve"], workdir, close=[closed])
    assert done.returncode == 2 and "the stdio server talks JSON-RPC there" in one_sentence(done)


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["--version"]])
def test_help_into_a_pipe_nobody_reads_is_one_sentence(workdir, args):
    reader, writer = os.pipe()
    os.close(reader)
    try:
        done = run(args, workdir, stdout=writer)
    finally:
        os.close(writer)
    assert done.returncode == 1 and "could not write the output" in one_sentence(done)


def test_a_paid_call_with_stdout_closed_is_refused_before_anything_is_sent(workdir, openrouter):
    fake, env = openrouter
    done = run(["generate", "a fox"], workdir, env, close=[1])
    assert done.returncode == 2 and "standard output is closed" in one_sentence(done)
    assert fake.requests == [] and output_files(workdir) == []


def test_a_paid_call_whose_result_cannot_be_printed_fails_and_keeps_its_images(workdir, openrouter, ledger):
    """Found by the third hardening pass: the path was printed nowhere, and the exit code said all was well."""
    fake, env = openrouter
    with open("/dev/full", "w") as full:  # every write fails: no space left
        done = run(["generate", "a fox"], workdir, {**env, "FLUX_KLEIN_LEDGER": str(ledger)}, stdout=full.fileno())
    sentence = one_sentence(done)
    assert done.returncode == 1 and "could not write the result" in sentence and "1 image saved" in sentence
    [image] = [p for p in output_files(workdir) if p.suffix == ".png"]
    assert str(image) in sentence and image.with_suffix(".json").exists()
    assert [row["path"] for row in ledger_rows(ledger)] == [str(image)]


def test_no_amount_is_ever_minus_zero(workdir, openrouter):
    fake, env = openrouter
    done = run(["generate", "a fox"], workdir, {**env, "FLUX_KLEIN_BUDGET_USD": "-0"})
    sentence = one_sentence(done)
    assert done.returncode == 3 and "FLUX_KLEIN_BUDGET_USD is $0.00" in sentence and "$-0" not in sentence


# --- what the terminal shows of others' text -------------------------------------------------------------------

def test_control_sequences_in_the_ledger_are_shown_as_escapes(workdir, tmp_path):
    ledger = write_ledger(tmp_path / "ledger.jsonl", [("openrouter\x07", "\x1b[2J\x1b[31mflux\u202e\x9b1m", 0.014)])
    done = run(["spend"], workdir, {"FLUX_KLEIN_LEDGER": str(ledger)})
    assert done.returncode == 0, done.stderr
    assert not any(c in done.stdout for c in "\x1b\x07\u202e\x9b")
    assert "\\x1b[2J\\x1b[31mflux\\u202e\\x9b1m" in done.stdout and "openrouter\\x07" in done.stdout


def test_control_sequences_from_a_provider_are_shown_as_escapes(workdir, openrouter):
    fake, env = openrouter
    fake.then(error(400, "bad \x1b]0;pwned\x07 request \x1b[1A\rdone"))
    done = run(["generate", "a fox"], workdir, env)
    sentence = one_sentence(done)
    assert done.returncode == 1 and "\x1b" not in done.stderr and "\\x1b]0;pwned\\x07" in sentence


# --- did you mean ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "env", "says"), [
    (["generat", "a fox"], {}, "did you mean 'generate'?"),
    (["generate", "a fox", "--provider", "openroutr"], {}, "did you mean 'openrouter'?"),
    (["generate", "a fox", "--aspect-ratio", "16x9"], {}, "did you mean '16:9'?"),
    (["generate", "a fox", "--seeds", "3"], {}, "did you mean --seed?"),
    (["spend", "--jsno"], {}, "did you mean --json?"),
    (["skill", "install", "--forse"], {}, "did you mean --force?"),
    (["skill", "instal"], {}, "did you mean 'install'?"),
    (["a red fox"], {}, "(to make an image: flux-klein-mcp generate 'a red fox')"),
    (["generate", "a", "red", "fox"], {}, "a prompt of several words goes in quotes"),
    (["generate", "a fox"], {"FLUX_KLEIN_PROVIDER": "openroutr"}, "did you mean 'openrouter'?"),
])
def test_a_slip_gets_did_you_mean(workdir, args, env, says):
    done = run(args, workdir, env)
    assert done.returncode == 2 and says in one_sentence(done)
    assert output_files(workdir) == []


def test_a_provider_name_in_another_case_is_taken(workdir):
    done = run(["generate", "a fox", "--provider", "Sandbox"], workdir)
    assert done.returncode == 0 and json.loads(done.stdout)["provider"] == "sandbox"


# --- the person's words, the agent's words ---------------------------------------------------------------------

def test_the_cli_speaks_to_the_person_in_its_own_terms(workdir, openrouter, tmp_path):
    fake, env = openrouter
    (workdir / "a.png").write_bytes(png(8, 8))
    cases = {
        "402": (["generate", "a fox"], env, 3, "Add credits at https://openrouter.ai/settings/credits, then run it"),
        "budget": (["generate", "a fox", "-n", "4", "--provider", "openrouter"],
                   {**env, "FLUX_KLEIN_BUDGET_USD": "0.05"}, 3,
                   "up to $0.056 (4 images at $0.014 each on OpenRouter), but FLUX_KLEIN_BUDGET_USD is $0.05"),
        "deny": (["generate", "a final", "--tier", "high"], {**env, "FLUX_KLEIN_HIGH_TIER": "deny"}, 2,
                 "Use --tier low for drafts"),
        "no key": (["generate", "a fox"], {}, 2, "Set one (in your shell), or use the free offline placeholders of "
                   "--provider sandbox"),
        "two to edit": (["edit", "blue", "--image", "a.png", "--image", "a.png"], env, 2,
                        "`flux-klein-mcp edit` takes exactly one image; to combine several use `flux-klein-mcp "
                        "compose`"),
        "n": (["generate", "a fox", "-n", "9"], env, 2, "-n must be a whole number from 1 to 4"),
        "pasted key": (["generate", "a fox"], {**env, "OPENROUTER_API_KEY": TEST_KEY[:20] + "\u200b" + TEST_KEY[20:]},
                       2, "Set it again from the provider's key page."),
        "no edit": (["edit", "blue", "--image", "a.png", "--provider", "aigateway"],
                    {"AIGATEWAY_API_KEY": "ag-k3y" * 5}, 2,
                    "Use --provider openrouter or --provider empiriolabs for this call"),
    }
    fake.then(error(402, "Insufficient credits"))
    for name, (args, case_env, code, says) in cases.items():
        done = run(args, workdir, case_env)
        sentence = one_sentence(done)
        assert done.returncode == code and says in sentence, (name, sentence)
        assert not [word for word in AGENT_WORDS if word in sentence], (name, sentence)


async def test_the_agent_keeps_its_own_words_and_reads_them_first(connect, fake):
    """The same failures over MCP: the agent's instructions, and our sentence first (not the SDK's "Error
    executing tool generate_image:")."""
    fake.then(error(402, "Insufficient credits"))
    async with connect() as client:
        credits = error_text(await client.call_tool("generate_image", {"prompt": "a fox"}))
    async with connect(FLUX_KLEIN_BUDGET_USD="0.05") as client:
        budget = error_text(await client.call_tool("generate_image", {"prompt": "a fox", "n": 4}))
    async with connect(FLUX_KLEIN_HIGH_TIER="deny") as client:
        deny = error_text(await client.call_tool("generate_image", {"prompt": "a fox", "tier": "high"}))
    assert credits.startswith("OpenRouter says the account is out of credits") and "STOP" in credits
    assert "Tell the user to add credits" in credits
    assert budget.startswith("Budget reached") and "4 images at $0.014 each" in budget and "Tell the user" in budget
    assert deny.startswith("The high tier is switched off on this server") and "tier='low'" in deny
    assert not any("\ufdd0" <= c <= "\ufdef" for c in credits + budget + deny)


# --- docs/cli.md stays true ------------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_cli_lists_every_exit_code_the_cli_documents_and_its_example_is_real(workdir):
    import re

    import flux_klein_mcp.cli as cli_module

    page = (DOCS / "cli.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", page, re.M)}
    in_code = {int(code) for code in re.findall(r"(?<![\d.$])(\d{1,3}) (?:done|the provider|bad arguments|out of "
                                                 r"credits|interrupted|stopped by)", cli_module.__doc__ or "")}
    assert documented == in_code == {0, 1, 2, 3, 130, 143}
    example = re.search(r"\$ flux-klein-mcp (generate .*?)\n(flux-klein-mcp: .*?)\n", page)
    assert example is not None
    done = run(["generate", "a fox", "--provider", "openroutr"], workdir)
    assert example[1] == 'generate "a fox" --provider openroutr' and done.stderr.strip() == example[2]


def test_docs_security_states_the_secret_rule_the_code_applies():
    from flux_klein_mcp.config import SECRET_VARIABLES
    from flux_klein_mcp.redact import FRAGMENT_CHARS, MIN_SECRET_CHARS

    page = (DOCS / "security.md").read_text()
    assert f"at least **{MIN_SECRET_CHARS} letters and digits**" in page
    assert f"any **{FRAGMENT_CHARS} letters and digits of it in a row**" in page
    assert all(f"`{variable}`" in page for variable in SECRET_VARIABLES)
