"""How hosts install the server rather than how they talk to it: `uvx --from <source>` (the command users put in a
client's configuration) and, once the repository has one, the MCPB bundle manifest.

Run: `.venv/bin/python -m clients.check_packaging` (needs .venv-clients for uv and clients/npm for mcpb)
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from clients.common import ROOT, Sandbox, Skip, run_checks

UVX = ROOT / ".venv-clients" / "bin" / "uvx"
MANIFEST = ROOT / "manifest.json"


def run(command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


async def uvx(sandbox: Sandbox) -> str:
    """A fresh copy of the committed tree (`git archive HEAD`, so nothing in the working tree can help) and an empty
    uv cache (uv keys its build cache on pyproject.toml only, so a warm one could serve an older build)."""
    source, tar = sandbox.root / "source", sandbox.root / "source.tar"
    source.mkdir()
    for step in (["git", "archive", "--format=tar", "-o", str(tar), "HEAD"],
                 ["tar", "-xf", str(tar), "-C", str(source)]):
        done = run(step)
        assert done.returncode == 0, f"{' '.join(step)}: {done.stderr}"
    env = {**os.environ, "UV_CACHE_DIR": str(sandbox.root / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
           "UV_TOOL_DIR": str(sandbox.root / "uv-tools")}
    done = run([str(UVX), "--from", str(source), "flux-klein-mcp", "--version"], cwd=sandbox.root, env=env)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.returncode == 0 and done.stdout.strip() == f"flux-klein-mcp {version}", done.stdout + done.stderr
    return f"`uvx --from <git archive HEAD> flux-klein-mcp --version` printed {done.stdout.strip()!r}"


async def mcpb(sandbox: Sandbox) -> str:
    if not MANIFEST.is_file():
        raise Skip("no manifest.json at the repository root, so no MCPB bundle to validate yet")
    done = run(["npx", "--no", "--", "mcpb", "validate", str(MANIFEST)], cwd=ROOT / "clients" / "npm")
    assert done.returncode == 0, done.stdout + done.stderr
    return f"mcpb validate manifest.json: {done.stdout.strip().splitlines()[-1]}"


if __name__ == "__main__":
    run_checks(("uvx --from a fresh copy of the source", uvx), ("mcpb validate manifest.json", mcpb), timeout_s=300)
