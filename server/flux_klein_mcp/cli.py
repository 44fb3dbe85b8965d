"""The `flux-klein-mcp` command: the MCP server (default), and the same pipeline from a terminal.

    flux-klein-mcp [serve]                      stdio MCP server
    flux-klein-mcp generate PROMPT [options]    one call, JSON summary on stdout
    flux-klein-mcp edit PROMPT --image X
    flux-klein-mcp compose PROMPT --image A --image B ...
    flux-klein-mcp demo [PROMPT]                drive the real server over stdio, like an MCP client would
    flux-klein-mcp doctor [--json]              which keys are set and valid, where files go, which provider
    flux-klein-mcp spend [--json] [--days N]    what has been spent, from the ledger

Exit codes: 0 done; 1 the provider or the disk failed; 2 bad arguments, configuration or no consent for the high
tier; 3 out of credits or a budget reached (stop).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import anyio

from . import __version__, pipeline, shutdown
from .config import Settings, redactor_for
from .errors import FluxKleinError
from .providers import PROVIDER_NAMES
from .redact import install_log_redaction
from .request import ImageRequest
from .rules import ASPECT_RATIOS
from .runtime import Runtime
from .spend import Consent, Ledger, needs_consent, question
from .spend.report import ledger_report
from .spend.report import render as render_spend


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="flux-klein-mcp",
        description="Generate, edit and compose images with FLUX.2 [klein] 4B. With no command, runs the stdio "
        "MCP server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the MCP server on stdio (the default), or over HTTP")
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
                          "client (the sandbox when no key is set)")
    demo.add_argument("prompt", nargs="?", default="A lighthouse on a rocky coast at dusk, warm light in the "
                      "window, watercolour style", help="what to draw (default: a lighthouse at dusk)")
    demo.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, default="3:2", help="image shape (default 3:2)")
    doctor = sub.add_parser("doctor", help="check each provider's key (no spend), the output folder, and which "
                            "provider a call would use; exits 1 when nothing usable is configured")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    spend = sub.add_parser("spend", help="what has been spent, from the ledger: today, this month, per day, by "
                           "provider and model (no network)")
    spend.add_argument("--json", action="store_true", help="print the report as JSON")
    spend.add_argument("--days", type=int, default=7, choices=range(1, 367), metavar="N",
                       help="how many recent days to list (1-366, default 7)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    if command == "serve":
        if getattr(args, "http", False):
            sys.exit(_serve_http(args.host or "127.0.0.1", args.port or 8000))
        if getattr(args, "host", None) or getattr(args, "port", None):
            build_parser().error("--host and --port only apply with --http")
        sys.exit(_serve())
    elif command == "doctor":
        from .doctor import run_doctor

        sys.exit(_report_errors(lambda: anyio.run(run_doctor, args.json, print)))
    elif command == "demo":
        from .demo import run_demo

        sys.exit(anyio.run(run_demo, args.prompt, args.aspect_ratio, print, _to_stderr))
    elif command == "spend":
        sys.exit(_report_errors(lambda: _spend(args.json, args.days)))
    else:
        sys.exit(anyio.run(_one_call, args))


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _report_errors(command: Callable[[], int]) -> int:
    """Run a command; a `FluxKleinError` becomes its message on stderr and its exit code."""
    try:
        return command()
    except FluxKleinError as exc:
        return _failed(exc)


def _failed(exc: FluxKleinError) -> int:
    """Print an error's message, with every secret in the environment removed, and return its exit code."""
    _to_stderr(f"flux-klein-mcp: {redactor_for(os.environ)(str(exc), shapes=False)}")
    return exc.exit_code


class _Parser(argparse.ArgumentParser):
    """argparse, except that its error messages (which quote the bad value) never repeat a secret."""

    def error(self, message: str) -> NoReturn:
        super().error(redactor_for(os.environ)(message, shapes=False))


def _log_to_stderr(level: int = logging.INFO, fmt: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    # On stdio, stdout carries the protocol; everything else goes to stderr, with every secret redacted.
    logging.basicConfig(stream=sys.stderr, level=level, format=fmt)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider request is noise
    install_log_redaction(redactor_for(os.environ))


def _serve() -> int:
    _log_to_stderr()
    from .server import create_server

    if sys.stdin.isatty():
        print("flux-klein-mcp is an MCP server: it talks JSON-RPC on stdin/stdout and is meant to be started by an "
              "MCP client (see the README). To see it work, run `flux-klein-mcp demo`. Ctrl-C quits.",
              file=sys.stderr)
    server = create_server()

    async def serve() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(shutdown.exit_on_sigterm)  # roll back the calls in flight, then exit
            await server.run_stdio_async()
            group.cancel_scope.cancel()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        return 130
    return 0


def _serve_http(host: str, port: int) -> int:
    _log_to_stderr()
    from .http_server import check_exposure, check_port_free, serve_http
    from .server import create_server

    try:
        settings = Settings.from_env()
        check_exposure(host, settings)
        check_port_free(host, port)
    except FluxKleinError as exc:
        return _failed(exc)
    try:
        serve_http(create_server(settings, remote=True), settings, host, port)
    except KeyboardInterrupt:
        return 130
    return 0


async def _one_call(args: argparse.Namespace) -> int:
    _log_to_stderr(logging.WARNING, "%(levelname)s %(message)s")
    redact = redactor_for(os.environ)
    try:
        env: dict[str, str] | None = None
        if args.output_dir is not None:
            env = {**os.environ, "FLUX_KLEIN_OUTPUT_DIR": str(args.output_dir)}
        settings = Settings.from_env(env)
        request = ImageRequest(
            args.command,
            args.prompt,
            aspect_ratio=args.aspect_ratio,
            n=getattr(args, "n", 1),
            seed=args.seed,
            tier=args.tier,
            filename=args.filename,
            provider=args.provider,
            image_refs=tuple(getattr(args, "image", None) or ()),
        )
        outcome = await _run_until_sigterm(request, settings, args.yes)
    except FluxKleinError as exc:
        print(f"flux-klein-mcp: {redact(str(exc), shapes=False)}", file=sys.stderr)
        return exc.exit_code
    if outcome is None:
        print("flux-klein-mcp: stopped by SIGTERM; nothing this call made was kept.", file=sys.stderr)
        return 128 + signal.SIGTERM
    _print_json(redact.value(outcome.summary(), shapes=False))
    return 0


async def _run_until_sigterm(request: ImageRequest, settings: Settings, yes: bool) -> pipeline.Outcome | None:
    """Consent (for the high tier), then the pipeline run; SIGTERM cancels it (and so rolls it back): None then."""
    ended: list[pipeline.Outcome | FluxKleinError] = []

    async def watch() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                group.cancel_scope.cancel()

    async with Runtime.open(settings) as runtime, anyio.create_task_group() as group:
        if sys.platform != "win32":
            group.start_soon(watch)
        try:  # caught in here: an error leaving a task group would come out wrapped in an ExceptionGroup
            consent = await _ask_on_the_terminal(request, runtime, given=yes)
            ended.append(await pipeline.run(request, runtime, report=_report, consent=consent))
        except FluxKleinError as exc:
            ended.append(exc)
        group.cancel_scope.cancel()
    if not ended:
        return None
    if isinstance(ended[0], FluxKleinError):
        raise ended[0]
    return ended[0]


async def _ask_on_the_terminal(request: ImageRequest, runtime: Runtime, given: bool) -> Consent | None:
    """The person's consent for a high-tier call: `--yes`, else a y/N question on the terminal (asked only when
    the budget leaves room), else none (the pipeline then refuses, exit 2)."""
    settings = runtime.settings
    if request.tier != "high" or settings.high_tier != "ask":
        return None
    try:
        provider = runtime.providers.choose(request.provider)
    except FluxKleinError:
        return None  # the pipeline reports it
    if not needs_consent(settings.high_tier, request.tier, provider.name):
        return None
    quote = pipeline.quote_for(provider, request.tier, request.n)
    await runtime.in_worker(runtime.spend.check, quote)
    if given:
        return Consent.GRANTED
    if not sys.stdin.isatty():
        return Consent.NOT_GIVEN
    print(f"{question(quote)} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    return Consent.GRANTED if answer.strip().lower() in ("y", "yes") else Consent.DECLINED


def _spend(as_json: bool, days: int) -> int:
    _log_to_stderr(logging.WARNING, "%(levelname)s %(message)s")  # a damaged ledger line is worth a warning
    settings = Settings.from_env()
    report = ledger_report(Ledger(settings.ledger), datetime.now().astimezone().date(), days)
    print(json.dumps(report, indent=2, allow_nan=False) if as_json else render_spend(report))
    return 0


async def _report(done: float, total: float, message: str) -> None:
    if sys.stderr.isatty():
        print(f"[{done:g}/{total:g}] {message}", file=sys.stderr)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, allow_nan=False))
