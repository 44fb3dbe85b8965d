"""The HTTP layer every provider shares: replies are read with a size cap and a total time limit."""

from __future__ import annotations

import anyio
import httpx
import pytest

from flux_klein_mcp.errors import BadReply, ConnectionFailed
from flux_klein_mcp.providers import http as wire

pytestmark = pytest.mark.anyio


async def test_a_reply_over_the_size_cap_is_not_read_further():
    sent = []

    async def handler(request: httpx.Request) -> httpx.Response:
        async def body():
            for _ in range(100):
                sent.append(1)
                yield b"x" * 1024

        return httpx.Response(200, content=body())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(BadReply, match="larger than"):
            await wire.send(http, "GET", "https://p.test/x", provider="P", timeout_s=5, max_bytes=10 * 1024)
    assert len(sent) < 100


async def test_a_provider_that_trickles_bytes_is_cut_off_at_the_total_time_limit():
    async def handler(request: httpx.Request) -> httpx.Response:
        async def body():
            while True:
                yield b"{"
                await anyio.sleep(0.05)  # each chunk arrives well within any read timeout

        return httpx.Response(200, content=body())

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(ConnectionFailed, match=r"did not answer within 0.3 s \(FLUX_KLEIN_TIMEOUT_S\)"):
            await wire.send(http, "GET", "https://p.test/x", provider="P", timeout_s=0.3)


@pytest.mark.parametrize(
    ("headers", "metadata", "expected"),
    [({"Retry-After": "12"}, None, 12.0), ({"Retry-After": "0"}, None, 0.0), ({}, {"retry_after_seconds": 5}, 5.0),
     ({}, None, None), ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, 0.0)],
)
def test_retry_after(headers, metadata, expected):
    reply = wire.HttpReply(429, httpx.Headers(headers), b"")
    info = wire.ErrorInfo("slow down", metadata=metadata)
    assert wire.retry_after_seconds(reply, info) == expected
