"""The issue's targets as one table, and the report: each figure's median, its floor's median, the ratio, the verdict.

A ratio is server median / floor median, both taken side by side in the same run. Peak RSS has an absolute
target (the floor beside it, an idle one-tool server, is context only); result size and vision tokens are
compared with `baseline.json`, what the server returned when the benchmark was written.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from .rounds import Samples

BASELINE = Path(__file__).resolve().parent / "baseline.json"
Unit = Literal["s", "x", "MB", "bytes", "tokens"]


@dataclass(frozen=True)
class Figure:
    name: str
    server: str  # sample key of the measured figure
    floor: str  # sample key of its floor, or "baseline:<key>" for a value in baseline.json
    floor_name: str
    unit: Unit
    limit: float | None  # the most the ratio may be (or the value itself, when `absolute`); None: context only
    absolute: bool = False


#: The issue's targets (issue 19). The thumbnail is part of the job, so a warm call's yardstick is the context floor:
#: a script that POSTs, decodes the image with Pillow, makes the <= 512 px JPEG thumbnail and writes the file.
FIGURES: tuple[Figure, ...] = (
    Figure("warm call, 1024x1024 PNG", "warm.server", "warm.thumb", "context: httpx+decode+thumb", "s", 1.25),
    Figure("warm call, 2048x2048 PNG", "warm.large.server", "warm.large.thumb", "context: httpx+decode+thumb",
           "s", 1.25),
    Figure("warm call, JPEG reply", "warm.jpeg.server", "warm.jpeg.thumb", "context: httpx+decode+thumb", "s",
           None),
    Figure("n=4 in one call, 1 s latency", "n4.server", "n1.server", "n=1 call (same server)", "s", 1.05),
    Figure("16 concurrent n=4 / one n=4, PNG", "conc.server", "conc.floor", "async httpx: 64 / 1 req", "x", 1.5),
    Figure("16 concurrent n=4 / one n=4, JPEG", "concjpeg.server", "concjpeg.floor", "async httpx: 16 / 1 req of 4",
           "x", 1.2),
    Figure("peak server RSS after both loads", "rss.server", "rss.floor", "one-tool MCPServer, idle", "MB", 130,
           absolute=True),
    Figure("CLI --help", "cli.help", "cli.floor", "one-shot httpx script", "s", 1.3),
    Figure("CLI generate --provider sandbox", "cli.sandbox", "cli.floor", "one-shot httpx script", "s", 2.5),
    Figure("cold start: spawn -> tools/list", "cold.server", "cold.floor", "one-tool MCPServer", "s", 1.1),
    Figure("result size, n=1", "result.bytes", "baseline:result_bytes", "baseline (today)", "bytes", 1.0),
    Figure("vision tokens, n=1", "result.tokens", "baseline:vision_tokens", "baseline (today)", "tokens", 1.0),
    Figure("ledger reserve + settle, 200k rows", "ledger.full", "ledger.empty", "the same, empty ledger", "s",
           0.005, absolute=True),
    # Context only: the same warm call beside a plain download that decodes nothing (the yardstick before issue 19).
    Figure("warm call, 1024x1024 PNG", "warm.server", "warm.floor", "plain httpx call", "s", None),
)


@dataclass
class Row:
    figure: str
    unit: str
    server: float | None
    floor: float | None
    floor_name: str
    ratio: float | None
    target: str
    verdict: Literal["PASS", "FAIL", "n/a", ""]
    samples: int
    #: The spread of the ratio over the rounds: its lowest and highest per-round value (None for one round).
    spread: tuple[float, float] | None = None


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def load_baseline() -> dict[str, Any]:
    try:
        return dict(json.loads(BASELINE.read_text()))
    except (OSError, ValueError):
        return {}


def rows(samples: Samples, baseline: dict[str, Any]) -> list[Row]:
    out = []
    for fig in FIGURES:
        server = median(samples.values.get(fig.server, []))
        if fig.floor.startswith("baseline:"):
            floor = baseline.get(fig.floor.split(":", 1)[1])
        else:
            floor = median(samples.values.get(fig.floor, []))
        ratio = server / floor if server is not None and floor else None
        measured = server if fig.absolute else ratio
        verdict: Literal["PASS", "FAIL", "n/a", ""] = "n/a" if measured is None else (
            "" if fig.limit is None else "PASS" if measured <= fig.limit else "FAIL")
        target = ("context" if fig.limit is None else
                  f"<= {fig.limit:g} {fig.unit}" if fig.absolute else f"ratio <= {fig.limit:g}")
        out.append(Row(fig.name, fig.unit, server, floor, fig.floor_name, ratio, target, verdict,
                       len(samples.values.get(fig.server, [])), _spread(samples, fig, baseline)))
    return out


def _spread(samples: Samples, fig: Figure, baseline: dict[str, Any]) -> tuple[float, float] | None:
    """The lowest and highest of the per-round ratios (each round's own medians), or of the values themselves for an
    absolute target: how much the figure moved with the machine's load over the run."""
    rounds = samples.rounds
    if len(rounds) < 2:
        return None
    values = []
    for one in rounds:
        server = median(one.get(fig.server, []))
        floor = (baseline.get(fig.floor.split(":", 1)[1]) if fig.floor.startswith("baseline:")
                 else median(one.get(fig.floor, [])))
        if server is not None and (fig.absolute or floor):
            values.append(server if fig.absolute else server / floor)
    return (min(values), max(values)) if len(values) >= 2 else None


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.3f} s"
    if unit == "x":
        return f"{value:.3f}x"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:,.0f} {unit}"


def table(result_rows: list[Row]) -> str:
    header = ("figure", "server", "floor", "floor is", "ratio", "rounds' range", "target", "", "n")
    lines = [header]
    for r in result_rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        absolute = not r.target.startswith("ratio") and r.target != "context"
        spread = "-" if r.spread is None else (f"{fmt(r.spread[0], r.unit)}..{fmt(r.spread[1], r.unit)}"
                                               if absolute else f"{r.spread[0]:.2f}..{r.spread[1]:.2f}")
        lines.append((r.figure, fmt(r.server, r.unit), fmt(r.floor, r.unit), r.floor_name, ratio, spread, r.target,
                      r.verdict, str(r.samples)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {1, 2, 4, 5, 8}
    text = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        text.append("  ".join(cells).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def machine(server: str, python: str, load_at_start: tuple[float, float, float]) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": _output([python, "-c", "import platform; print(platform.python_version())"]),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "server": server,
        "server_version": _output([server, "--version"]),
        "server_commit": _git_commit(Path(server)),
        "mcp_sdk": _output([python, "-c", "import importlib.metadata as m; print(m.version('mcp'))"]),
    }


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except OSError as exc:
        return f"? ({exc})"
    return (done.stdout or done.stderr).strip()


def _git_commit(server: Path) -> str:
    """The last commit that changed server/ (and "+dirty") when the server is this checkout's editable install."""
    repo = Path(__file__).resolve().parent.parent
    if not str(server.resolve()).startswith(str(repo)):
        return "unknown (not this checkout's venv)"
    commit = _output(["git", "-C", str(repo), "log", "-1", "--format=%h", "--", "server"])
    dirty = _output(["git", "-C", str(repo), "status", "--porcelain", "--", "server"])
    return commit + ("+dirty" if dirty else "")


def render(result_rows: list[Row], info: dict[str, Any], fake: dict[str, Any], samples: Samples) -> str:
    out = [
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_usable']} usable), Python {info['python']}, "
        f"load average at start {' '.join(map(str, info['load_average_at_start']))}",
        f"server:  {info['server']} ({info['server_version']}, commit {info['server_commit']}), "
        f"MCP SDK {info['mcp_sdk']}",
        f"fake:    {fake.get('image', 'textured')} pictures: 1024x1024 PNG of {fake['image_bytes']:,} bytes (answer "
        f"body {fake['body_bytes']:,}), 2048x2048 PNG of {fake.get('large_bytes', 0):,}, 1024x1024 JPEG of "
        f"{fake.get('jpeg_bytes', 0):,}; latency 0 s and 1 s",
        "",
        table(result_rows),
    ]
    inflight = [f"{key.split('.')[1]} {max(v):.0f}" for key in ("inflight.server", "inflight.floor")
                if (v := samples.values.get(key))]
    if inflight:
        out.append(f"\nmost provider requests in flight at once (of {16 * 4}): {', '.join(inflight)}")
    failed = [r.figure + (f" ({r.floor_name})" if r.figure in _repeated(result_rows) else "") for r in result_rows
              if r.verdict in ("FAIL", "n/a")]
    met = sum(r.verdict == "PASS" for r in result_rows)
    out.append(f"targets: {met} met" + (f", missed or not measured: {'; '.join(failed)}" if failed else ", all met"))
    for error in samples.errors:
        out.append(f"error: {error}")
    return "\n".join(out)


def _repeated(result_rows: list[Row]) -> set[str]:
    names = [r.figure for r in result_rows]
    return {name for name in names if names.count(name) > 1}


def as_json(result_rows: list[Row], info: dict[str, Any], fake: dict[str, Any], samples: Samples,
            settings: dict[str, Any]) -> str:
    return json.dumps({"machine": info, "fake": fake, "settings": settings,
                       "figures": [asdict(r) for r in result_rows], "samples": dict(samples.values),
                       "errors": samples.errors, "tracebacks": samples.tracebacks}, indent=2)
