"""Load: 16 concurrent calls of n=4 against a loopback fake. All succeed, 64 distinct files, the provider
requests overlap rather than queue, memory stays bounded, and no socket or file handle is left open."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import anyio
import pytest

from tests.conftest import eventually, output_files, summary
from tests.fakes.openrouter import FakeOpenRouter, check_payload

pytestmark = pytest.mark.anyio

CALLS, N = 16, 4
LINUX = sys.platform.startswith("linux")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576


class PeakRss:
    """Samples the resident set size in a thread until stopped."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.skipif(not LINUX, reason="reads /proc")
async def test_sixteen_concurrent_calls_of_four_images(connect, fake: FakeOpenRouter, workdir: Path):
    all_in_flight = threading.Barrier(CALLS * N, timeout=30)
    # One answer rendered up front, so the memory measured is the server's, not the in-process fake's.
    answer = fake.success({"model": "black-forest-labs/flux.2-klein-4b",
                           "messages": [{"role": "user", "content": "a lighthouse"}]})

    def answer_once_all_are_in_flight(incoming):
        assert check_payload(incoming.json) is None  # still as strict about the payload
        all_in_flight.wait()  # returns only when all 64 provider requests are open at the same time
        return answer

    fake.then(*[answer_once_all_are_in_flight] * (CALLS * N))
    fds_before = open_fds()
    baseline = rss_mb()
    results = []

    async def one(i: int) -> None:
        results.append(await client.call_tool("generate_image", {"prompt": "a lighthouse", "n": N, "seed": i * 10}))

    with PeakRss() as memory:
        async with connect(loopback=True) as client:
            async with anyio.create_task_group() as group:
                for i in range(CALLS):
                    group.start_soon(one, i)
            fds_during = open_fds()
    # The loopback fake's thread closes its ends of the sockets a moment after the client's: wait for it.
    await eventually(lambda: open_fds() - fds_before <= 2)
    fds_after = open_fds()

    images = [image for result in results for image in summary(result)["images"]]
    paths = {image["path"] for image in images}
    assert len(results) == CALLS and len(images) == CALLS * N and len(paths) == CALLS * N
    assert len([p for p in output_files(workdir) if p.suffix == ".png"]) == CALLS * N
    assert not [p for p in output_files(workdir) if p.name.startswith(".tmp-")]
    assert len(fake.completions) == CALLS * N
    # Connections are pooled (at most 20 kept alive) while the server runs, all closed after. The fake runs in
    # this process too, so each pooled connection counts twice: its client and its server end.
    assert fds_during - fds_before <= 2 * 20 + 4
    assert fds_after - fds_before <= 2
    assert memory.peak - baseline < 100, f"RSS grew by {memory.peak - baseline:.0f} MB (about 35 expected)"


async def test_large_replies_are_admitted_into_memory_a_bounded_number_at_a_time():
    """When many large answers arrive together, those past the bound wait (in the socket) before their bodies
    are read; small ones (job polls, errors) never wait."""
    from flux_klein_mcp.providers.base import Gate

    limiter = anyio.CapacityLimiter(2)
    first, second, third = Gate(limiter), Gate(limiter), Gate(limiter)
    await first.enter(None)
    await second.enter(10_000_000)
    await Gate(limiter).enter(100)  # small: admitted at once, holds nothing
    entered = anyio.Event()

    async def enter_third() -> None:
        await third.enter(None)
        entered.set()

    async with anyio.create_task_group() as group:
        group.start_soon(enter_third)
        await anyio.wait_all_tasks_blocked()
        assert not entered.is_set() and limiter.borrowed_tokens == 2
        first.leave()
        await entered.wait()
    second.leave()
    third.leave()
    third.leave()  # leaving twice is harmless
    assert limiter.borrowed_tokens == 0
