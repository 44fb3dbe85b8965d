"""One call of the pipeline from a terminal (`generate`, `edit`, `compose`), and the spend report.

Imported only when such a command runs (see `cli/__init__.py`), so `--help` stays as quick as a script.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from datetime import datetime

import anyio

from .. import pipeline
from ..config import Settings
from ..errors import FluxKleinError
from ..request import ImageRequest
from ..runtime import Runtime
from ..spend import Consent, LedgerError, consent_quote, open_ledger, question
from ..spend.budget import unusable
from ..spend.report import ledger_report
from ..spend.report import render as render_spend
from ..words import plural
from .output import OutputFailed, err, fail, failed, log_to_stderr, out, out_json


async def one_call(args: argparse.Namespace) -> int:
    log_to_stderr(logging.WARNING, "%(levelname)s %(message)s")
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
            output_format=args.output_format,
        )
        outcome = await _run_until_sigterm(request, settings, args.yes)
    except FluxKleinError as exc:
        return failed(exc)
    if outcome is None:
        return fail("stopped by SIGTERM; nothing this call made was kept.", 128 + signal.SIGTERM)
    try:
        out_json(outcome.summary())
    except OutputFailed as exc:  # paid for and kept: say where the images are, and fail
        paths = ", ".join(str(image.saved.path) for image in outcome.images)
        made = plural(len(outcome.images), "image")
        return fail(f"could not write the result ({exc}), but the call was made: {made} saved ({paths}), each "
                    "with its .json sidecar, and the charge is in the ledger (`flux-klein-mcp spend`).", 1)
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
    quote = await consent_quote(runtime, request.tier, request.n, request.provider)
    if quote is None:
        return None
    if given:
        return Consent.GRANTED
    stdin = sys.stdin
    if stdin is None or stdin.closed or not stdin.isatty():  # (a closed stdin is None: no one to ask)
        return Consent.NOT_GIVEN
    err(f"{question(quote)} [y/N] ", end="")
    answer = await anyio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
    return Consent.GRANTED if answer.strip().lower() in ("y", "yes") else Consent.DECLINED


def spend(as_json: bool, days: int, by: str | None = None, user: str | None = None) -> int:
    log_to_stderr(logging.WARNING, "%(levelname)s %(message)s")  # a damaged ledger line is worth a warning
    try:
        settings = Settings.from_env()
        ledger = open_ledger(settings.ledger, settings.timezone)
        try:
            report = ledger_report(ledger, datetime.now().astimezone(), days, by, user)
        finally:
            ledger.close()
    except FluxKleinError as exc:
        return failed(exc)
    except LedgerError as exc:
        return failed(unusable(exc))
    if as_json:
        out_json(report)
    else:
        out(render_spend(report))  # (model names come from the ledger: `out` shows control characters escaped)
    return 0


async def _report(done: float, total: float, message: str) -> None:
    if sys.stderr is not None and sys.stderr.isatty():
        err(f"[{done:g}/{total:g}] {message}")
