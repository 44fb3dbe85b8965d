"""SIGTERM is a cancellation: the calls in flight roll back what they saved and the process exits promptly, over
stdio (clients send it when their shutdown grace runs out) and from the CLI. What a kill -9 leaves is swept at
the next start (see test_store.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import eventually, output_files, provider_env
from tests.fakes.core import Fault, Loopback
from tests.fakes.openrouter import FakeOpenRouter
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")]


def children_running(marker: str) -> list[int]:
    """Pids of this process's children whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and marker in cmdline:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "Z"  # exited, not yet reaped


@pytest.fixture
def half_done():
    """A provider that answers the first image at once and holds the second until the client goes away."""
    fake = FakeOpenRouter()
    fake.then(fake.respond, Fault.HANG)
    server = Loopback(fake)
    yield fake, server
    server.close()


async def test_sigterm_over_stdio_rolls_back_the_call_in_flight_and_exits_promptly(workdir, half_done):
    fake, server = half_done
    first_saved = anyio.Event()
    env = {**BASE_ENV, **provider_env(fake, server.url)}

    async def progress(done, total, message):
        if done >= 1:
            first_saved.set()

    async with Client(StdioServerParameters(command=COMMAND, args=[], env=env, cwd=workdir)) as client:
        [pid] = children_running(COMMAND)

        async def call() -> None:
            try:
                await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}, progress_callback=progress)
            except Exception:  # the server went away mid-call, as it should
                pass

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            with anyio.fail_after(20):
                await first_saved.wait()
            assert [p.suffix for p in output_files(workdir)].count(".png") == 1  # saved, not yet delivered
            sent = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            await eventually(lambda: gone(pid), timeout=10)
            took = time.monotonic() - sent
            group.cancel_scope.cancel()
    assert took < 5, f"exit took {took:.1f} s"
    assert output_files(workdir) == []  # the image, its sidecar and every temporary file are gone


async def test_sigterm_with_no_call_in_flight_exits_at_once(workdir):
    env = {**BASE_ENV, "FLUX_KLEIN_PROVIDER": "sandbox"}
    async with Client(StdioServerParameters(command=COMMAND, args=[], env=env, cwd=workdir)) as client:
        await client.list_tools()
        [pid] = children_running(COMMAND)
        os.kill(pid, signal.SIGTERM)
        await eventually(lambda: gone(pid), timeout=5)


def test_sigterm_stops_a_cli_run_and_keeps_nothing(workdir, half_done):
    fake, server = half_done
    proc = subprocess.Popen([COMMAND, "generate", "a fox", "-n", "2"], cwd=workdir, stdin=subprocess.DEVNULL,
                            env={**BASE_ENV, **provider_env(fake, server.url)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        anyio.run(eventually, lambda: any(p.suffix == ".png" for p in output_files(workdir)), 20.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and out == ""
    assert "stopped by SIGTERM" in err
    assert output_files(workdir) == []
