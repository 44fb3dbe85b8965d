"""`python -m bench`: start the loopback fakes, run the rounds, print the table (and write it as JSON)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio

from . import report
from .rounds import Samples, Setup, progress, run_rounds

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the installed flux-klein-mcp "
                                     "against its floors, side by side, and print each figure's ratio.")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; every figure is measured once a round "
                        "(default 5)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 round, fewer samples (under a minute)")
    parser.add_argument("--image", choices=("textured", "flat"), default="textured",
                        help="the fake's pictures: textured (a few hundred KB a megapixel, like a real render; "
                             "default) or flat (one colour, a few KB: what the test suite's fakes send)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the table and every sample as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed or not measured")
    parser.add_argument("--server", default=_default_server(), help="the flux-klein-mcp executable to measure "
                        "(default: the one beside this Python)")
    parser.add_argument("--save-baseline", action="store_true", help="record this run's result size and vision "
                        f"tokens in {report.BASELINE.name} as the new 'today'")
    return parser.parse_args(argv)


def _default_server() -> str:
    beside = Path(sys.executable).parent / "flux-klein-mcp"
    return str(beside) if beside.exists() else (shutil.which("flux-klein-mcp") or "flux-klein-mcp")


@contextmanager
def fake_provider(latency_s: float, image: str) -> Iterator[dict[str, Any]]:
    """A fake OpenRouter in its own process (it must not share this one's GIL); it ends when its stdin closes."""
    process = subprocess.Popen([sys.executable, str(HERE / "fake_provider.py"), "--latency", str(latency_s),
                                "--image", image], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise SystemExit("bench: the fake provider did not start")
        yield dict(json.loads(line))
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.server).exists() and shutil.which(args.server) is None:
        raise SystemExit(f"bench: no server at {args.server}; run `make bench` (it installs .venv first)")
    server = str(Path(shutil.which(args.server) or args.server).resolve())
    rounds = 1 if args.quick else args.rounds
    load = os.getloadavg()
    started = time.perf_counter()
    with ExitStack() as stack:
        fast = stack.enter_context(fake_provider(0, args.image))
        slow = stack.enter_context(fake_provider(1, args.image))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flux-bench-")))
        errlog = stack.enter_context(open(work / "servers.stderr.log", "w"))
        setup = Setup(server=server, python=sys.executable, fast_url=fast["url"], slow_url=slow["url"],
                      work=work, errlog=errlog)
        if args.quick:
            setup.warm_calls, setup.timed_calls, setup.cold_pairs, setup.warm_up = 2, 3, 1, False
        progress(f"bench: {rounds} round(s) against {server}; fakes at {fast['url']} (0 s), {slow['url']} (1 s)")
        samples = anyio.run(run_rounds, setup, rounds)
        if samples.errors:
            errlog.flush()
            tail = (work / "servers.stderr.log").read_text()[-1500:]
            if tail.strip():
                progress(f"the end of what the MCP servers wrote to stderr:\n{tail}")
    progress(f"bench: done in {time.perf_counter() - started:.0f} s\n")

    baseline = report.load_baseline()
    result_rows = report.rows(samples, baseline)
    info = report.machine(server, sys.executable, load)
    fake_info = {key: fast[key] for key in ("image_bytes", "body_bytes", "large_bytes", "jpeg_bytes")}
    fake_info["image"] = args.image
    print(report.render(result_rows, info, fake_info, samples))
    if args.json:
        settings = {"rounds": rounds, "quick": args.quick, "warm_calls": setup.warm_calls,
                    "timed_calls": setup.timed_calls, "cli_runs": setup.cli_runs, "cold_pairs": setup.cold_pairs}
        args.json.write_text(report.as_json(result_rows, info, fake_info, samples, settings) + "\n")
    if args.save_baseline:
        _save_baseline(samples, info)
    failed = [r.figure for r in result_rows if r.verdict not in ("PASS", "")]
    return 1 if args.check and failed else 0


def _save_baseline(samples: Samples, info: dict[str, Any]) -> None:
    values = {key: report.median(samples.values.get(sample, [])) for key, sample in
              (("result_bytes", "result.bytes"), ("vision_tokens", "result.tokens"))}
    if None in values.values():
        raise SystemExit("bench: no result was measured; the baseline is unchanged")
    report.BASELINE.write_text(json.dumps({
        **values,
        "measured_with": f"{info['server_version']} at commit {info['server_commit']}",
        "note": "n=1 generate_image of the fake's 1024x1024 PNG, first call in a fresh output folder; paths "
                "counted as /OUT",
    }, indent=2) + "\n")
    progress(f"bench: baseline written to {report.BASELINE}")
