"""The MCP Inspector's CLI (TypeScript SDK), run through npx from the pinned clients/npm install, over stdio.

Run: `.venv/bin/python -m clients.check_inspector` (after `make test-clients` has installed clients/npm)
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from clients.common import BAD_ARGS, PROMPT, ROOT, SERVER, Sandbox, expect_tools, in_our_words, run_checks, saved_paths

NPM = ROOT / "clients" / "npm"


def inspector(sandbox: Sandbox, *method: str) -> tuple[int, Any]:
    env_flags = [flag for key, value in sandbox.env.items() for flag in ("-e", f"{key}={value}")]
    command = ["npx", "--no", "--", "mcp-inspector", "--cli", str(SERVER), *env_flags, "--method", *method]
    done = subprocess.run(command, cwd=NPM, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"exit {done.returncode}, not JSON:\n{done.stdout[-800:]}{done.stderr[-800:]}") from None


def call_args(arguments: dict[str, str]) -> list[str]:
    return ["--tool-name", "generate_image", *[flag for key, value in arguments.items()
                                               for flag in ("--tool-arg", f"{key}={value}")]]


async def cli(sandbox: Sandbox) -> str:
    code, listed = inspector(sandbox, "tools/list")
    assert code == 0, listed
    expect_tools(tool["name"] for tool in listed["tools"])
    code, result = inspector(sandbox, "tools/call", *call_args({"prompt": PROMPT}))
    assert code == 0 and not result.get("isError"), result
    paths = saved_paths(result["content"][0]["text"], sandbox)
    kinds = [block["type"] for block in result["content"]]
    # The Inspector names itself, so it gets a resource_link per image (FLUX_KLEIN_RESOURCE_LINKS=auto).
    links = [block["uri"] for block in result["content"] if block["type"] == "resource_link"]
    assert links == [path.as_uri() for path in paths], result["content"]
    # 0.15 exits 0 with isError in the JSON; later releases exit 5 on a tool error.
    code, refused = inspector(sandbox, "tools/call", *call_args(BAD_ARGS))
    assert code in (0, 5) and refused.get("isError") and in_our_words(refused["content"][0]["text"]), refused
    return f"4 tools; saved {paths[0].name}; blocks: {', '.join(kinds)}; a bad aspect_ratio is isError (exit {code})"


if __name__ == "__main__":
    run_checks(("MCP Inspector CLI, stdio", cli))
