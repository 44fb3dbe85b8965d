"""No key ever leaves by any exit (tool result, sidecar, ledger, logs, the CLI's output): not on success paths (a
provider echoing it in an id, a model name, a header), not in a transformed echo inside an error (upper-cased,
encoded, escaped, split, clipped), and a caller's own text holding one is refused before anything is sent or saved.
Nothing else is a secret: another program's `*_TOKEN` never mangles a path or refuses a prompt. The forms themselves
are covered one by one in test_redact.py; here each exit has its representatives."""

from __future__ import annotations

import base64
import html
import json
import re
import tempfile
import unicodedata
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.conftest import error_text, ledger_rows, output_files, provider_env, summary
from tests.fakes.core import Answer, Loopback, png
from tests.fakes.images_api import AIGATEWAY, FLUXROUTER, FakeImagesAPI
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter, error, success_with
from tests.test_cli import BASE_ENV, COMMAND, cli

pytestmark = pytest.mark.anyio


def readable(text: str) -> str:
    """What a reader can put together from `text`: escapes read back, folded to ASCII, the letters and digits in
    order whatever sits between them (the redaction marker apart)."""
    text = html.unescape(unquote(text.replace("[redacted]", " ")))
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
    return re.sub(r"[^a-z0-9]", "", unicodedata.normalize("NFKD", text).lower())


def fragments(secret: str, size: int = 10) -> set[str]:
    secret = readable(secret)
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def assert_no_key(text: str, key: str = TEST_KEY) -> None:
    """Not the key, nor any ten of its letters and digits, in any case, escaped or not, whatever was put between
    them; nor its hex."""
    flat = readable(text)
    assert key.encode().hex() not in flat and key.upper().encode().hex() not in flat, "the key's hex leaked"
    leaked = sorted(piece for piece in fragments(key) if piece in flat)
    assert not leaked, f"key fragments leaked: {leaked[:3]}"


def everything_written(workdir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in output_files(workdir) if p.suffix == ".json")


# --- success paths -----------------------------------------------------------------------------------------

def echo_key_everywhere(body):
    body["id"] = f"gen-{TEST_KEY}"
    body["model"] = f"{TEST_KEY.upper()}"
    body["choices"][0]["message"]["content"] = f"made with {TEST_KEY}"


async def test_a_key_echoed_in_a_successful_openrouter_reply_reaches_no_result_or_sidecar(connect, fake, workdir):
    def answer(incoming):
        reply = success_with(echo_key_everywhere)(incoming)
        reply.headers["X-Generation-Id"] = TEST_KEY
        return reply

    fake.then(answer)
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    data = summary(result)
    assert_no_key(json.dumps(data))
    assert_no_key(everything_written(workdir))
    sidecar = json.loads(Path(data["images"][0]["sidecar"]).read_text())
    assert "[redacted]" in sidecar["generation_id"] and "[redacted]" in sidecar["model"]


@pytest.mark.parametrize("spec", [AIGATEWAY, FLUXROUTER], ids=lambda s: s.name)
async def test_a_key_echoed_in_a_gateway_request_id_header_reaches_no_sidecar(connect, workdir, spec):
    gateway = FakeImagesAPI(spec, cost_usd=spec.key)  # and a "cost" that is the key
    header = "x-request-id" if spec is AIGATEWAY else "X-Flux-Request-Id"
    original = gateway.images_answer

    def echoing(body, images):
        answer = original(body, images)
        answer.headers[header] = f"req {spec.key}"
        return answer

    gateway.images_answer = echoing  # type: ignore[method-assign]
    async with connect(gateway) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert_no_key(json.dumps(data), spec.key)
    assert_no_key(everything_written(workdir), spec.key)


def test_a_key_echoed_on_success_reaches_neither_the_cli_output_nor_its_log(workdir):
    fake = FakeOpenRouter().then(success_with(echo_key_everywhere))
    server = Loopback(fake)
    try:
        done = cli(["generate", "a fox"], workdir, **provider_env(fake, server.url))
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    assert_no_key(done.stdout)
    assert_no_key(done.stderr)
    assert_no_key(everything_written(workdir))


async def test_the_stdio_server_log_never_carries_a_key(workdir):
    fake = FakeOpenRouter().then(success_with(echo_key_everywhere), error(400, f"bad key {TEST_KEY.upper()}"))
    server = Loopback(fake)
    with tempfile.TemporaryFile("w+") as log:
        try:
            env = {**BASE_ENV, **provider_env(fake, server.url)}
            params = StdioServerParameters(command=COMMAND, args=[], env=env, cwd=workdir)
            async with Client(stdio_client(params, errlog=log)) as client:
                summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
                failed = await client.call_tool("generate_image", {"prompt": "a fox"})
        finally:
            server.close()
        log.seek(0)
        logged = log.read()
    assert failed.is_error and "bad key" in error_text(failed)
    assert "rejected" in logged or "failed" in logged  # the SDK logged the failure...
    assert_no_key(logged)  # ...without the key
    assert_no_key(error_text(failed))


# --- transformed echoes in errors ----------------------------------------------------------------------------

SPLIT = " ".join(TEST_KEY[i:i + 6] for i in range(0, len(TEST_KEY), 6))
ECHOES = {
    "upper-cased": TEST_KEY.upper(),
    "base64": base64.b64encode(f"Bearer {TEST_KEY}".encode()).decode(),
    "url-encoded": quote(f"key={TEST_KEY}", safe=""),
    "split-by-whitespace": SPLIT,
    "newline-split": TEST_KEY[:30] + "\n" + TEST_KEY[30:],
    "clipped-by-our-own-clip": "x" * 280 + " " + TEST_KEY,  # our 300-character clip cuts the key short
    "a-fragment": TEST_KEY[20:40],
    # Found by the second adversarial pass:
    "hex": TEST_KEY.encode().hex().upper(),
    "html-entities": "".join(f"&#{ord(c)};" for c in TEST_KEY),
    "unicode-escapes": "".join(f"\\u{ord(c):04x}" for c in TEST_KEY),
    "percent-every-byte": "".join(f"%{b:02X}" for b in TEST_KEY.encode()),
    "direction-marks": "\u200e".join(TEST_KEY),
    "combining-joiner": "\u034f".join(TEST_KEY),
    "fullwidth": "".join(chr(ord(c) + 0xFEE0) for c in TEST_KEY),
    "base64-of-upper": base64.b64encode(TEST_KEY.upper().encode()).decode(),
    # Found by the third (fresh) adversarial pass:
    "hangul-filler-split": "\u3164".join(TEST_KEY),
    "braille-blank-split": "\u2800".join(TEST_KEY),
    "halfwidth-filler-split": "\uffa0".join(TEST_KEY),
    "control-split": "\x07".join(TEST_KEY[:30]) + "\x00" + "\x7f".join(TEST_KEY[30:]),
    "percent-every-other": "".join(f"%{ord(c):02X}" if i % 2 else c for i, c in enumerate(TEST_KEY)),
    "entities-zero-padded-mixed": "".join(f"&#{ord(c):05d};" if i % 3 == 0 else c for i, c in enumerate(TEST_KEY)),
    "hex-entities-mixed": "".join(f"&#X{ord(c):X};" if i % 3 == 1 else c for i, c in enumerate(TEST_KEY)),
    "hex-of-upper": TEST_KEY.upper().encode().hex(),
    "unicode-escapes-every-other": "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(TEST_KEY)),
    "dash-groups": "-".join(TEST_KEY[i:i + 4] for i in range(0, len(TEST_KEY), 4)),
    "dot-groups-of-nine": ".".join(TEST_KEY[i:i + 9] for i in range(0, len(TEST_KEY), 9)),
    # Found by the fourth adversarial pass (reversed, rot13, base32 and encodings of encodings are out of scope: a
    # provider that means to leak a key always can; see docs/security.md):
    "colon-hex": ":".join(f"{b:02x}" for b in TEST_KEY.encode()),
    "pieces-of-eight": " | ".join(TEST_KEY[i:i + 8] for i in range(0, len(TEST_KEY), 8)),
    # Found by the fifth adversarial pass: %XX runs are UTF-8 bytes, read together.
    "utf8-percent-zero-width-split": quote("\u200b".join(TEST_KEY)),
    "utf8-percent-fullwidth": quote("".join(chr(ord(c) + 0xFEE0) for c in TEST_KEY)),
}


@pytest.mark.parametrize("echo", ECHOES.values(), ids=ECHOES.keys())
async def test_a_transformed_key_in_a_provider_error_never_shows(connect, fake, workdir, echo):
    fake.then(error(400, f"Invalid request: {echo}"))
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert result.is_error
    assert_no_key(error_text(result))
    assert output_files(workdir) == []


@pytest.mark.parametrize("where", ["moderation-reasons", "finish-reason-error", "text-reply"])
async def test_a_key_in_any_part_of_a_provider_error_never_shows(connect, fake, workdir, where):
    echo = ECHOES["split-by-whitespace"]
    answer = {
        "moderation-reasons": error(403, "flagged", metadata={"reasons": [echo], "flagged_input": echo}),
        "finish-reason-error": success_with(lambda body: body["choices"][0].update(
            finish_reason="error", error={"code": 502, "message": echo})),
        "text-reply": success_with(lambda body: body["choices"][0].update(
            message={"role": "assistant", "content": f"I cannot: {echo}"})),
    }[where]
    fake.then(answer)
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert result.is_error
    assert_no_key(error_text(result))
    assert output_files(workdir) == []


@pytest.mark.parametrize("echo", [pytest.param(ECHOES[name], id=name) for name in (
    "unicode-escapes", "base64", "split-by-whitespace", "percent-every-byte")])  # (JSON escapes: the result's trap)
async def test_a_transformed_key_echoed_in_a_successful_reply_reaches_no_result_sidecar_or_ledger(
        connect, fake, workdir, ledger, echo):
    def echoing(body):
        body["id"] = echo
        body["model"] = echo
        body["choices"][0]["message"]["content"] = echo

    fake.then(success_with(echoing))
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    data = summary(result)
    assert_no_key(json.dumps(data))
    assert_no_key(everything_written(workdir))
    assert ledger.exists() and data["spent_session_usd"] > 0
    files = sorted(ledger.parent.glob(ledger.name + "*"))  # the database and its write-ahead log
    assert_no_key(json.dumps(ledger_rows(ledger)) + "".join(f.read_bytes().decode("latin-1") for f in files))


async def test_a_transformed_key_quoted_by_a_failed_variation_is_not_in_the_partial_result(connect, fake):
    fake.then(error(400, f"key {ECHOES['base64']} refused"))
    async with connect() as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}))
    assert len(data["failed"]) == 1
    assert_no_key(json.dumps(data))


# --- a key the caller supplies ------------------------------------------------------------------------------

CALLER_CASES = {
    "prompt": ("generate_image", {"prompt": f"a poster reading {TEST_KEY}"}, "prompt"),
    "prompt-upper-cased": ("generate_image", {"prompt": f"text {TEST_KEY.upper()}"}, "prompt"),
    "prompt-split": ("generate_image", {"prompt": f"text {SPLIT}"}, "prompt"),
    "filename": ("generate_image", {"prompt": "a fox", "filename": TEST_KEY}, "filename"),
    "image-path": ("edit_image", {"prompt": "blue", "image": f"{TEST_KEY}.png"}, "image"),
    "image-url": ("edit_image", {"prompt": "blue", "image": f"https://example.com/a.png?k={TEST_KEY}"}, "image"),
    "compose-reference": ("compose_images", {"prompt": "both", "images": ["a.png", f"/tmp/{TEST_KEY}.png"]},
                          "images[1]"),
    # The file name would spell these back out (NFKD, then ASCII): found by the second adversarial pass.
    "filename-with-emoji": ("generate_image", {"prompt": "a fox", "filename": "🦊".join(
        TEST_KEY[i:i + 8] for i in range(0, len(TEST_KEY), 8))}, "filename"),
    "prompt-with-accents": ("generate_image", {"prompt": "".join(c + "\u0301" for c in TEST_KEY)}, "prompt"),
    "filename-fullwidth": ("generate_image", {"prompt": "a fox", "filename": "".join(
        chr(ord(c) + 0xFEE0) for c in TEST_KEY)}, "filename"),
    # Found by the third (fresh) adversarial pass: the file name would spell these out too.
    "filename-underscore-groups": ("generate_image", {"prompt": "a fox", "filename": "_".join(
        TEST_KEY[i:i + 9] for i in range(0, len(TEST_KEY), 9))}, "filename"),
    "prompt-hex": ("generate_image", {"prompt": f"print {TEST_KEY.encode().hex()}"}, "prompt"),
    "prompt-percent-every-other": ("generate_image", {"prompt": ECHOES["percent-every-other"]}, "prompt"),
    "prompt-dot-groups": ("generate_image", {"prompt": ECHOES["dot-groups-of-nine"]}, "prompt"),
    "prompt-utf8-percent": ("generate_image", {"prompt": quote("\u200b".join(TEST_KEY))}, "prompt"),
    "image-url-percent-every-other": ("edit_image", {
        "prompt": "blue", "image": f"https://example.com/a.png?k={ECHOES['percent-every-other']}"}, "image"),
}


@pytest.mark.parametrize("case", CALLER_CASES.values(), ids=CALLER_CASES.keys())
async def test_a_key_in_the_callers_own_text_is_refused_before_any_request(connect, fake, workdir, case):
    tool, arguments, parameter = case
    (workdir / "a.png").write_bytes(png(8, 8))
    async with connect() as client:
        result = await client.call_tool(tool, arguments)
    text = error_text(result)
    assert result.is_error and f"{parameter} contains the value of OPENROUTER_API_KEY, a secret" in text
    assert_no_key(text)
    assert fake.requests == [] and output_files(workdir) == []


def test_the_cli_refuses_a_key_in_the_prompt_with_exit_2_and_prints_no_key(workdir):
    done = cli(["generate", f"write {TEST_KEY} on a sign", "--provider", "sandbox"], workdir,
               OPENROUTER_API_KEY=TEST_KEY)
    assert done.returncode == 2 and done.stdout == ""
    assert "prompt contains the value of OPENROUTER_API_KEY" in done.stderr
    assert_no_key(done.stderr)
    assert output_files(workdir) == []


def test_no_key_reaches_a_file_name(workdir):
    done = cli(["generate", "a fox", "--filename", TEST_KEY.upper(), "--provider", "sandbox"], workdir,
               OPENROUTER_API_KEY=TEST_KEY)
    assert done.returncode == 2 and output_files(workdir) == []


# --- non-finite numbers --------------------------------------------------------------------------------------

def _strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("cost", [float("nan"), float("inf"), -0.5, True, "a lot"])
async def test_a_provider_cost_that_is_not_an_amount_becomes_the_list_price_with_a_note(connect, fake, workdir, cost):
    def odd_cost(incoming):
        answer = FakeOpenRouter(cost=None).success(incoming.json)
        text = answer.body.decode().replace('"total_tokens": 4187}', f'"total_tokens": 4187, "cost": {_raw(cost)}}}')
        return Answer(200, text.encode(), answer.headers)

    fake.then(odd_cost)
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    data = _strict_json(result.content[0].text)
    assert data["cost_usd"] == 0.014  # the published price, not NaN, Infinity or a credit
    assert any("not an amount" in note for note in data["notes"])
    sidecar = _strict_json(Path(data["images"][0]["sidecar"]).read_text())
    assert sidecar["cost_source"] == "price list"


def _raw(cost) -> str:
    if isinstance(cost, float) and cost != cost:
        return "NaN"
    if cost == float("inf"):
        return "Infinity"
    return json.dumps(cost)


def assert_no_key_or_encoding(text: str) -> None:
    assert_no_key(text)
    assert TEST_KEY.encode().hex() not in text.lower()


def test_configuration_errors_and_argument_errors_never_print_a_key(workdir):
    from tests.fakes.openrouter import TEST_KEY as key

    env = {"OPENROUTER_API_KEY": key, "FLUX_KLEIN_TIMEOUT_S": key}  # a key pasted into the wrong variable
    doctor = cli(["doctor"], workdir, **env)
    bad_seed = cli(["generate", "a fox", "--seed", key], workdir, OPENROUTER_API_KEY=key)
    for done in (doctor, bad_seed):
        assert done.returncode != 0
        assert_no_key(done.stdout + done.stderr)
    assert "FLUX_KLEIN_TIMEOUT_S" in doctor.stderr and "--seed" in bad_seed.stderr


def test_the_cli_prints_real_paths_even_when_they_look_like_keys(workdir, tmp_path):
    folder = tmp_path / "key-moodboard-0123456789abcdef0123"
    done = cli(["generate", "a fox", "--provider", "sandbox", "--output-dir", str(folder), "--filename",
                "sk-notakey-0123456789abcdefghij"], workdir)
    assert done.returncode == 0, done.stderr
    path = Path(json.loads(done.stdout)["images"][0]["path"])
    assert path.exists() and path.parent == folder and "[redacted]" not in done.stdout


async def test_provider_metadata_and_trailing_bytes_never_reach_the_saved_file(connect, workdir):
    import io

    from PIL import Image, PngImagePlugin

    from tests.fakes.openrouter import FakeOpenRouter

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"steps 4, key {TEST_KEY}")
    info.add_itxt("XML:com.adobe.xmp", f"<x>{TEST_KEY}</x>")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(buffer, "PNG", pnginfo=info)
    tagged = buffer.getvalue() + b"JUNK" * 1000

    def reply(incoming):
        answer = FakeOpenRouter().success(incoming.json)
        body = json.loads(answer.body)
        body["choices"][0]["message"]["images"][0]["image_url"]["url"] = (
            "data:image/png;base64," + base64.b64encode(tagged).decode())
        answer.body = json.dumps(body).encode()
        return answer

    fake = FakeOpenRouter().then(reply)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    saved = Path(data["images"][0]["path"]).read_bytes()
    assert TEST_KEY.encode() not in saved and b"JUNK" not in saved and saved.endswith(b"IEND\xaeB`\x82")
    with Image.open(io.BytesIO(saved)) as image:
        assert image.size == (64, 48) and image.getpixel((0, 0)) == (0, 128, 128)


def test_a_variable_of_bytes_that_are_not_utf8_is_no_crash(workdir):
    """Found by the fifth adversarial pass: a *_TOKEN holding such bytes crashed every command at start-up."""
    done = cli(["generate", "a fox", "--provider", "sandbox"], workdir,
               FLUX_KLEIN_HTTP_TOKEN="abcd1234\udcffefgh5678ij")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


# --- nothing else is a secret --------------------------------------------------------------------------------

def test_another_programs_token_never_mangles_a_path_or_refuses_a_prompt(workdir, tmp_path):
    """Found by the third hardening pass: PROJECT_TOKEN=flux-images turned the output folder into
    .../[redacted]/out/... and refused edits of those images; APP_SECRET=development refused the prompt "a software
    development team". Only the server's own secrets count, and only values that can be secrets."""
    env = {"PROJECT_TOKEN": "flux-images", "APP_SECRET": "development", "GITHUB_TOKEN": "ghp_" + "Zx9q" * 9,
           "FLUX_KLEIN_HTTP_TOKEN": "development-team", "FLUX_KLEIN_PROVIDER": "sandbox"}
    out = tmp_path / "flux-images" / "out"
    made = cli(["generate", "a software development team", "--output-dir", str(out)], workdir, **env)
    assert made.returncode == 0, made.stderr
    path = Path(json.loads(made.stdout)["images"][0]["path"])
    assert path.parent == out and path.exists() and "[redacted]" not in made.stdout
    assert json.loads(path.with_suffix(".json").read_text())["prompt"] == "a software development team"
    edited = cli(["edit", "the same team, in the rain", "--image", str(path), "--output-dir", str(out)], workdir, **env)
    assert edited.returncode == 0, edited.stderr
    assert Path(json.loads(edited.stdout)["images"][0]["path"]).parent == out
