"""Measuring an MCP server over stdio with the official SDK client, and a process's wall time and peak memory.

The same functions measure the server and its floors, so the two sides of every ratio are taken the same way.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.types import CallToolResult, ImageContent, TextContent
from PIL import Image

#: Claude's vision cost of an image (MCP-NOTES.md): about width x height / 750 tokens.
PIXELS_PER_TOKEN = 750
#: Result sizes count the output folder's path as this, so they do not vary with where the temp folder is.
OUTPUT_PLACEHOLDER = "/OUT"


class BenchError(Exception):
    """A measurement could not be taken (a tool error, a failed process); the message says which and why."""


@dataclass
class Session:
    client: Client
    pid: int
    cold_start_s: float


@asynccontextmanager
async def serve_stdio(command: str, args: Sequence[str], env: Mapping[str, str], cwd: Path, errlog: TextIO,
                      marker: str) -> AsyncIterator[Session]:
    """Spawn an MCP server and connect; `cold_start_s` is spawn -> initialize -> `tools/list` answered."""
    params = StdioServerParameters(command=command, args=list(args), env=dict(env), cwd=cwd)
    start = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog)) as client:
        with anyio.fail_after(60):
            listed = await client.list_tools()
        cold = time.perf_counter() - start
        if not listed.tools:
            raise BenchError(f"{command} listed no tools")
        yield Session(client, newest_child(marker), cold)


async def timed_call(client: Client, tool: str, arguments: dict[str, Any], timeout_s: float = 120
                     ) -> tuple[float, CallToolResult]:
    """Wall seconds of one `tools/call` as the client sees it; a tool error raises `BenchError`."""
    start = time.perf_counter()
    with anyio.fail_after(timeout_s):
        result = await client.call_tool(tool, arguments)
    wall = time.perf_counter() - start
    if result.is_error:
        text = " ".join(b.text for b in result.content if isinstance(b, TextContent))
        raise BenchError(f"{tool} failed: {text[:400]}")
    return wall, result


def result_bytes(result: CallToolResult, output_dir: Path) -> int:
    """What the model's context receives: the JSON of every content block, output folder paths normalised."""
    total = 0
    for block in result.content:
        text = block.model_dump_json(by_alias=True, exclude_none=True).replace(str(output_dir), OUTPUT_PLACEHOLDER)
        total += len(text.encode())
    return total


def vision_tokens(result: CallToolResult) -> float:
    """The thumbnails' vision cost: width x height / 750 for each image block."""
    tokens = 0.0
    for block in result.content:
        if isinstance(block, ImageContent):
            with Image.open(io.BytesIO(base64.b64decode(block.data))) as image:
                tokens += image.width * image.height / PIXELS_PER_TOKEN
    return tokens


def process_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment every measured process gets: what the SDK lets a stdio server inherit, plus `extra`."""
    return get_default_environment() | dict(extra)


def timed_run(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> float:
    """Wall seconds of a whole process, spawn to exit; a non-zero exit raises `BenchError`."""
    start = time.perf_counter()
    done = subprocess.run(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=120, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv[:3])} exited {done.returncode}: {done.stderr.decode()[-400:]}")
    return wall


def newest_child(marker: str) -> int:
    """The pid of this process's newest live child with an argument named `marker` (a path's last part), such as
    `.venv/bin/flux-klein-mcp` (a console script runs as `python .../flux-klein-mcp`). Matching whole names, not
    substrings, keeps a checkout folder called flux-klein-mcp from matching the fakes started from it."""
    me = os.getpid()
    found: list[tuple[int, int]] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            argv = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ..., starttime is the 20th
        if int(fields[1]) == me and fields[0] != "Z" and any(Path(arg).name == marker for arg in argv):
            found.append((int(fields[19]), int(entry.name)))
    if not found:
        raise BenchError(f"no child process of {me} has an argument named {marker!r}")
    return max(found)[1]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM")
