"""What every client check shares. Standard library only: it is imported from every client's virtual environment.

A check module declares its checks as async functions taking a `Sandbox` and returning a one-line summary of what it
saw (or raising), and hands them to `run_checks`, which prints one `PASS`/`FAIL`/`SKIP` line each and exits 1 if any
failed. `clients/run.py` runs every module under the right interpreter.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: The installed server: `make test-clients` builds the project venv first.
SERVER = ROOT / ".venv" / "bin" / "flux-klein-mcp"
TOOLS = {"generate_image", "edit_image", "compose_images", "get_usage"}
PROMPT = "a red fox in the snow"
#: An argument the tool's schema refuses (aspect_ratio is one of ten values): must come back as a tool error.
BAD_ARGS = {"prompt": PROMPT, "aspect_ratio": "7:3"}


def in_our_words(text: str) -> bool:
    """A refusal of BAD_ARGS as the server words it: the parameter, what is allowed (the ten ratios), and none of
    pydantic's raw "1 validation error for generate_imageArguments ... errors.pydantic.dev"."""
    return ("aspect_ratio" in text and "16:9" in text and "7:3" in text
            and "pydantic" not in text and "validation error for" not in text)


class Skip(Exception):
    """The check does not apply here (say, no manifest.json to validate); the message says why."""


@dataclass
class Sandbox:
    """A fresh folder per check: the server's output folder and ledger, and the env that selects the sandbox."""

    root: Path

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def env(self) -> dict[str, str]:
        """Only what a user would put in a client's `env`: each client adds its own defaults (PATH, HOME, ...)."""
        return {
            "FLUX_KLEIN_PROVIDER": "sandbox",
            "FLUX_KLEIN_OUTPUT_DIR": str(self.out),
            "FLUX_KLEIN_LEDGER": str(self.root / "ledger.jsonl"),
        }


Check = Callable[[Sandbox], Awaitable[str]]


def expect_tools(names: Any) -> None:
    got = set(names)
    assert got == TOOLS, f"tools listed: {sorted(got)}, expected {sorted(TOOLS)}"


def saved_paths(summary_text: str, sandbox: Sandbox) -> list[Path]:
    """The JSON text block's images: absolute paths of files that exist in the sandbox's output folder."""
    summary = json.loads(summary_text)
    paths = [Path(image["path"]) for image in summary["images"]]
    assert paths, f"no images in the result: {summary_text[:300]}"
    for path in paths:
        assert path.is_absolute(), f"not an absolute path: {path}"
        assert path.is_file(), f"the result names {path}, which does not exist"
        assert path.parent == sandbox.out, f"{path} is not in the output folder {sandbox.out}"
    return paths


def media(payload: Any) -> list[str]:
    """Every image or file a model provider's request carries, as its URL: OpenAI's `image_url.url` (chat),
    `input_image.image_url` and `input_file.file_url` (responses), Anthropic's `source: {type: url}`; Anthropic's
    inline `source: {type: base64}` counts as `data:`."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "image_url" and isinstance(node.get("image_url"), dict):
                found.append(str(node["image_url"].get("url")))
            if kind == "input_image" and isinstance(node.get("image_url"), str):
                found.append(node["image_url"])
            if kind == "input_file" and "file_url" in node:
                found.append(str(node["file_url"]))
            if kind == "url" and "url" in node:
                found.append(str(node["url"]))
            if kind == "base64" and "data" in node:
                found.append(f"data:{node.get('media_type')};base64,...")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload)
    return found


def fetch_urls(payload: Any) -> list[str]:
    """The URLs in a provider request that the provider would have to fetch itself: all but inline `data:` ones.
    (The JSON text block legitimately holds `file://` URIs as text, so looking for the string would prove nothing.)"""
    return [url for url in media(payload) if not url.startswith("data:")]


def text_parts(payload: Any) -> list[str]:
    """Every string in a payload that is text the model reads (`text`/`content`/`output` fields)."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("text", "content", "output") and isinstance(value, str):
                    texts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload)
    return texts


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def http_server(sandbox: Sandbox, base_env: dict[str, str]) -> Iterator[str]:
    """`flux-klein-mcp serve --http` on a free loopback port; yields its /mcp URL once uvicorn listens (it says
    "Application startup complete" before it binds the port)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(SERVER), "serve", "--http", "--port", str(port)], cwd=sandbox.root, env={**base_env, **sandbox.env},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready, lines = threading.Event(), []

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(30) or proc.poll() is not None:
            raise AssertionError("serve --http did not start:\n" + "".join(lines))
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_checks(*checks: tuple[str, Check], timeout_s: float = 120) -> None:
    """Run each check in its own sandbox, print one line per check, and exit 1 if any failed."""
    failed = 0
    for name, check in checks:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="flux-clients-") as folder:
            sandbox = Sandbox(Path(folder))
            sandbox.out.mkdir()
            try:
                detail = asyncio.run(asyncio.wait_for(check(sandbox), timeout_s))
                status = "PASS"
            except Skip as skipped:
                status, detail = "SKIP", str(skipped)
            except Exception as error:  # a check's failure, whatever it is, is reported and the next one runs
                status, detail = "FAIL", _describe(error)
                failed += 1
        print(f"{status} {name} ({time.monotonic() - started:.1f} s): {detail}", flush=True)
    sys.exit(1 if failed else 0)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    where = traceback.extract_tb(error.__traceback__)[-2:]
    return f"{type(error).__name__}: {error}\n" + "".join("    " + line for line in traceback.format_list(where))
