"""How people install the server rather than how clients talk to it: `uv tool install` from a copy of the source
and a wheel built from it (the ways that work before the package is published; the README puts the installed
command in every client's configuration), the MCPB bundle manifest, and the bundle `make bundle` packs, started the
way its manifest tells a host to.

Run: `.venv/bin/python -m clients.check_packaging` (needs .venv-clients for uv and clients/npm for mcpb)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
import zipfile
from pathlib import Path

from mcp import Client, StdioServerParameters

from clients.common import PROMPT, ROOT, Sandbox, Skip, expect_tools, run_checks, saved_paths

UV = ROOT / ".venv-clients" / "bin" / "uv"
MANIFEST = ROOT / "manifest.json"


def run(command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)


def fresh_source(sandbox: Sandbox) -> Path:
    """A fresh copy of the committed tree (`git archive HEAD`, so nothing in the working tree can help)."""
    source, tar = sandbox.root / "source", sandbox.root / "source.tar"
    source.mkdir()
    for step in (["git", "archive", "--format=tar", "-o", str(tar), "HEAD"],
                 ["tar", "-xf", str(tar), "-C", str(source)]):
        done = run(step)
        assert done.returncode == 0, f"{' '.join(step)}: {done.stderr}"
    return source


async def uv_tool_install(sandbox: Sandbox) -> str:
    """`uv tool install <source>` with an empty uv cache, then the installed command started the way the README's
    client blocks start it: by its absolute path, from another folder, with an environment that holds neither uv
    nor the certificate variables (Gemini CLI strips SSL_CERT_FILE): an installed command needs no index at start."""
    source = fresh_source(sandbox)
    bin_dir = sandbox.root / "bin"
    env = {**os.environ, "UV_CACHE_DIR": str(sandbox.root / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
           "UV_TOOL_DIR": str(sandbox.root / "uv-tools"), "UV_TOOL_BIN_DIR": str(bin_dir)}
    done = run([str(UV), "tool", "install", str(source)], cwd=sandbox.root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    command = bin_dir / "flux-klein-mcp"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    printed = run([str(command), "--version"], cwd=sandbox.root).stdout.strip()
    assert printed == f"flux-klein-mcp {version}", printed
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(sandbox.root), "FLUX_KLEIN_PROVIDER": "sandbox",
            "FLUX_KLEIN_OUTPUT_DIR": str(sandbox.out), "FLUX_KLEIN_LEDGER": str(sandbox.root / "ledger.jsonl")}
    async with Client(StdioServerParameters(command=str(command), env=bare, cwd="/")) as client:
        expect_tools(tool.name for tool in (await client.list_tools()).tools)
        result = await client.call_tool("generate_image", {"prompt": PROMPT})
    assert not result.is_error and result.content[0].type == "text", result.content
    paths = saved_paths(result.content[0].text, sandbox)
    return f"uv tool install <git archive HEAD> gave {printed!r}; started by path, bare env; saved {paths[0].name}"


async def wheel(sandbox: Sandbox) -> str:
    """The wheel the README tells people to build (`pip wheel --no-deps`) carries the server, the view and the skill."""
    source = fresh_source(sandbox)
    done = run(["python3", "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(sandbox.root / "dist"), str(source)])
    assert done.returncode == 0, done.stdout + done.stderr
    built = next((sandbox.root / "dist").glob("flux_klein_mcp-*.whl"))
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
    needed = {"flux_klein_mcp/view.html", "flux_klein_mcp/server.py", "flux_klein_mcp/cli/__init__.py"}
    assert needed <= names, sorted(needed - names)
    assert any(n.endswith("SKILL.md") for n in names), "the wheel carries no SKILL.md"
    return f"{built.name}: {len(names)} files, with the view and the skill"


async def mcpb(sandbox: Sandbox) -> str:
    if not MANIFEST.is_file():
        raise Skip("no manifest.json at the repository root, so no MCPB bundle to validate yet")
    done = run(["npx", "--no", "--", "mcpb", "validate", str(MANIFEST)], cwd=ROOT / "clients" / "npm")
    assert done.returncode == 0, done.stdout + done.stderr
    return f"mcpb validate manifest.json: {done.stdout.strip().splitlines()[-1]}"


async def bundle(sandbox: Sandbox) -> str:
    """`make bundle`, unpacked and started as its manifest's mcp_config says, with what Claude Desktop substitutes:
    the folder for ${__dirname}, the person's answers for the fields they filled in (Provider: sandbox), the
    defaults, and the template itself for optional fields left empty with no default (what hosts do today).
    uv comes from .venv-clients."""
    made = run(["make", "--no-print-directory", "bundle"])
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    packed = ROOT / "dist" / "flux-klein-mcp.mcpb"
    folder = sandbox.root / "unpacked"
    with zipfile.ZipFile(packed) as archive:
        names = archive.namelist()
        archive.extractall(folder)
    assert not [n for n in names if re.search(r"(^|/)(\.venv|__pycache__|\.git|node_modules|output)/", n)], names
    # Only what git tracks (never local files, caches or what a link points to), besides the packer's own files.
    tracked = set(run(["git", "ls-files"]).stdout.splitlines())
    strays = [n for n in names if not n.endswith("/") and n not in tracked]
    assert not strays, f"the bundle holds files git does not track: {strays[:10]}"
    manifest = json.loads((folder / "manifest.json").read_text())
    defaults = {key: str(field["default"]) for key, field in manifest["user_config"].items() if "default" in field}
    answers = defaults | {"provider": "sandbox", "output_dir": str(sandbox.out)}

    def substitute(text: str) -> str:
        text = text.replace("${__dirname}", str(folder))
        return re.sub(r"\$\{user_config\.(\w+)\}", lambda m: answers.get(m.group(1), m.group(0)), text)

    config = manifest["server"]["mcp_config"]
    assert config["command"] == "uv", config
    # The machine's environment (its proxy and certificate settings reach uv, as they would from a host), without
    # anything of ours: the bundle's own env must be enough.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_KLEIN_") and not k.endswith("_API_KEY")}
    env |= {key: substitute(value) for key, value in config["env"].items()}
    env |= {"PATH": f"{UV.parent}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(sandbox.root),
            "UV_CACHE_DIR": str(sandbox.root / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
            "FLUX_KLEIN_LEDGER": str(sandbox.root / "ledger.jsonl")}
    params = StdioServerParameters(command=str(UV), args=[substitute(a) for a in config["args"]],
                                   env=env, cwd=sandbox.root)
    async with Client(params) as client:
        expect_tools(tool.name for tool in (await client.list_tools()).tools)
        result = await client.call_tool("generate_image", {"prompt": PROMPT})
    first = result.content[0]
    assert not result.is_error and first.type == "text", result.content
    paths = saved_paths(first.text, sandbox)
    left_empty = sorted(k for k, v in env.items() if "${user_config." in v)
    return (f"{packed.name} ({packed.stat().st_size // 1024} KB, {len(names)} files) started with uv as its "
            f"manifest says; 4 tools; saved {paths[0].name}; fields left empty ({', '.join(left_empty)}) were "
            "taken as unset")


if __name__ == "__main__":
    run_checks(("uv tool install from a fresh copy of the source", uv_tool_install),
               ("a wheel built from a fresh copy of the source", wheel), ("mcpb validate manifest.json", mcpb),
               ("the MCP bundle, as a host starts it", bundle), timeout_s=300)
