"""End to end: the installed `flux-klein-mcp` as a subprocess, driven over stdio by the official MCP client,
against the strict fake OpenRouter on a real loopback socket."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ImageContent, ListRootsResult, ResourceLink, Root, TextContent
from PIL import Image

from tests.conftest import TEST_CLIENT, error_text, output_files, provider_env, summary
from tests.fakes.core import Loopback, png
from tests.fakes.images_api import AIGATEWAY, EMPIRIOLABS, FLUXROUTER, GENERIC, FakeImagesAPI
from tests.fakes.openrouter import FLUX, TEST_KEY, FakeOpenRouter, error

pytestmark = pytest.mark.anyio

COMMAND = shutil.which("flux-klein-mcp", path=str(Path(sys.executable).parent)) or "flux-klein-mcp"


@pytest.fixture
def server_env(loopback: Loopback) -> dict[str, str]:
    return {
        "OPENROUTER_API_KEY": TEST_KEY,
        "OPENROUTER_BASE_URL": f"{loopback.url}/api/v1",
        "PYTHONUNBUFFERED": "1",
    }


def stdio(env: dict[str, str], cwd: Path) -> Client:
    return Client(StdioServerParameters(command=COMMAND, args=[], env=env, cwd=cwd), client_info=TEST_CLIENT)


async def test_generate_over_stdio_saves_files_and_returns_thumbnails(server_env, workdir, fake: FakeOpenRouter):
    progress: list[float] = []

    async def on_progress(done, total, message):
        progress.append(done)

    async with stdio(server_env, workdir) as client:
        result = await client.call_tool(
            "generate_image", {"prompt": "a paper crane, studio light", "aspect_ratio": "4:5", "n": 2, "seed": 1},
            progress_callback=on_progress,
        )
    data = summary(result)
    assert [type(b) for b in result.content] == [TextContent, ImageContent, ImageContent, ResourceLink, ResourceLink]
    assert sorted(r.json["seed"] for r in fake.completions) == [1, 2]
    assert all(r.json["model"] == FLUX and set(r.json) == {"model", "messages", "seed"} for r in fake.completions)
    for image in data["images"]:
        path = Path(image["path"])
        assert path.parent == workdir / "output"
        with Image.open(path) as saved:
            assert saved.size == (896, 1152)
    assert progress[-1] == 2
    assert len(output_files(workdir)) == 4


async def test_edit_over_stdio_reads_a_file_relative_to_the_server_cwd(server_env, workdir, fake):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "teal").save(buffer, "PNG")
    (workdir / "logo.png").write_bytes(buffer.getvalue())
    async with stdio(server_env, workdir) as client:
        data = summary(await client.call_tool("edit_image", {"prompt": "make it gold", "image": "logo.png"}))
    parts = fake.completions[0].json["messages"][0]["content"]
    assert parts[0]["text"] == "make it gold, aspect ratio 3:2"  # an edit keeps its input's shape (30x20)
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert Path(data["images"][0]["path"]).exists()


async def test_402_over_stdio_stops_and_saves_nothing(server_env, workdir, fake):
    fake.then(error(402, "Insufficient credits"))
    async with stdio(server_env, workdir) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
        assert result.is_error
        assert "https://openrouter.ai/settings/credits" in error_text(result)
        # the server keeps answering after an error
        assert not (await client.call_tool("generate_image", {"prompt": "a fox"})).is_error
    assert len(fake.completions) == 2
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 1


def test_stdout_carries_only_protocol_messages(server_env, workdir):
    """Raw JSON-RPC over the pipes: every line the server writes to stdout must be a JSON-RPC message."""
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "generate_image", "arguments": {"prompt": "a fox"}, "_meta": {"progressToken": "p"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "generate_image", "arguments": {"prompt": ""}}},
    ]
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "SYSTEMROOT")}, **server_env}
    proc = subprocess.Popen([COMMAND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=workdir, env=env, text=True)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(messages[0]) + "\n")
    proc.stdin.flush()
    lines = [proc.stdout.readline()]
    for message in messages[1:]:
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        if "id" in message:
            while True:  # progress notifications come before the response
                lines.append(proc.stdout.readline())
                if json.loads(lines[-1]).get("id") == message["id"]:
                    break
    rest, stderr = proc.communicate(timeout=30)
    lines += rest.splitlines()
    parsed = [json.loads(line) for line in lines if line.strip()]
    assert all(m.get("jsonrpc") == "2.0" for m in parsed)
    assert any(m.get("method") == "notifications/progress" for m in parsed)
    results = {m["id"]: m for m in parsed if "id" in m}
    assert results[2]["result"]["isError"] is False and results[3]["result"]["isError"] is True
    assert TEST_KEY not in stderr and TEST_KEY not in "".join(lines)


GATEWAYS = [EMPIRIOLABS, AIGATEWAY, FLUXROUTER, GENERIC]


def assert_generated(result, provider: str, count: int) -> dict:
    data = summary(result)
    assert data["provider"] == provider and len(data["images"]) == count
    assert len([b for b in result.content if isinstance(b, ImageContent)]) == count
    assert all(Path(image["path"]).is_file() for image in data["images"])
    return data


@pytest.mark.parametrize("spec", GATEWAYS, ids=lambda s: s.name)
async def test_each_gateway_chosen_by_its_key_alone_generates_over_stdio(spec, workdir):
    fake = FakeImagesAPI(spec)
    server = Loopback(fake)
    try:
        async with stdio(provider_env(fake, server.url), workdir) as client:
            one = await client.call_tool("generate_image", {"prompt": "a fox", "aspect_ratio": "16:9"})
            two = await client.call_tool("generate_image", {"prompt": "two foxes", "n": 2})
    finally:
        server.close()
    data = assert_generated(one, spec.name, 1)
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (1344, 768)
    assert_generated(two, spec.name, 2)
    assert len(fake.generations) == (3 if spec.name == "fluxrouter" else 2)
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 3


async def test_each_gateway_chosen_by_the_provider_argument_generates_over_stdio(workdir):
    fakes = {spec.name: FakeImagesAPI(spec) for spec in GATEWAYS}
    servers = [Loopback(fake) for fake in fakes.values()]
    try:
        env = {"OPENROUTER_API_KEY": TEST_KEY}  # would win the automatic choice
        for fake, server in zip(fakes.values(), servers, strict=True):
            env.update({k: v for k, v in provider_env(fake, server.url).items() if k != "OPENROUTER_API_KEY"})
        async with stdio(env, workdir) as client:
            results = {name: [await client.call_tool("generate_image", {"prompt": "a fox", "n": n, "provider": name})
                              for n in (1, 2)] for name in fakes}
    finally:
        for server in servers:
            server.close()
    for name, (one, two) in results.items():
        assert_generated(one, name, 1)
        assert_generated(two, name, 2)
        assert fakes[name].generations
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 12


async def test_an_empiriolabs_job_completes_over_stdio(workdir):
    fake = FakeImagesAPI(EMPIRIOLABS)
    fake.force_jobs = True
    fake.job_polls = 1
    server = Loopback(fake)
    try:
        async with stdio({**provider_env(fake, server.url)}, workdir) as client:
            data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    finally:
        server.close()
    assert fake.count("/v1/jobs/job-1") == 2 and Path(data["images"][0]["path"]).is_file()


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 input rounds, and a mid-call roots/list request
async def test_client_roots_open_their_folders_for_input_images_over_stdio(server_env, workdir, tmp_path, fake, mode):
    project = tmp_path / "client-project"
    project.mkdir()
    (project / "sketch.png").write_bytes(png(24, 24))

    async def list_roots(context):
        return ListRootsResult(roots=[Root(uri=project.as_uri(), name="project")])

    params = StdioServerParameters(command=COMMAND, args=[], env=server_env, cwd=workdir)
    async with Client(params, list_roots_callback=list_roots, mode=mode) as client:
        data = summary(await client.call_tool("edit_image", {"prompt": "ink it", "image": str(project / "sketch.png")}))
    async with stdio(server_env, workdir) as client:  # a client without roots gets no such access
        refused = await client.call_tool("edit_image", {"prompt": "ink it", "image": str(project / "sketch.png")})
    assert Path(data["images"][0]["path"]).exists()
    assert refused.is_error and "outside the folders" in error_text(refused)
    assert len(fake.completions) == 1


def test_a_line_that_is_not_json_rpc_is_answered_with_a_json_rpc_error(workdir):
    """Found by the third hardening pass: a lone UTF-16 surrogate (which JSON text cannot carry) made the SDK drop the
    request silently, and the client waited forever. Each such line now gets its JSON-RPC error, with the request's
    id when it can be read; notifications and responses are never answered."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}
    lines = [json.dumps(initialize), '{"jsonrpc":"2.0","method":"notifications/initialized"}',
             '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"generate_image",'
             '"arguments":{"prompt":"a \\ud800 fox"}}}',
             "not json at all",
             '{"jsonrpc":"2.0","id":"eight","method":5}',
             '{"jsonrpc":"2.0","method":"notifications/progress","params":{"x":"\\udc00"}}',
             '{"jsonrpc":"2.0","id":9,"method":"ping"}']
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "XDG_STATE_HOME")},
           "FLUX_KLEIN_PROVIDER": "sandbox"}
    # stdin stays open until the five answers are in: at end of input the SDK cancels what is still in flight.
    proc = subprocess.Popen([COMMAND], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=workdir, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    guard = threading.Timer(30, proc.kill)  # a server that never answers fails the test instead of hanging it
    guard.start()
    try:
        read = [proc.stdout.readline() for _ in range(5)]
    finally:
        guard.cancel()
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0 and proc.stdout.read() == ""  # nothing more: no answer to a notification
    answers = {json.dumps(a.get("id")): a for a in map(json.loads, read)}
    assert set(answers) == {"1", "7", "null", '"eight"', "9"}, read
    assert answers["7"]["error"]["code"] == -32700 and "unpaired UTF-16 surrogate" in answers["7"]["error"]["message"]
    assert answers["null"]["error"]["code"] == -32700
    assert answers['"eight"']["error"]["code"] == -32600
    assert answers["9"]["result"] == {} and output_files(workdir) == []
