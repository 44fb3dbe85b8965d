"""The `flux-klein-mcp` command: the MCP server (default), and the same pipeline from a terminal.

    flux-klein-mcp [serve]                      stdio MCP server
    flux-klein-mcp generate PROMPT [options]    one call, JSON summary on stdout
    flux-klein-mcp edit PROMPT --image X
    flux-klein-mcp compose PROMPT --image A --image B ...
    flux-klein-mcp demo [PROMPT]                drive the real server over stdio, like an MCP client would
    flux-klein-mcp doctor [--json]              which keys are set and valid, where files go, which provider
    flux-klein-mcp spend [--json] [--days N] [--by day|provider|model]   what has been spent, from the ledger

Exit codes: 0 done; 1 the provider or the disk failed; 2 bad arguments, configuration or no consent for the high
tier; 3 out of credits or a budget reached (stop).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..config import redactor_for
from ..errors import FluxKleinError
from ..redact import install_log_redaction
from ..rules import ASPECT_RATIOS, PROVIDER_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flux-klein-mcp",
        description="Generate, edit and compose images with FLUX.2 [klein] 4B. With no command, runs the stdio "
        "MCP server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the MCP server on stdio (the default), or over HTTP",
                           description="Run the MCP server. With no option it talks JSON-RPC on stdin/stdout, as "
                           "MCP clients start it. --http serves streamable HTTP on /mcp (stateless) instead: "
                           "127.0.0.1 by default; any other address needs FLUX_KLEIN_HTTP_TOKEN.")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp (stateless) instead")
    serve.add_argument("--host", help="address to bind with --http (default 127.0.0.1; any other needs "
                       "FLUX_KLEIN_HTTP_TOKEN)")
    serve.add_argument("--port", type=int, help="port with --http (default 8000)")
    for name, what in (
        ("generate", "generate 1-4 images from a prompt"),
        ("edit", "edit one image (--image)"),
        ("compose", "compose a new image from 2-4 references (--image, repeated)"),
    ):
        cmd = sub.add_parser(name, help=what, description=what)
        cmd.add_argument("prompt", help="the change to make, and what to keep" if name == "edit"
                         else "what the image should show")
        if name != "generate":
            cmd.add_argument("--image", action="append", required=True, metavar="PATH_OR_URL",
                             help="input image: path, file:// URI, https:// URL or data URL" +
                             (" (repeat 2-4 times)" if name == "compose" else ""))
        cmd.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, help={
            "generate": "image shape (default: 1:1, 1024x1024)",
            "edit": "image shape (default: the input image's, nearest supported ratio)",
            "compose": "image shape (default: the model's choice, usually 1:1)",
        }[name])
        if name == "generate":
            cmd.add_argument("-n", type=int, default=1, help="number of variations, 1-4 (default 1)")
        cmd.add_argument("--seed", type=int, help="fix the result (same seed, same image)")
        cmd.add_argument("--tier", choices=("low", "high"), default="low",
                         help="low (default, all drafts) or high (explicitly requested finals only; asks you to "
                         "approve the spend unless --yes or FLUX_KLEIN_HIGH_TIER=allow)")
        cmd.add_argument("--yes", action="store_true", help="approve a high-tier spend without being asked")
        cmd.add_argument("--filename", help="name for the saved file (made safe; never overwrites)")
        cmd.add_argument("--provider", choices=PROVIDER_NAMES, help="provider for this call")
        cmd.add_argument("--output-dir", type=Path, help="folder for the images (default: FLUX_KLEIN_OUTPUT_DIR "
                         "or ./output)")
    demo = sub.add_parser("demo", help="start the server on stdio and call generate_image through a real MCP "
                          "client (the sandbox when no key is set)",
                          description="Start the server as an MCP client would (a subprocess on stdio), list its "
                          "tools and call generate_image through the official MCP client, printing what the model "
                          "would receive. Uses your provider key when one is set, the free offline sandbox "
                          "otherwise.")
    demo.add_argument("prompt", nargs="?", default="A lighthouse on a rocky coast at dusk, warm light in the "
                      "window, watercolour style", help="what to draw (default: a lighthouse at dusk)")
    demo.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, default="3:2", help="image shape (default 3:2)")
    doctor = sub.add_parser("doctor", help="check each provider's key (no spend), the output folder, and which "
                            "provider a call would use; exits 1 when nothing usable is configured",
                            description="Check, without spending anything, each provider's key (OpenRouter GET "
                            "/key with its remaining credit, the gateways GET /models), the output folder, and "
                            "which provider a call would use. Tells a key that is not set, one that is rejected "
                            "and a provider that cannot be reached apart. Exits 1 when calls would not work.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    skill = sub.add_parser("skill", help="the Agent Skill this package carries (SKILL.md and references/)",
                           description="The Agent Skill teaches an agent when and how to use these tools, and the "
                           "command line when the server is not connected.")
    skill_sub = skill.add_subparsers(dest="skill_command", metavar="ACTION", required=True)
    install = skill_sub.add_parser("install", help="write the skill to DIR/generate-image-low-flux/",
                                   description="Write the skill to DIR/generate-image-low-flux/ (default: Claude "
                                   "Code's personal skills folder, ~/.claude/skills).")
    install.add_argument("--dir", type=Path, help="the skills folder to write into (default: ~/.claude/skills)")
    spend = sub.add_parser("spend", help="what has been spent, from the ledger: today, this month, per day, by "
                           "provider and model (no network)")
    spend.add_argument("--json", action="store_true", help="print the report as JSON")
    spend.add_argument("--days", type=int, default=7, choices=range(1, 367), metavar="N",
                       help="how many recent days to list (1-366, default 7)")
    spend.add_argument("--by", choices=("day", "provider", "model"),
                       help="group the last N days by day, provider or model (with --json: 'rows')")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    if command == "serve" and (getattr(args, "host", None) or getattr(args, "port", None)) \
            and not getattr(args, "http", False):
        build_parser().error("--host and --port only apply with --http")
    # Everything past the parser is imported here, for the command that runs: --help loads none of it.
    import anyio

    if command == "serve":
        from . import serving

        sys.exit(serving.serve_http(args.host or "127.0.0.1", args.port or 8000) if getattr(args, "http", False)
                 else serving.serve())
    if command == "skill":
        sys.exit(_install_skill(args.dir))
    if command == "doctor":
        from ..doctor import run_doctor

        sys.exit(_report_errors(lambda: anyio.run(run_doctor, args.json, print)))
    if command == "demo":
        from ..demo import run_demo

        sys.exit(anyio.run(run_demo, args.prompt, args.aspect_ratio, print, _to_stderr))
    from . import commands

    if command == "spend":
        sys.exit(_report_errors(lambda: commands.spend(args.json, args.days, args.by)))
    else:
        sys.exit(anyio.run(commands.one_call, args))


def _install_skill(parent: Path | None) -> int:
    from .. import skill

    try:
        folder, files, replaced = skill.install(parent or skill.default_dir())
    except skill.NotOurs as exc:
        _to_stderr(f"flux-klein-mcp: {exc}; nothing was written. Move it away or choose another --dir.")
        return 2
    except OSError as exc:
        _to_stderr(f"flux-klein-mcp: could not write the skill ({exc.strerror or exc}). Choose another --dir.")
        return 1
    print(f"{'Updated' if replaced else 'Installed'} the Agent Skill {skill.NAME} in {folder} "
          f"({', '.join(files)}).")
    print("Claude Code loads it in its next session; other agents: point them at that folder.")
    return 0


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _report_errors(command: Callable[[], int]) -> int:
    """Run a command; a `FluxKleinError` becomes its message on stderr and its exit code."""
    try:
        return command()
    except FluxKleinError as exc:
        return failed(exc)


def failed(exc: FluxKleinError) -> int:
    """Print an error's message, with every secret in the environment removed, and return its exit code."""
    _to_stderr(f"flux-klein-mcp: {redactor_for(os.environ)(str(exc), shapes=False)}")
    return exc.exit_code


class _Parser(argparse.ArgumentParser):
    """argparse, except that its error messages (which quote the bad value) never repeat a secret."""

    def error(self, message: str) -> NoReturn:
        super().error(redactor_for(os.environ)(message, shapes=False))


def log_to_stderr(level: int = logging.INFO, fmt: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    # On stdio, stdout carries the protocol; everything else goes to stderr, with every secret redacted.
    logging.basicConfig(stream=sys.stderr, level=level, format=fmt)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider request is noise
    install_log_redaction(redactor_for(os.environ))
