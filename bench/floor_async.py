"""The concurrency floor: N requests at once through one `httpx.AsyncClient`, each parsed, decoded and saved.

What one async script with no MCP, no thumbnails and no bookkeeping pays for N concurrent requests; the benchmark
compares the server's (16 calls of n=4 / one call) with this script's: 64 requests / one request on OpenRouter
(one image a request), 16 requests of 4 images / one on the images API (the JPEG replies).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import anyio
import httpx

from bench.floor_oneshot import PAYLOAD, images_payload


async def _one(client: httpx.AsyncClient, base_url: str, key: str, path: Path, output_format: str | None,
               n: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    if output_format is None:
        reply = await client.post(f"{base_url}/chat/completions", json=PAYLOAD, headers=headers)
        reply.raise_for_status()
        url = reply.json()["choices"][0]["message"]["images"][0]["image_url"]["url"]
        path.write_bytes(base64.b64decode(url.split(",", 1)[1]))
        return
    reply = await client.post(f"{base_url}/images/generations", json=images_payload(output_format, n),
                              headers=headers)
    reply.raise_for_status()
    for i, item in enumerate(reply.json()["data"]):
        path.with_name(f"{path.stem}-{i}.{output_format}").write_bytes(base64.b64decode(item["b64_json"]))


async def concurrent_wall(client: httpx.AsyncClient, base_url: str, key: str, folder: Path, requests: int,
                          output_format: str | None = None, n: int = 1) -> float:
    """Seconds from the first request sent to the last image saved, for `requests` concurrent requests (of `n`
    images each on the images API, which then answers in `output_format`)."""
    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for i in range(requests):
            group.start_soon(_one, client, base_url, key, folder / f"async-{i}.png", output_format, n)
    return time.perf_counter() - start


def new_client() -> httpx.AsyncClient:
    # The server's own pool limits (runtime.py), so neither side queues on connections.
    return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
