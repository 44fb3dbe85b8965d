"""`serve --http`: streamable HTTP on /mcp, stateless, loopback by default, behind a bearer token when one is set,
with Host/Origin checks against DNS rebinding. Driven by the SDK client against the installed command."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import ImageContent

from tests.conftest import error_text, output_files, summary
from tests.fakes.core import png
from tests.fakes.openrouter import TEST_KEY, error
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = pytest.mark.anyio

TOKEN = "t0k3n-" + "Qm7xK2pV9zL4wR8s" * 3
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2025-11-25"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def http_server(workdir: Path, host: str = "127.0.0.1", port: int | None = None, **env: str) -> Iterator[str]:
    """Start `flux-klein-mcp serve --http --host HOST` and yield its /mcp URL once it is ready."""
    port = port or free_port()
    proc = subprocess.Popen([COMMAND, "serve", "--http", "--host", host, "--port", str(port)], cwd=workdir,
                            env={**BASE_ENV, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ready, lines = threading.Event(), []

    def watch() -> None:
        assert proc.stderr
        for line in proc.stderr:
            lines.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(20) and proc.poll() is None, "".join(lines)
        yield f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)
    assert TEST_KEY not in "".join(lines) and TOKEN not in "".join(lines)


def client(url: str, token: str | None = None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=30)))


async def test_tools_work_over_http_on_loopback_without_a_token(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env) as url:
        async with client(url) as session:
            assert {t.name for t in (await session.list_tools()).tools} == {
                "generate_image", "edit_image", "compose_images", "get_usage"}
            result = await session.call_tool("generate_image", {"prompt": "a fox", "n": 2, "seed": 3})
            fake.then(error(402, "Insufficient credits"))
            refused = await session.call_tool("generate_image", {"prompt": "a fox"})
    assert len(summary(result)["images"]) == 2
    assert len([b for b in result.content if isinstance(b, ImageContent)]) == 2
    assert refused.is_error and "https://openrouter.ai/settings/credits" in error_text(refused)
    assert len(fake.completions) == 3
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 2


async def test_with_a_token_every_request_needs_it(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, FLUX_KLEIN_HTTP_TOKEN=TOKEN, **env) as url:
        bare = httpx.post(url, json=LIST_TOOLS, headers=MCP_HEADERS)
        wrong = httpx.post(url, json=LIST_TOOLS, headers={**MCP_HEADERS, "Authorization": "Bearer nope"})
        cold_call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                     "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}}}
        sneaky = httpx.post(url, json=cold_call, headers=MCP_HEADERS)
        health = httpx.get(url.replace("/mcp", "/healthz"))
        async with client(url, TOKEN) as session:
            data = summary(await session.call_tool("generate_image", {"prompt": "a fox"}))
    assert bare.status_code == wrong.status_code == sneaky.status_code == 401
    assert bare.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in bare.text
    assert health.status_code == 200 and health.text == "ok"
    assert len(fake.completions) == 1 and Path(data["images"][0]["path"]).exists()


async def test_the_server_is_stateless(workdir, openrouter):
    """A tools/call with no initialize and no session id works: any replica can take any request."""
    fake, env = openrouter
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}}}
    with http_server(workdir, **env) as first, http_server(workdir, **env) as second:
        listed = httpx.post(first, json=LIST_TOOLS, headers=MCP_HEADERS)
        answered = httpx.post(second, json=call, headers=MCP_HEADERS, timeout=30)
    assert "mcp-session-id" not in listed.headers
    message = json.loads(answered.text.split("data: ", 1)[1].splitlines()[0])
    assert message["id"] == 7 and message["result"]["isError"] is False


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("127.0.0.2", marks=pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="only Linux routes all of 127/8 to loopback"))])
async def test_dns_rebinding_is_refused_on_loopback(workdir, openrouter, host):
    fake, env = openrouter
    with http_server(workdir, host, **env) as url:
        statuses = [httpx.post(url, json=LIST_TOOLS, headers={**MCP_HEADERS, **extra}).status_code
                    for extra in ({"Host": "evil.example"}, {"Host": "attacker.test:8000"},
                                  {"Origin": "http://evil.example"}, {})]
    assert statuses == [421, 421, 403, 200]
    assert fake.requests == []


async def test_a_plain_get_on_the_endpoint_answers_405_instead_of_hanging(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env) as url:
        answer = httpx.get(url, headers={"Accept": "text/event-stream"}, timeout=10)
    assert answer.status_code == 405 and "POST" in answer.headers["allow"]


@pytest.mark.parametrize(
    ("args", "env", "phrase"),
    [
        (["--host", "0.0.0.0"], {}, "Refusing to serve on 0.0.0.0 without FLUX_KLEIN_HTTP_TOKEN"),
        ([], {"FLUX_KLEIN_HTTP_TOKEN": "abc"}, "FLUX_KLEIN_HTTP_TOKEN is 3 characters; use at least 16"),
        ([], {"FLUX_KLEIN_HTTP_TOKEN": "development-team-token"}, "FLUX_KLEIN_HTTP_TOKEN looks guessable"),
        ([], {"FLUX_KLEIN_HTTP_TOKEN": "t0k3n-" + "x" * 40}, "FLUX_KLEIN_HTTP_TOKEN looks guessable"),
        (["--port", "{busy}"], {}, "Choose another --port"),
        ([], {"FLUX_KLEIN_HTTP_SECRET": "short"}, "FLUX_KLEIN_HTTP_SECRET is 5 characters; use at least 32"),
        ([], {"FLUX_KLEIN_HTTP_SECRET": "${FLUX_KLEIN_HTTP_SECRET}"}, "passed on unexpanded, not a secret"),
        ([], {"FLUX_KLEIN_HTTP_READ_TIMEOUT_S": "0"}, "FLUX_KLEIN_HTTP_READ_TIMEOUT_S must be a number from 0.1"),
    ],
    ids=["no-token-off-loopback", "short-token", "words-token", "placeholder-token", "port-in-use", "short-secret",
         "unexpanded-secret", "bad-timeout"],
)
def test_serve_http_refuses_to_start_with_a_clear_message(workdir, args, env, phrase):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("{busy}", str(busy.getsockname()[1])) for a in args]
        done = subprocess.run([COMMAND, "serve", "--http", *args], cwd=workdir, capture_output=True, text=True,
                              env={**BASE_ENV, "FLUX_KLEIN_PROVIDER": "sandbox", **env}, timeout=30,
                              stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and phrase in done.stderr
    assert "Traceback" not in done.stderr


def test_a_non_loopback_address_without_a_token_refuses_to_start(workdir):
    done = subprocess.run([COMMAND, "serve", "--http", "--host", "0.0.0.0", "--port", str(free_port())],
                          cwd=workdir, env={**BASE_ENV, "FLUX_KLEIN_PROVIDER": "sandbox"}, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "FLUX_KLEIN_HTTP_TOKEN" in done.stderr and "Refusing to serve on 0.0.0.0" in done.stderr


@pytest.mark.parametrize("token", ["${FLUX_KLEIN_HTTP_TOKEN}", "$FLUX_KLEIN_HTTP_TOKEN", "%FLUX_KLEIN_HTTP_TOKEN%",
                                   "${env:FLUX_KLEIN_HTTP_TOKEN}"])
def test_an_unexpanded_reference_is_no_token(workdir, token):
    """Found by the fourth adversarial pass: long enough to pass the length check, and guessable by anyone."""
    done = subprocess.run([COMMAND, "serve", "--http", "--host", "0.0.0.0", "--port", str(free_port())],
                          cwd=workdir, capture_output=True,
                          env={**BASE_ENV, "FLUX_KLEIN_PROVIDER": "sandbox", "FLUX_KLEIN_HTTP_TOKEN": token},
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "passed on unexpanded, not a secret" in done.stderr, done.stderr


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("127.0.0.2", True), ("0.0.0.0", False), ("192.168.1.5", False),
                                                ("example.com", False)])
def test_loopback_detection(host, loopback):
    from flux_klein_mcp.http_server import is_loopback

    assert is_loopback(host) is loopback


async def test_off_loopback_the_token_guards_and_allowed_hosts_are_checked(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, "0.0.0.0", FLUX_KLEIN_HTTP_TOKEN=TOKEN,
                     FLUX_KLEIN_HTTP_ALLOWED_HOSTS="images.example.test", **env) as url:
        auth = {**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"}
        no_token = httpx.post(url, json=LIST_TOOLS, headers={**MCP_HEADERS, "Host": "images.example.test"})
        wrong_host = httpx.post(url, json=LIST_TOOLS, headers=auth)  # Host: 127.0.0.1:port is not listed
        right_host = httpx.post(url, json=LIST_TOOLS, headers={**auth, "Host": "images.example.test"})
    assert (no_token.status_code, wrong_host.status_code, right_host.status_code) == (401, 421, 200)
    assert "generate_image" in right_host.text


# --- what a remote client may read (found by the adversarial pass) -------------------------------------------

def _roots(*folders: Path):
    from mcp.types import ListRootsResult, Root

    async def list_roots(context):
        return ListRootsResult(roots=[Root(uri=folder.as_uri()) for folder in folders])

    return list_roots


async def test_over_http_client_roots_and_the_working_directory_open_nothing(workdir, openrouter, tmp_path):
    fake, env = openrouter
    private = tmp_path / "private"
    private.mkdir()
    (private / "id.png").write_bytes(png(8, 8))
    (workdir / "here.png").write_bytes(png(8, 8))
    with http_server(workdir, **env) as url:
        transport = streamable_http_client(url, http_client=httpx2.AsyncClient(timeout=30))
        async with Client(transport, list_roots_callback=_roots(Path("/"), private, workdir)) as session:
            outside = (str(private / "id.png"), (private / "id.png").as_uri(), "here.png", str(workdir / "here.png"))
            for image in outside:
                result = await session.call_tool("edit_image", {"prompt": "blue", "image": image})
                text = error_text(result)
                assert result.is_error and "outside the folders" in text, image
                assert "Over HTTP only the output folder and FLUX_KLEIN_INPUT_DIRS" in text
            with pytest.raises(MCPError, match="Only images in the output folder"):
                await session.read_resource((private / "id.png").as_uri())
    assert fake.requests == [] and output_files(workdir) == []


async def test_over_http_input_dirs_are_the_way_in(workdir, openrouter, tmp_path):
    fake, env = openrouter
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a.png").write_bytes(png(8, 8))
    with http_server(workdir, FLUX_KLEIN_INPUT_DIRS=str(shared), **env) as url, \
            httpx.Client(timeout=30) as raw:
        async with client(url) as session:
            data = summary(await session.call_tool("edit_image", {"prompt": "blue", "image": str(shared / "a.png")}))
        assert Path(data["images"][0]["path"]).exists() and len(fake.completions) == 1
        # A body over the SDK's 4 MiB cap is refused in our words, naming the way around it.
        huge = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "edit_image", "arguments": {
            "prompt": "x", "image": "data:image/png;base64," + "A" * (5 * 1024 * 1024)}}}
        answer = raw.post(url, json=huge, headers=MCP_HEADERS)
    assert answer.status_code == 413
    message = answer.json()["error"]["message"]
    assert "4 MiB" in message and "about 3 MB" in message and "https:// URL" in message
    assert "FLUX_KLEIN_INPUT_DIRS" in message and len(fake.completions) == 1


def test_sigterm_lets_a_call_in_flight_finish_before_the_server_stops(workdir, openrouter):
    """Found by the adversarial pass: with the 2025-11-25 protocol's event streams, SIGTERM cut a call the provider
    had already been paid for; the server now drains calls in flight for a few seconds."""
    import signal

    fake, env = openrouter
    answer_later = threading.Event()

    def slow(incoming):
        answer_later.wait(10)
        return fake.respond(incoming)

    fake.then(slow)
    port = free_port()
    proc = subprocess.Popen([COMMAND, "serve", "--http", "--port", str(port)], cwd=workdir, env={**BASE_ENV, **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr
        for line in proc.stderr:
            if "Uvicorn running on" in line:
                break
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}}}
        answers: list[httpx.Response] = []
        poster = threading.Thread(target=lambda: answers.append(httpx.post(
            f"http://127.0.0.1:{port}/mcp", json=call, headers=MCP_HEADERS, timeout=30)))
        poster.start()
        assert fake.arrived.wait(20)
        proc.send_signal(signal.SIGTERM)
        threading.Timer(1.5, answer_later.set).start()  # the provider answers 1.5 s after the signal
        poster.join(30)
        proc.wait(20)
    finally:
        proc.kill()
    message = json.loads(answers[0].text.split("data: ", 1)[1].splitlines()[0])
    assert message["result"]["isError"] is False
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 1
