"""Fault injection on real sockets: every provider fault × every tool ends in an error result with the right
message, exactly the requests the policy allows, no file, no key, and a server that keeps answering.
A client's cancellation aborts the provider requests and leaves no file."""

from __future__ import annotations

import base64
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import error_text, eventually, output_files, summary
from tests.fakes.core import Answer, Fault
from tests.fakes.images_api import AIGATEWAY, FakeImagesAPI, oai_error
from tests.fakes.openrouter import TEST_KEY, error, success_with

pytestmark = pytest.mark.anyio


def _set(path: str, value: Any):
    def mutate(body):
        target = body["choices"][0]
        *parents, last = path.split(".")
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


@dataclass(frozen=True)
class Case:
    id: str
    script: tuple[Any, ...]
    phrase: str
    requests: int


BAD_B64 = {"role": "assistant", "content": "", "images": [{"type": "image_url",
                                                            "image_url": {"url": "data:image/png;base64,%%%"}}]}
NOT_IMAGE = {"role": "assistant", "content": "", "images": [{"type": "image_url", "image_url": {
    "url": "data:image/png;base64," + base64.b64encode(b"<svg>not a raster</svg>").decode()}}]}

OPENROUTER_FAULTS = [
    Case("400", (error(400, "Invalid model parameters"),), "rejected the request", 1),
    Case("401", (error(401, "User not found."),), "OPENROUTER_API_KEY", 1),
    Case("402", (error(402, "Insufficient credits"),), "https://openrouter.ai/settings/credits", 1),
    Case("403", (error(403, "flagged", metadata={"reasons": ["violence"]}),), "Reasons: violence", 1),
    Case("404", (error(404, "No endpoints found"),), "No endpoints found", 1),
    Case("408", (error(408, "Request timed out"),), "timed out", 1),
    Case("429x2", (error(429, "slow down", headers={"Retry-After": "0"}),) * 2, "failed again after one retry", 2),
    Case("500", (error(500, "Internal Server Error"),), "HTTP 500", 1),
    Case("502x2", (error(502, "Provider returned error"), error(502, "Provider returned error")), "Blocked", 2),
    Case("503", (error(503, "No allowed providers are available"),), "no provider available", 1),
    Case("200-error", (success_with(_set("finish_reason", "error")),), "reported an error", 1),
    Case("200-text-only", (success_with(_set("message", {"role": "assistant", "content": "Sorry."})),),
         "without an image", 1),
    Case("html", (Answer(200, b"<!DOCTYPE html><title>Maintenance</title>", {"Content-Type": "text/html"}),),
         "HTML page", 1),
    Case("bad-base64", (success_with(_set("message", BAD_B64)),), "not valid base64", 1),
    Case("not-an-image", (success_with(_set("message", NOT_IMAGE)),), "not a usable image", 1),
    Case("truncated", (Fault.TRUNCATE,), "broke before its answer was complete", 1),
    Case("reset", (Fault.RESET,), "broke before its answer was complete", 1),
    Case("hang", (Fault.HANG,), "did not answer within 1.5 s", 1),
]


def _arguments(tool: str, workdir: Path) -> dict[str, Any]:
    from tests.fakes.core import png

    (workdir / "in.png").write_bytes(png(12, 12))
    return {
        "generate_image": {"prompt": "a lighthouse at dusk"},
        "edit_image": {"prompt": "a lighthouse at dusk", "image": "in.png"},
        "compose_images": {"prompt": "a lighthouse at dusk", "images": ["in.png", "in.png"]},
    }[tool]


TOOLS = ["generate_image", "edit_image", "compose_images"]


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("case", OPENROUTER_FAULTS, ids=lambda c: c.id)
async def test_openrouter_fault_by_tool(connect, fake, workdir, tool, case):
    arguments = _arguments(tool, workdir)
    fake.then(*case.script)
    async with connect(loopback=True, FLUX_KLEIN_TIMEOUT_S="1.5") as client:
        result = await client.call_tool(tool, arguments)
        assert result.is_error, case.id
        text = error_text(result)
        assert case.phrase in text
        assert TEST_KEY not in text
        assert len(fake.completions) == case.requests
        assert output_files(workdir) == []
        if case.id == "hang":
            assert fake.disconnected.wait(5), "the hung request was not abandoned"
        # the server keeps answering
        assert summary(await client.call_tool(tool, arguments))["images"]


async def test_connection_refused_is_an_error_and_the_server_keeps_answering(connect, fake, workdir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    async with connect(loopback=True, OPENROUTER_BASE_URL=f"http://127.0.0.1:{port}/api/v1") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
        assert "Could not connect to OpenRouter at 127.0.0.1" in error_text(result)
        result = await client.call_tool("generate_image", {"prompt": "a fox", "provider": "sandbox"})
        assert not result.is_error
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 1


GATEWAY_FAULTS = [
    Case("404-model", (oai_error(404, "The model does not exist", code="model_not_found"),), "does not know", 1),
    Case("500x2", (oai_error(500, "upstream"), oai_error(500, "upstream")), "failed again after one retry", 2),
    Case("502", (oai_error(502, "bad gateway"),), "HTTP 502", 1),
    Case("503x2", (oai_error(503, "busy"), oai_error(503, "busy")), "failed again after one retry", 2),
    Case("504", (oai_error(504, "timeout"),), "HTTP 504", 1),
    Case("200-no-data", (Answer.json(200, {"created": 1, "data": []}),), "without any images", 1),
    Case("200-bad-item", (Answer.json(200, {"created": 1, "data": [{"oops": 1}]}),), "neither b64_json nor url", 1),
    Case("html", (Answer(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}),), "Bad Gateway", 1),
    Case("reset", (Fault.RESET,), "broke before", 1),
    Case("hang", (Fault.HANG,), "did not answer within 1.5 s", 1),
]


@pytest.mark.parametrize("case", GATEWAY_FAULTS, ids=lambda c: c.id)
async def test_gateway_fault(connect, workdir, case):
    fake = FakeImagesAPI(AIGATEWAY).then(*case.script)
    async with connect(fake, loopback=True, FLUX_KLEIN_TIMEOUT_S="1.5") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
        assert result.is_error and case.phrase in error_text(result)
        assert AIGATEWAY.key not in error_text(result)
        assert len(fake.generations) == case.requests and output_files(workdir) == []
        assert summary(await client.call_tool("generate_image", {"prompt": "a fox"}))["images"]


# --- cancellation --------------------------------------------------------------------------------------------

async def _cancel_when(event: threading.Event, scope: anyio.CancelScope) -> None:
    await anyio.to_thread.run_sync(event.wait, 10)
    scope.cancel()


async def test_cancelling_a_call_aborts_the_provider_request_and_saves_nothing(connect, fake, workdir):
    fake.then(Fault.HANG)
    async with connect(loopback=True) as client:
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(_cancel_when, fake.arrived, scope)
                await client.call_tool("generate_image", {"prompt": "a fox"})
            assert scope.cancelled_caught
        assert fake.disconnected.wait(5), "the provider request was not aborted"
        # the same session still works
        assert summary(await client.call_tool("generate_image", {"prompt": "a fox", "provider": "sandbox"}))
    assert len(fake.completions) == 1
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == 1  # only the sandbox image


async def test_cancelling_after_one_of_two_images_was_saved_removes_it(connect, fake, workdir):
    first_saved = threading.Event()

    async def progress(done, total, message):
        if done >= 1:
            first_saved.set()

    fake.then(fake.respond, Fault.HANG)
    async with connect(loopback=True) as client:
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(_cancel_when, first_saved, scope)
                await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}, progress_callback=progress)
        assert fake.disconnected.wait(5)
        await eventually(lambda: output_files(workdir) == [])  # the rollback runs as the cancellation unwinds


# --- the same guarantees over the real transports ----------------------------------------------------------

TRANSPORT_SAMPLE = [case for case in OPENROUTER_FAULTS if case.id in ("402", "403", "429x2", "502x2", "html", "reset",
                                                                       "truncated", "hang", "bad-base64")]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_faults_over_stdio_and_http(transport, fake, loopback, workdir):
    from tests.test_e2e_stdio import stdio
    from tests.test_http import client as http_client
    from tests.test_http import http_server

    env = {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{loopback.url}/api/v1",
           "FLUX_KLEIN_TIMEOUT_S": "1.5"}
    if transport == "http":  # over HTTP the working directory is not readable: name the folder
        env["FLUX_KLEIN_INPUT_DIRS"] = str(workdir)
    arguments = _arguments("edit_image", workdir)

    async def exercise(session) -> None:
        for case in TRANSPORT_SAMPLE:
            before = len(fake.completions)
            fake.then(*case.script)
            result = await session.call_tool("edit_image", arguments)
            assert result.is_error and case.phrase in error_text(result), case.id
            assert TEST_KEY not in error_text(result)
            assert len(fake.completions) - before == case.requests, case.id
            assert output_files(workdir) == [], case.id
        bad = await session.call_tool("edit_image", {"prompt": "x", "image": "/etc/passwd"})
        assert bad.is_error and "outside the folders" in error_text(bad)
        assert summary(await session.call_tool("edit_image", arguments))["images"]  # still answering

    if transport == "stdio":
        async with stdio(env, workdir) as session:
            await exercise(session)
    else:
        with http_server(workdir, **env) as url:
            async with http_client(url) as session:
                await exercise(session)
    expected = sum(case.requests for case in TRANSPORT_SAMPLE) + 1
    assert len(fake.completions) == expected


async def test_cancelling_while_the_result_is_being_built_removes_the_saved_files(connect, fake, workdir):
    """All four images are saved; the cancel lands while the (deliberately slow) thumbnails are made."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((1536, 1536), 120).convert("RGB").save(buffer, "PNG")  # slow to thumbnail
    noisy = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    fake.then(*[success_with(_set("message.images", [{"type": "image_url", "image_url": {"url": noisy}}]))] * 4)
    all_saved = anyio.Event()

    async def progress(done, total, message):
        if done == 4:
            all_saved.set()

    async def cancel_once_all_are_saved(scope: anyio.CancelScope) -> None:
        await all_saved.wait()
        # No event marks "thumbnails under way"; they take over a second here, so 0.3 s lands inside them
        # (a cancel right at the last save is caught by the batch itself, tested above).
        await anyio.sleep(0.3)
        scope.cancel()

    async with connect(loopback=True, FLUX_KLEIN_THUMBNAIL_PX="1536") as client:
        async with anyio.create_task_group() as group:
            with anyio.CancelScope() as scope:
                group.start_soon(cancel_once_all_are_saved, scope)
                await client.call_tool("generate_image", {"prompt": "static", "n": 4}, progress_callback=progress)
            assert scope.cancelled_caught
        await eventually(lambda: output_files(workdir) == [])
    assert len(fake.completions) == 4
