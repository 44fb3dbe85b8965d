"""Every error path of the policy: the message the model reads, the exact requests sent, and nothing saved."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from mcp import Client

from flux_klein_mcp.server import create_server
from tests.conftest import error_text, output_files, summary
from tests.fakes.core import Answer, Fault, mock_transport
from tests.fakes.openrouter import TEST_KEY, error, prompt_of, success_with
from tests.test_cli import cli

pytestmark = pytest.mark.anyio


async def call(connect, arguments=None, **env):
    async with connect(**env) as client:
        return await client.call_tool("generate_image", arguments or {"prompt": "a red fox in the snow"})


def assert_failed(result, *phrases: str) -> str:
    assert result.is_error
    text = error_text(result)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    assert TEST_KEY not in text and "sk-or-v1-0123" not in text
    return text


async def test_402_stops_at_once_with_the_credits_page(connect, fake, workdir, sleeps):
    fake.then(error(402, "Insufficient credits"))
    result = await call(connect)
    assert_failed(result, "out of credits", "STOP", "do not retry", "https://openrouter.ai/settings/credits")
    assert len(fake.completions) == 1 and sleeps.calls == []
    assert output_files(workdir) == []


async def test_402_on_one_of_four_cancels_the_others(connect, fake, workdir):
    fake.then(error(402, "Insufficient credits"), Fault.HANG, Fault.HANG, Fault.HANG)
    result = await call(connect, {"prompt": "a fox", "n": 4})
    assert_failed(result, "out of credits", "https://openrouter.ai/settings/credits")
    assert len(fake.completions) == 4
    assert fake.disconnects == 3  # the three in flight were aborted, not awaited
    assert output_files(workdir) == []


async def test_402_after_some_images_keeps_them_and_says_so(connect, fake, workdir):
    first_saved = threading.Event()

    def credits_run_out_after_the_first_image(incoming):
        assert first_saved.wait(10)
        return error(402, "Insufficient credits")

    async def progress(done, total, message):
        if done == 1:
            first_saved.set()

    fake.then(fake.respond, credits_run_out_after_the_first_image)
    async with connect(loopback=True) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}, progress_callback=progress)
    text = assert_failed(result, "out of credits", "1 image finished before this and was saved")
    saved = [p for p in output_files(workdir) if p.suffix == ".png"]
    assert len(saved) == 1 and str(saved[0]) in text


async def test_missing_key_sends_nothing_and_names_every_key_variable(connect, fake, workdir):
    result = await call(connect, OPENROUTER_API_KEY="")
    assert_failed(result, "OPENROUTER_API_KEY", "sandbox")
    assert fake.requests == [] and output_files(workdir) == []


async def test_401_names_the_key_variable_and_is_not_retried(connect, fake, workdir):
    result = await call(connect, OPENROUTER_API_KEY="sk-or-v1-wrongwrongwrongwrongwrong")
    text = assert_failed(result, "rejected the API key", "OPENROUTER_API_KEY", "User not found")
    assert "wrongwrongwrong" not in text
    assert len(fake.completions) == 1 and output_files(workdir) == []


async def test_403_reports_the_moderation_reasons(connect, fake, workdir):
    fake.then(error(403, "Input was flagged", metadata={"reasons": ["violence", "gore"], "flagged_input": "a..."}))
    result = await call(connect)
    assert_failed(result, "moderation refused", "violence, gore", "Rephrase")
    assert len(fake.completions) == 1 and output_files(workdir) == []


async def test_429_waits_retry_after_and_retries_once(connect, fake, sleeps):
    fake.then(error(429, "Rate limit exceeded", headers={"Retry-After": "7"}))
    data = summary(await call(connect))
    assert sleeps.calls == [7.0] and len(fake.completions) == 2
    assert any("rate limited; waited 7 s" in note for note in data["notes"])


async def test_429_without_retry_after_waits_a_few_seconds(connect, fake, sleeps):
    fake.then(error(429, "Rate limit exceeded"))
    summary(await call(connect))
    assert sleeps.calls == [3.0] and len(fake.completions) == 2


async def test_429_uses_metadata_retry_after_seconds(connect, fake, sleeps):
    fake.then(error(429, "slow down", metadata={"retry_after_seconds": 4}))
    summary(await call(connect))
    assert sleeps.calls == [4.0]


async def test_429_twice_is_reported_after_exactly_two_requests(connect, fake, workdir, sleeps):
    fake.then(error(429, "Rate limit exceeded"), error(429, "Rate limit exceeded"))
    result = await call(connect)
    assert_failed(result, "rate limiting", "failed again after one retry")
    assert len(fake.completions) == 2 and len(sleeps.calls) == 1 and output_files(workdir) == []


async def test_429_with_a_long_retry_after_is_reported_not_waited(connect, fake, sleeps):
    fake.then(error(429, "Rate limit exceeded", headers={"Retry-After": "3600"}))
    result = await call(connect)
    assert_failed(result, "asks to wait 3600 s", "try again later")
    assert sleeps.calls == [] and len(fake.completions) == 1


async def test_502_retries_once_with_a_shorter_prompt_keeping_the_aspect_ratio(connect, fake, sleeps):
    prompt = ("A cozy reading nook in a Scandinavian apartment, soft morning light through linen curtains, "
              "a knitted blanket on an oak armchair, a stack of books, muted sage and cream palette")
    fake.then(error(502, "Provider returned error"))
    data = summary(await call(connect, {"prompt": prompt, "aspect_ratio": "16:9"}))
    first, second = (prompt_of(r.json) for r in fake.completions)
    assert first == prompt + ", aspect ratio 16:9"
    assert second.endswith(", aspect ratio 16:9") and len(second) < len(first)
    assert second.startswith("A cozy reading nook")
    assert data["prompt_sent"] == second and sleeps.calls == []
    assert json.loads(open(data["images"][0]["sidecar"]).read())["prompt_sent"] == second


async def test_502_twice_reports_blocked(connect, fake, workdir):
    fake.then(error(502, "Provider returned error"), error(502, "Provider returned error"))
    result = await call(connect)
    assert_failed(result, "Blocked", "after one retry with a shorter prompt")
    assert len(fake.completions) == 2 and output_files(workdir) == []


@pytest.mark.parametrize(
    ("answer", "phrases"),
    [
        (error(400, "Invalid request"), ["rejected the request", "400", "Invalid request"]),
        (error(404, "No endpoints found"), ["404", "No endpoints found"]),
        (error(408, "Timed out"), ["timed out", "408"]),
        (error(500, "Internal error"), ["HTTP 500", "Try again later"]),
        (error(503, "No available provider"), ["no provider available", "503"]),
        (Answer(200, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"}), ["HTML page"]),
        (Answer(520, b"<html>cloudflare</html>", {"Content-Type": "text/html"}), ["HTTP 520"]),
    ],
    ids=["400", "404", "408", "500", "503", "html-200", "html-520"],
)
async def test_other_failures_are_reported_once_without_retry(connect, fake, workdir, sleeps, answer, phrases):
    fake.then(answer)
    result = await call(connect)
    assert_failed(result, *phrases)
    assert len(fake.completions) == 1 and sleeps.calls == [] and output_files(workdir) == []


def _finish_error(body):
    body["choices"][0]["finish_reason"] = "error"
    body["choices"][0]["error"] = {"code": 502, "message": "Upstream model crashed", "metadata": {}}


def _no_images(body):
    body["choices"][0]["message"] = {"role": "assistant", "content": "I cannot draw that, but here is a poem."}


def _bad_base64(body):
    body["choices"][0]["message"]["images"][0]["image_url"]["url"] = "data:image/png;base64,@@@not-base64@@@"


def _not_an_image(body):
    junk = base64.b64encode(b"this is not a png at all").decode()
    body["choices"][0]["message"]["images"][0]["image_url"]["url"] = "data:image/png;base64," + junk


def _truncated_png(body):
    url = body["choices"][0]["message"]["images"][0]["image_url"]["url"]
    data = base64.b64decode(url.split(",", 1)[1])
    body["choices"][0]["message"]["images"][0]["image_url"]["url"] = (
        "data:image/png;base64," + base64.b64encode(data[: len(data) // 2]).decode())


def _no_choices(body):
    body["choices"] = []


@pytest.mark.parametrize(
    ("mutate", "phrases"),
    [
        (_finish_error, ["reported an error", "Upstream model crashed"]),
        (_no_images, ["without an image", "I cannot draw that"]),
        (_bad_base64, ["not valid base64"]),
        (_not_an_image, ["not a usable image"]),
        (_truncated_png, ["not a usable image"]),
        (_no_choices, ["without any choices"]),
    ],
    ids=["finish-error", "text-only", "bad-base64", "not-an-image", "truncated-png", "no-choices"],
)
async def test_a_200_that_is_not_an_image_saves_nothing(connect, fake, workdir, mutate, phrases):
    fake.then(success_with(mutate))
    result = await call(connect)
    assert_failed(result, *phrases, "Nothing was saved")
    assert len(fake.completions) == 1 and output_files(workdir) == []


async def test_one_failed_variation_still_returns_the_others(connect, fake, workdir):
    fake.then(error(403, "flagged", metadata={"reasons": ["nsfw"]}))
    data = summary(await call(connect, {"prompt": "a fox", "n": 3}))
    assert len(data["images"]) == 3 - 1
    assert len(data["failed"]) == 1 and "nsfw" in data["failed"][0]
    assert len(fake.completions) == 3


async def test_bad_arguments_are_refused_before_any_request(connect, fake, workdir):
    async with connect() as client:
        for arguments in ({"prompt": ""}, {"prompt": "x", "n": 9}, {"prompt": "x", "aspect_ratio": "7:1"},
                          {"prompt": "x", "tier": "max"}, {"prompt": "x" * 5000},
                          # booleans are not integers: n=true used to be taken as 1 (and paid for)
                          {"prompt": "x", "n": True}, {"prompt": "x", "seed": True}, {"prompt": "x", "seed": False},
                          # nothing visible is no prompt (it used to be sent, and paid for)
                          {"prompt": "\u200b\u200b"}, {"prompt": "\u200e \ufeff\x08"},
                          # an unpaired surrogate cannot be encoded: refused without quoting it back
                          {"prompt": "a fox \ud800"}, {"prompt": "a fox", "filename": "x\udfff"}):
            result = await client.call_tool("generate_image", arguments)
            assert result.is_error, arguments
        result = await client.call_tool("edit_image", {"prompt": "x", "image": "missing.png"})
        assert_failed(result, "image", "does not exist")
    assert fake.requests == [] and output_files(workdir) == []


@pytest.mark.parametrize(("variable", "value"), [
    ("FLUX_KLEIN_TIMEOUT_S", "soon"),
    # Non-finite values used to kill the server at start-up, or silently remove the time limit.
    ("FLUX_KLEIN_MAX_INPUT_MB", "inf"), ("FLUX_KLEIN_MAX_INPUT_MB", "1e400"), ("FLUX_KLEIN_MAX_INPUT_MB", "nan"),
    ("FLUX_KLEIN_TIMEOUT_S", "inf"), ("FLUX_KLEIN_TIMEOUT_S", "-inf"), ("FLUX_KLEIN_TIMEOUT_S", "NaN"),
    ("FLUX_KLEIN_THUMBNAIL_PX", "1e3"), ("FLUX_KLEIN_THUMBNAIL_PX", "99999999999999999999"),
    ("FLUX_KLEIN_TIMEOUT_S", "1_000"), ("FLUX_KLEIN_TIMEOUT_S", "\u0663"),  # Python reads both; nobody means them
    ("FLUX_KLEIN_BUDGET_USD", "-1"), ("FLUX_KLEIN_DAILY_BUDGET_USD", "nan"), ("FLUX_KLEIN_HIGH_TIER", "maybe"),
    # A home folder that cannot be found used to crash the server at start-up.
    ("FLUX_KLEIN_OUTPUT_DIR", "~nobody-like-this-user/out"), ("FLUX_KLEIN_INPUT_DIRS", "~nobody-like-this-user"),
    ("FLUX_KLEIN_LEDGER", "~nobody-like-this-user/ledger.jsonl"), ("FLUX_KLEIN_LEDGER", "mysql://me:pw@db/flux"),
    ("FLUX_KLEIN_TIMEZONE", "Mars/Olympus_Mons"), ("FLUX_KLEIN_TIMEZONE", "../../etc/passwd"),
])
async def test_a_bad_environment_variable_is_reported_by_every_tool(fake, workdir, variable, value):
    server = create_server(env={"OPENROUTER_API_KEY": TEST_KEY, variable: value}, transport=mock_transport(fake))
    async with Client(server) as client:
        for tool, args in (("generate_image", {"prompt": "a fox"}),
                           ("edit_image", {"prompt": "a fox", "image": "x.png"})):
            result = await client.call_tool(tool, args)
            assert_failed(result, variable)
            assert "Fix or unset it" in error_text(result) or "Use an absolute path" in error_text(result)
    assert fake.requests == []


@pytest.mark.parametrize("url", ["not a url", "https://[::1/api/v1", "https://openrouter.ai:99999/api/v1",
                                 "ftp://openrouter.ai/api/v1", "http://openrouter.example/api/v1",
                                 "https://xn--a.com/api/v1", "https://openrouter.ai/api/v1?x=1",
                                 "https://openrouter.ai/api/v1#top"])
async def test_a_malformed_base_url_names_its_variable_before_any_request(connect, fake, workdir, url):
    result = await call(connect, OPENROUTER_BASE_URL=url)
    text = assert_failed(result, "OPENROUTER_BASE_URL=", "not a usable base URL")
    assert "try again" not in text.lower()
    assert fake.requests == [] and output_files(workdir) == []


async def test_the_output_folder_vanishing_mid_session_costs_nothing(connect, fake, workdir, tmp_path):
    import shutil

    mine = tmp_path / "pictures"
    mine.mkdir()
    async with connect(FLUX_KLEIN_OUTPUT_DIR=str(mine)) as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        shutil.rmtree(mine)  # a clean-up, a moved folder
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
        assert_failed(result, "has disappeared", "FLUX_KLEIN_OUTPUT_DIR")
        assert "Free some space" not in error_text(result)
    assert len(fake.completions) == 1  # the second call was refused before it was paid for


async def test_the_default_output_folder_is_made_again_when_it_vanishes(connect, fake, workdir):
    import shutil

    async with connect() as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        shutil.rmtree(workdir / "output")
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert Path(data["images"][0]["path"]).exists() and len(fake.completions) == 2


async def test_a_key_quoted_by_a_failed_variation_is_scrubbed_from_the_result(connect, fake):
    fake.then(error(400, f"Invalid key {TEST_KEY} for this model"))
    result = await call(connect, {"prompt": "a fox", "n": 2})
    data = summary(result)
    assert len(data["images"]) == 1 and len(data["failed"]) == 1
    assert TEST_KEY not in json.dumps(data) and "[redacted]" in data["failed"][0]


async def test_a_garbled_retry_after_falls_back_to_the_default_wait(connect, fake, sleeps):
    fake.then(error(429, "slow down", headers={"Retry-After": "soon"}))
    summary(await call(connect))
    assert sleeps.calls == [3.0] and len(fake.completions) == 2


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body: body["choices"][0]["message"].update(images=[{"type": "image_url", "image_url": 42}]),
        lambda body: body["choices"][0].update(message="just a string"),
        lambda body: body.update(choices=[None]),
        lambda body: body.update(usage="free"),
    ],
    ids=["image-url-not-an-object", "message-a-string", "choice-null", "usage-a-string"],
)
async def test_an_oddly_shaped_reply_gets_a_real_message_not_a_masked_crash(connect, fake, workdir, mutate):
    fake.then(success_with(mutate))
    result = await call(connect)
    if result.is_error:  # never the SDK's bare "Error executing tool generate_image" mask
        text = assert_failed(result)
        assert "Nothing was saved" in text or "could not understand" in text
        assert output_files(workdir) == []
    assert len(fake.completions) == 1


@pytest.mark.parametrize("key", ["sk-or-v1-abc\u200bdefghijklmnopqrstuvwxyz", "sk-or-v1-abcdefgh\nijklmnopqrstuv",
                                 "sk-or-v1-abcdéfghijklmnopqrstuvwxyz"], ids=["zero-width", "newline", "accent"])
async def test_a_key_with_a_copy_paste_artefact_is_named_before_any_request(connect, fake, workdir, key):
    result = await call(connect, OPENROUTER_API_KEY=key)
    text = assert_failed(result, "OPENROUTER_API_KEY contains a space, line break, invisible")
    assert "could not understand" not in text and fake.requests == []


@pytest.mark.parametrize("key", ["${OPENROUTER_API_KEY}", "${env:OPENROUTER_API_KEY}", "$OPENROUTER_API_KEY",
                                 "%OPENROUTER_API_KEY%"])
async def test_a_placeholder_the_client_left_unfilled_is_named_not_sent(connect, fake, key):
    """Claude Desktop's config expands no variables (people write them anyway): the text is not a key, and sending
    it would only earn a 401."""
    result = await call(connect, OPENROUTER_API_KEY=key)
    text = assert_failed(result, "OPENROUTER_API_KEY holds a placeholder that was never filled in")
    assert "restart" in text and fake.requests == []


async def test_an_empty_bundle_field_is_an_unset_variable(connect, fake):
    """An MCP bundle host passes an optional field left empty as its template: unset, not a value (a budget of
    "${user_config.budget_usd}" would otherwise stop every call)."""
    async with connect(OPENROUTER_API_KEY=TEST_KEY, EMPIRIOLABS_API_KEY="${user_config.empiriolabs_api_key}",
                       FLUX_KLEIN_BUDGET_USD="${user_config.budget_usd}", FLUX_KLEIN_PROVIDER=" ${user_config.p} ",
                       FLUX_KLEIN_HIGH_TIER="${user_config.high_tier}") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        usage = json.loads((await client.call_tool("get_usage", {})).content[0].text)
    assert data["provider"] == "openrouter" and "budget_left_usd" not in data
    assert usage["high_tier"] == "ask"
    async with connect(OPENROUTER_API_KEY="${user_config.openrouter_api_key}") as client:
        text = error_text(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert "No image provider is configured" in text and fake.completions[1:] == []


@pytest.mark.parametrize(("variable", "value"), [("FLUX_KLEIN_OUTPUT_DIR", "${HOME}/Pictures/flux"),
                                                 ("FLUX_KLEIN_OUTPUT_DIR", "$HOME/x"),
                                                 ("FLUX_KLEIN_LEDGER", "%LOCALAPPDATA%\\flux\\ledger.jsonl"),
                                                 ("FLUX_KLEIN_INPUT_DIRS", "${workspaceFolder}")])
async def test_an_unexpanded_reference_in_a_path_is_named_not_made_a_folder(fake, workdir, variable, value):
    """Found by the fourth adversarial pass: it became a literal folder under the working directory."""
    server = create_server(env={"OPENROUTER_API_KEY": TEST_KEY, variable: value}, transport=mock_transport(fake))
    async with Client(server) as client:
        assert_failed(await client.call_tool("generate_image", {"prompt": "a fox"}), variable, "passed on unexpanded")
    assert fake.requests == [] and not any("$" in p.name or "%" in p.name for p in workdir.rglob("*"))


@pytest.mark.parametrize("variable", ["FLUX_KLEIN_PROVIDER", "FLUX_KLEIN_HIGH_TIER", "FLUX_KLEIN_BUDGET_USD"])
async def test_a_key_pasted_into_another_setting_is_not_quoted_back(fake, variable):
    """Found by the fourth adversarial pass: the message naming the bad value reached the model with the key."""
    key = "sk-or-v1-" + "deadbeef" * 8
    server = create_server(env={"OPENROUTER_API_KEY": TEST_KEY, variable: key}, transport=mock_transport(fake))
    async with Client(server) as client:
        text = assert_failed(await client.call_tool("generate_image", {"prompt": "a fox"}), variable)
    assert "deadbeefdeadbeef" not in text.lower() and fake.requests == []


def test_the_clis_messages_keep_bundle_templates_readable(workdir):
    """Found by the fourth adversarial pass: a `${user_config.x}` value counted as a secret in the CLI's own
    messages, blotting out variable names."""
    done = cli(["generate", "a fox"], workdir, OPENROUTER_API_KEY="${user_config.openrouter_api_key}")
    assert done.returncode == 2 and "OPENROUTER_API_KEY" in done.stderr and "[redacted]" not in done.stderr


def test_doctor_calls_an_unfilled_placeholder_a_misconfiguration(workdir):
    done = cli(["doctor", "--json"], workdir, OPENROUTER_API_KEY="${OPENROUTER_API_KEY}",
               OPENROUTER_BASE_URL="http://127.0.0.1:9/api/v1")
    report = json.loads(done.stdout)
    assert report["state"] == "misconfigured" and "placeholder" in report["provider_note"]


@pytest.mark.parametrize("mutate", [
    lambda body: body["usage"].update(cost=10 ** 400),  # an integer no float can hold
    lambda body: body.update(usage={"cost": 1e308}),
], ids=["400-digit-cost", "1e308-cost"])
async def test_an_absurd_reported_cost_is_ignored_with_a_note(connect, fake, mutate):
    fake.then(success_with(mutate))
    data = summary(await call(connect))
    assert data["cost_usd"] == 0.014 and any("not an amount" in note for note in data["notes"])


@pytest.mark.parametrize(("tool", "arguments", "says"), [
    ("generate_image", {"prompt": "x", "n": 9}, "n must be a whole number from 1 to 4, got 9."),
    ("generate_image", {"prompt": "x", "n": True}, "n must be a whole number from 1 to 4, got True."),
    ("generate_image", {"n": 2}, "prompt is required: What the image should show"),
    ("generate_image", {"prompt": "x", "aspect_ratio": "7:1"}, "aspect_ratio must be one of: 1:1, 2:3, 3:2"),
    ("generate_image", {"prompt": "x", "seed": -4}, "seed must be a whole number from 0 to 4294967295"),
    ("generate_image", {"prompt": "x", "tier": "max"}, "tier must be one of: low, high, got 'max'."),
    ("generate_image", {"prompt": ["x"]}, "prompt must be text, got ['x']."),
    ("compose_images", {"prompt": "x", "images": ["a.png"]}, "images must be a list of 2 to 4 strings"),
    ("edit_image", {"prompt": "x"}, "image is required: The image to edit"),
    ("generate_image", {"prompt": "x", "provider": "openroutr"}, "got 'openroutr'. Did you mean 'openrouter'?"),
])
async def test_schema_violations_are_answered_in_the_servers_words(connect, fake, tool, arguments, says):
    """Codex and OpenAI strict mode strip the schema's bounds: the error is where the model learns them."""
    async with connect() as client:
        result = await client.call_tool(tool, arguments)
    text = assert_failed(result, says, "and call " + tool + " again")
    assert "pydantic" not in text and "validation error" not in text and "Error executing tool" not in text
    assert fake.requests == []


async def test_a_key_passed_as_an_argument_is_not_echoed_by_the_schema_error(connect, fake):
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "x", "seed": TEST_KEY})
    assert_failed(result, "seed must be a whole number")
