"""One benchmark round: every figure once, each server measurement side by side with its floor's.

Machines are shared and noisy, so a figure is only ever a ratio to a floor measured moments apart in the same
run; within a round the order of server and floor flips every other round so a drift in load favours neither.
A section that fails records why and the round goes on: the benchmark reports whatever server is installed.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import TextIO

import anyio
import httpx

from .fake_provider import BENCH_KEY, IMAGES_MODEL, LARGE
from .floor_async import concurrent_wall, new_client
from .floor_oneshot import fetch_one
from .measure import (
    Session,
    peak_rss_mb,
    process_env,
    result_bytes,
    serve_stdio,
    timed_call,
    timed_run,
    vision_tokens,
)

HERE = Path(__file__).resolve().parent
PROMPT = "a fox"
#: A call whose reply is a JPEG: the OpenAI-style endpoint (the fake's images API), asked for one.
JPEG = {"prompt": PROMPT, "provider": "openai-compatible", "output_format": "jpeg"}
CONCURRENT_CALLS, IMAGES_PER_CALL = 16, 4
SERVER_MARKER = "flux-klein-mcp"
FLOOR_SERVER = HERE / "floor_mcp_server.py"
FLOOR_ONESHOT = HERE / "floor_oneshot.py"
LEDGER_TIMING = HERE / "ledger_timing.py"
LEDGER_ROWS, LEDGER_CALLS = 200_000, 20

@dataclass
class Setup:
    """What every round needs: the commands, the two fakes, a scratch folder and how many samples to take."""

    server: str  # the flux-klein-mcp executable under test
    python: str  # the interpreter for the floors (the server's own, so both start the same Python)
    fast_url: str  # fake with no latency
    slow_url: str  # fake with 1 s latency
    work: Path
    errlog: TextIO  # every spawned MCP server's stderr
    warm_calls: int = 3  # untimed calls before timing a warm call
    timed_calls: int = 5  # timed warm calls per round (each paired with a floor call)
    cli_runs: int = 1  # runs of each CLI command per round
    cold_pairs: int = 2  # cold starts of the server (and of the floor) per round
    warm_up: bool = True  # one untimed run of each command first, so round 1 does not pay for a cold page cache
    _folders: count[int] = field(default_factory=count)

    def folder(self) -> Path:
        """A fresh output folder (and ledger beside it) for one process."""
        path = self.work / f"p{next(self._folders)}"
        path.mkdir(parents=True)
        return path

    def env(self, folder: Path, base_url: str | None, prefix: str = "") -> dict[str, str]:
        """A process's environment: its own output folder and ledger, and with `base_url` the fake as OpenRouter
        (its 2048x2048 picture with `prefix` LARGE) and as an OpenAI-compatible endpoint (the JPEG replies)."""
        extra = {"FLUX_KLEIN_LEDGER": str(folder / "ledger.sqlite3"), "FLUX_KLEIN_OUTPUT_DIR": str(folder / "output")}
        if base_url is not None:
            extra |= {"OPENROUTER_API_KEY": BENCH_KEY, "OPENROUTER_BASE_URL": f"{base_url}{prefix}/api/v1",
                      "FLUX_KLEIN_API_KEY": BENCH_KEY, "FLUX_KLEIN_BASE_URL": f"{base_url}/v1",
                      "FLUX_KLEIN_MODEL": IMAGES_MODEL}
        return process_env(extra)


@dataclass
class Samples:
    values: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    #: The same samples, round by round (for each figure's spread over the run).
    rounds: list[defaultdict[str, list[float]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)  # in the JSON only

    def next_round(self) -> None:
        self.rounds.append(defaultdict(list))

    def add(self, key: str, value: float) -> None:
        self.values[key].append(value)
        if self.rounds:
            self.rounds[-1][key].append(value)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_rounds(setup: Setup, rounds: int) -> Samples:
    samples = Samples()
    if setup.warm_up:
        progress("warming the page cache: one untimed run of each command")
        _warm_up(setup)
    for index in range(rounds):
        flip = index % 2 == 1
        samples.next_round()
        timings = []
        for name, section in (("cold start + warm calls", cold_and_warm), ("1 s latency", at_one_second),
                              ("command line", command_line), ("ledger", ledger_calls)):
            started = time.perf_counter()
            await _section(samples, name, section, setup, flip)
            timings.append(f"{name} {time.perf_counter() - started:.1f} s")
        progress(f"round {index + 1}/{rounds}: {', '.join(timings)}")
    return samples


async def _section(samples: Samples, name: str, section: Callable[[Setup, Samples, bool], Awaitable[None]],
                   setup: Setup, flip: bool) -> None:
    try:
        await section(setup, samples, flip)
    except Exception as exc:  # a broken server must not stop the report
        while isinstance(exc, ExceptionGroup) and exc.exceptions:  # say what failed, not "errors in a TaskGroup"
            exc = exc.exceptions[0]
        message = f"{name}: {type(exc).__name__}: {exc}"
        samples.errors.append(message)
        progress(f"  FAILED {message}")
        samples.tracebacks.append(traceback.format_exc())


def _warm_up(setup: Setup) -> None:
    folder = setup.folder()
    for argv in _cli_commands(setup, folder).values():
        try:
            timed_run(argv, setup.env(folder, None), folder)
        except Exception as exc:  # measured (and reported) again in the rounds
            progress(f"  warm-up: {exc}")


async def cold_and_warm(setup: Setup, samples: Samples, flip: bool) -> None:
    """Cold starts of the server and of the one-tool floor; warm calls paired with the floors' (plain httpx, and
    the context floor: httpx + decode + thumbnail), for the 1024x1024 PNG, a JPEG reply and a 2048x2048 PNG."""
    if not flip:
        await floor_cold_start(setup, samples)
    folder = setup.folder()
    async with _server(setup, folder, setup.fast_url) as session, \
            _server(setup, setup.folder(), setup.fast_url, LARGE) as large:
        samples.add("cold.server", session.cold_start_s)
        # The first call in a fresh folder: its size does not depend on how many calls came before.
        _, first = await timed_call(session.client, "generate_image", {"prompt": PROMPT})
        samples.add("result.bytes", result_bytes(first, folder / "output"))
        samples.add("result.tokens", vision_tokens(first))
        kinds = [("", session, {"prompt": PROMPT}, None, ""), ("jpeg.", session, JPEG, "jpeg", ""),
                 ("large.", large, {"prompt": PROMPT}, None, LARGE)]
        for _ in range(setup.warm_calls):
            for _, server, arguments, _, _ in kinds:
                await timed_call(server.client, "generate_image", arguments)
        with httpx.Client(timeout=60) as http:
            for i in range(setup.warm_calls):
                for _, _, _, fmt, prefix in kinds:
                    fetch_one(http, f"{setup.fast_url}{prefix}/api/v1" if fmt is None else f"{setup.fast_url}/v1",
                              BENCH_KEY, folder / f"floor-warm-{i}.img", True, fmt)
            for i in range(setup.timed_calls):
                for key, server, arguments, fmt, prefix in kinds:
                    base = f"{setup.fast_url}{prefix}/api/v1" if fmt is None else f"{setup.fast_url}/v1"
                    if flip:
                        _floor_calls(samples, http, base, folder / str(i), key, fmt)
                    wall, _ = await timed_call(server.client, "generate_image", arguments)
                    samples.add(f"warm.{key}server", wall)
                    if not flip:
                        _floor_calls(samples, http, base, folder / str(i), key, fmt)
    if flip:
        await floor_cold_start(setup, samples)
    for pair in range(1, setup.cold_pairs):  # more cold starts: the noisiest figure gets the most samples
        first_floor = (pair + flip) % 2 == 0
        if first_floor:
            await floor_cold_start(setup, samples)
        async with _server(setup, setup.folder(), setup.fast_url) as session:
            samples.add("cold.server", session.cold_start_s)
        if not first_floor:
            await floor_cold_start(setup, samples)
    shutil.rmtree(folder, ignore_errors=True)


def _floor_calls(samples: Samples, http: httpx.Client, base: str, stem: Path, key: str, fmt: str | None) -> None:
    """The floors of one warm call: the context floor, and for the 1024x1024 PNG the plain floor too."""
    if not key:
        samples.add("warm.floor", _timed_floor_call(http, base, stem.with_suffix(".plain")))
    samples.add(f"warm.{key}thumb", _timed_floor_call(http, base, stem.with_suffix(".thumb"), True, fmt))


def _timed_floor_call(http: httpx.Client, base: str, path: Path, thumbnail: bool = False,
                      output_format: str | None = None) -> float:
    start = time.perf_counter()
    fetch_one(http, base, BENCH_KEY, path, thumbnail, output_format)
    return time.perf_counter() - start


async def floor_cold_start(setup: Setup, samples: Samples) -> None:
    folder = setup.folder()
    async with serve_stdio(setup.python, [str(FLOOR_SERVER)], setup.env(folder, None), folder, setup.errlog,
                           FLOOR_SERVER.name) as session:
        samples.add("cold.floor", session.cold_start_s)
        samples.add("rss.floor", peak_rss_mb(session.pid))


async def at_one_second(setup: Setup, samples: Samples, flip: bool) -> None:
    """n=1 and n=4 walls, then 16 concurrent n=4 calls beside the async floor's, for PNG replies (OpenRouter: 64
    requests / 1) and JPEG replies (the images API: 16 requests of 4 / 1); the peak RSS after both."""
    folder = setup.folder()
    base, images = f"{setup.slow_url}/api/v1", f"{setup.slow_url}/v1"
    async with _server(setup, folder, setup.slow_url) as session, new_client() as http:
        await timed_call(session.client, "generate_image", {"prompt": PROMPT})  # warm-up, untimed
        await timed_call(session.client, "generate_image", JPEG)
        await concurrent_wall(http, base, BENCH_KEY, folder, 1)  # the floor's connection, untimed
        walls: dict[int, float] = {}
        for n in ((4, 1) if flip else (1, 4)):
            walls[n], _ = await timed_call(session.client, "generate_image", {"prompt": PROMPT, "n": n})
        samples.add("n1.server", walls[1])
        samples.add("n4.server", walls[4])
        jpeg_one, _ = await timed_call(session.client, "generate_image", {**JPEG, "n": IMAGES_PER_CALL})
        floor_one = await concurrent_wall(http, base, BENCH_KEY, folder, 1)
        floor_jpeg_one = await concurrent_wall(http, images, BENCH_KEY, folder, 1, "jpeg", IMAGES_PER_CALL)

        async def floor_load() -> None:
            await _fake_stats(http, setup.slow_url)
            wall = await concurrent_wall(http, base, BENCH_KEY, folder, CONCURRENT_CALLS * IMAGES_PER_CALL)
            samples.add("conc.floor", wall / floor_one)
            samples.add("inflight.floor", (await _fake_stats(http, setup.slow_url))["peak_in_flight"])
            wall = await concurrent_wall(http, images, BENCH_KEY, folder, CONCURRENT_CALLS, "jpeg", IMAGES_PER_CALL)
            samples.add("concjpeg.floor", wall / floor_jpeg_one)

        async def server_load() -> None:
            await _fake_stats(http, setup.slow_url)
            wall = await _concurrent_calls(session, {"prompt": PROMPT, "n": IMAGES_PER_CALL})
            samples.add("inflight.server", (await _fake_stats(http, setup.slow_url))["peak_in_flight"])
            samples.add("conc.server", wall / walls[4])
            wall = await _concurrent_calls(session, {**JPEG, "n": IMAGES_PER_CALL})
            samples.add("concjpeg.server", wall / jpeg_one)
            samples.add("rss.server", peak_rss_mb(session.pid))

        for load in ((floor_load, server_load) if flip else (server_load, floor_load)):
            await load()
    shutil.rmtree(folder, ignore_errors=True)


async def _concurrent_calls(session: Session, arguments: dict[str, object]) -> float:
    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(CONCURRENT_CALLS):
            group.start_soon(timed_call, session.client, "generate_image", arguments)
    return time.perf_counter() - start


async def _fake_stats(http: httpx.AsyncClient, fake_url: str) -> dict[str, int]:
    """Read (and reset) a fake's counters: how many completions it has answered, the most open at once."""
    reply = await http.get(f"{fake_url}/bench/stats")
    return dict(json.loads(reply.content))


async def command_line(setup: Setup, samples: Samples, flip: bool) -> None:
    """`--help` and a sandbox `generate`, each a whole process, beside the one-shot httpx script."""
    folder = setup.folder()
    commands = list(_cli_commands(setup, folder).items())
    env = setup.env(folder, None)
    for run in range(setup.cli_runs):
        shift = (run + flip) % len(commands)  # rotate who goes first
        for key, argv in commands[shift:] + commands[:shift]:
            samples.add(key, timed_run(argv, env, folder))
    shutil.rmtree(folder, ignore_errors=True)


async def ledger_calls(setup: Setup, samples: Samples, flip: bool) -> None:
    """Reserve + settle on a ledger of LEDGER_ROWS charges and on an empty one, in the server's own Python."""
    python = Path(setup.server).parent / "python"
    folder = setup.work / "ledger"
    folder.mkdir(exist_ok=True)
    done = await anyio.run_process([str(python if python.exists() else setup.python), str(LEDGER_TIMING),
                                    str(folder), str(LEDGER_ROWS), str(LEDGER_CALLS)], check=False)
    if done.returncode:
        raise RuntimeError(done.stderr.decode(errors="replace").strip().splitlines()[-1])
    found = json.loads(done.stdout)
    for key in ("full", "empty"):
        for seconds in found[key]:
            samples.add(f"ledger.{key}", seconds)


def _cli_commands(setup: Setup, folder: Path) -> dict[str, list[str]]:
    return {
        "cli.floor": [setup.python, str(FLOOR_ONESHOT), f"{setup.fast_url}/api/v1", BENCH_KEY, str(folder)],
        "cli.help": [setup.server, "--help"],
        "cli.sandbox": [setup.server, "generate", PROMPT, "--provider", "sandbox", "--output-dir",
                        str(folder / "sandbox")],
    }


def _server(setup: Setup, folder: Path, base_url: str, prefix: str = "") -> AbstractAsyncContextManager[Session]:
    return serve_stdio(setup.server, [], setup.env(folder, base_url, prefix), folder, setup.errlog, SERVER_MARKER)
