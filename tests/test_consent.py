"""The high tier needs the person: asked through MCP elicitation (both protocol eras), refused when the client
cannot ask, never asked when nothing is at stake; on the command line, --yes or a y/N question on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ElicitResult

from tests.conftest import error_text, output_files, provider_env, summary
from tests.fakes.core import Loopback
from tests.fakes.openrouter import SEEDREAM, FakeOpenRouter
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = pytest.mark.anyio

FINAL = {"prompt": "the final poster", "tier": "high", "n": 2}
MISSING = object()


class Person:
    """An elicitation callback: records what the person was asked and answers as told."""

    def __init__(self, action: str = "accept", approve: object = True) -> None:
        self.action, self.approve = action, approve
        self.asked: list[str] = []

    async def __call__(self, context, params):
        self.asked.append(params.message)
        assert params.requested_schema["properties"]["approve"]["type"] == "boolean"
        content = ({} if self.approve is MISSING else {"approve": self.approve}) if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # the 2026-07-28 input round, and a mid-call request
async def test_an_approved_high_tier_call_proceeds_after_the_person_saw_the_price(connect, fake, mode):
    person = Person()
    async with connect(elicit=person, mode=mode) as client:
        data = summary(await client.call_tool("generate_image", FINAL))
    [question] = person.asked
    assert "bytedance-seed/seedream-4.5" in question and "$0.04 each" in question
    assert question.startswith("An AI agent wants to make 2 final images") and "$0.08 in total" in question
    assert "This makes" not in question and not any("\ufdd0" <= c <= "\ufdef" for c in question)
    assert [r.json["model"] for r in fake.completions] == [SEEDREAM, SEEDREAM]
    assert data["tier"] == "high" and len(data["images"]) == 2


@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(("answer", "word"), [(Person("decline"), "declined"), (Person("cancel"), "cancelled"),
                                               (Person("accept", approve=False), "declined"),
                                               # An accepted form that does not carry the box checked is no consent
                                               # (found by the third adversarial pass).
                                               (Person("accept", approve=MISSING), "declined"),
                                               (Person("accept", approve=None), "declined"),
                                               (Person("accept", approve="maybe"), "declined")],
                         ids=["decline", "cancel", "unchecked", "accept-without-answer", "accept-null", "accept-maybe"])
async def test_a_declined_high_tier_call_sends_nothing_and_says_not_to_retry(connect, fake, workdir, mode, answer,
                                                                             word):
    async with connect(elicit=answer, mode=mode) as client:
        result = await client.call_tool("generate_image", FINAL)
    text = error_text(result)
    assert result.is_error and f"The person {word} the high-tier spend" in text
    assert "Do not retry" in text and "low tier" in text
    assert fake.requests == [] and output_files(workdir) == []


@pytest.mark.parametrize("tool", ["generate_image", "edit_image", "compose_images"])
async def test_a_client_that_cannot_ask_is_refused_naming_the_standing_consent(connect, fake, workdir, tool):
    from tests.fakes.core import png

    (workdir / "a.png").write_bytes(png(8, 8))
    arguments = {"generate_image": FINAL, "edit_image": {"prompt": "final", "image": "a.png", "tier": "high"},
                 "compose_images": {"prompt": "final", "images": ["a.png", "a.png"], "tier": "high"}}[tool]
    async with connect() as client:  # no elicitation capability
        result = await client.call_tool(tool, arguments)
    text = error_text(result)
    assert result.is_error and "cannot ask them" in text and "FLUX_KLEIN_HIGH_TIER=allow" in text
    assert fake.requests == []


async def test_allow_is_standing_consent_and_deny_always_refuses(connect, fake):
    person = Person()
    async with connect(elicit=person, FLUX_KLEIN_HIGH_TIER="allow") as client:
        summary(await client.call_tool("generate_image", FINAL))
    async with connect(elicit=person, FLUX_KLEIN_HIGH_TIER="deny") as client:
        refused = await client.call_tool("generate_image", FINAL)
    assert person.asked == [] and len(fake.completions) == 2
    assert refused.is_error and "FLUX_KLEIN_HIGH_TIER=deny" in error_text(refused)


async def test_nothing_is_asked_when_nothing_is_at_stake(connect, fake):
    person = Person()
    async with connect(elicit=person) as client:
        summary(await client.call_tool("generate_image", {"prompt": "a draft"}))  # the low tier
        summary(await client.call_tool("generate_image", {**FINAL, "provider": "sandbox"}))  # free
    assert person.asked == []


async def test_a_budget_that_cannot_pay_refuses_before_the_person_is_asked(connect, fake):
    person = Person()
    async with connect(elicit=person, FLUX_KLEIN_BUDGET_USD="0.05") as client:
        result = await client.call_tool("generate_image", FINAL)  # 2 x $0.04 > $0.05
    assert result.is_error and "Budget reached" in error_text(result)
    assert person.asked == [] and fake.requests == []


async def test_a_ledger_that_cannot_record_the_charge_refuses_before_the_question(connect, fake, ledger):
    ledger.mkdir(parents=True)  # a folder where the ledger should be
    person = Person()
    async with connect(elicit=person) as client:
        result = await client.call_tool("generate_image", FINAL)
    assert result.is_error and "The spend ledger cannot be written" in error_text(result)
    assert person.asked == [] and fake.requests == []


async def test_a_high_tier_refused_elsewhere_is_not_asked_about(connect):
    from tests.fakes.images_api import AIGATEWAY, FakeImagesAPI

    person = Person()
    async with connect(FakeImagesAPI(AIGATEWAY), elicit=person) as client:
        result = await client.call_tool("generate_image", FINAL)
    assert result.is_error and "is not offered by AIGateway" in error_text(result) and person.asked == []


async def test_consent_over_stdio_with_a_real_client(workdir):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    yes, no = Person(), Person("decline")
    params = StdioServerParameters(command=COMMAND, args=[], env={**BASE_ENV, **provider_env(fake, server.url)},
                                   cwd=workdir)
    try:
        async with Client(params, elicitation_callback=yes) as client:
            summary(await client.call_tool("generate_image", FINAL))
        async with Client(params, elicitation_callback=no) as client:
            declined = await client.call_tool("generate_image", FINAL)
    finally:
        server.close()
    assert len(yes.asked) == 1 and len(no.asked) == 1 and len(fake.completions) == 2
    assert declined.is_error and "declined" in error_text(declined)


# --- the command line ------------------------------------------------------------------------------------------

@pytest.fixture
def openrouter():
    fake = FakeOpenRouter()
    server = Loopback(fake)
    yield fake, {**BASE_ENV, **provider_env(fake, server.url)}
    server.close()


def run_cli(args: list[str], env: dict[str, str], cwd, answer: str | None = None) -> subprocess.CompletedProcess:
    """The CLI with no terminal (stdin is /dev/null), or on a pseudo-terminal that types `answer`."""
    if answer is None:
        return subprocess.run([COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        return subprocess.run([COMMAND, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                              stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)


def test_the_cli_without_a_terminal_or_yes_exits_2_and_sends_nothing(openrouter, workdir):
    fake, env = openrouter
    done = run_cli(["generate", "final", "--tier", "high"], env, workdir)
    assert done.returncode == 2 and done.stdout == "" and "--yes" in done.stderr
    assert fake.requests == [] and output_files(workdir) == []


def test_the_cli_takes_yes_as_consent(openrouter, workdir):
    fake, env = openrouter
    done = run_cli(["generate", "final", "--tier", "high", "--yes"], env, workdir)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tier"] == "high" and fake.completions[0].json["model"] == SEEDREAM


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
@pytest.mark.parametrize(("answer", "code"), [("y", 0), ("yes", 0), ("n", 2), ("", 2)])
def test_the_cli_asks_on_a_terminal(openrouter, workdir, answer, code):
    fake, env = openrouter
    done = run_cli(["generate", "final", "--tier", "high", "-n", "2"], env, workdir, answer=answer)
    assert "This makes 2 final images on the high tier" in done.stderr and "An AI agent" not in done.stderr
    assert "$0.04 each, $0.08 in total" in done.stderr and "[y/N]" in done.stderr
    assert done.returncode == code, done.stderr
    assert len(fake.completions) == (2 if code == 0 else 0)
    if code:
        assert "declined" in done.stderr


@pytest.mark.parametrize(("mode", "code", "requests"), [("allow", 0, 1), ("deny", 2, 0)])
def test_the_cli_follows_the_high_tier_setting(openrouter, workdir, mode, code, requests):
    fake, env = openrouter
    done = run_cli(["generate", "final", "--tier", "high"], {**env, "FLUX_KLEIN_HIGH_TIER": mode}, workdir)
    assert done.returncode == code and len(fake.completions) == requests
