"""The command line's one exit: everything it prints goes through here, and leaves

- in the person's words (`words.for_cli`), with the server's secrets scrubbed (`redact`);
- with terminal control characters (escape sequences, carriage returns, bidi overrides, lone surrogates) shown as
  visible escapes: text from a provider, a sidecar or the ledger cannot recolour the terminal, move the cursor or
  hide what follows it;
- or, when stdout cannot take it (closed, a broken pipe, a full disk), as `OutputFailed`, which `main` turns into
  one sentence and exit code 1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from ..config import redactor_for
from ..errors import FluxKleinError
from ..redact import Redactor
from ..words import for_cli, rendered

PROGRAM = "flux-klein-mcp"
BROKEN_PIPE = "the program reading it stopped reading"
# C0 and C1 controls but the line feed, the bidi controls (they reorder what follows), lone surrogates (unprintable).
_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class OutputFailed(Exception):
    """Standard output could not take what the command printed; `str()` says why, in a few words."""


@functools.cache
def _secrets() -> Redactor:
    return redactor_for(os.environ)


def visible(text: str) -> str:
    """`text` with every control character spelled as an escape (`\\x1b`, `\\u202e`)."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def clean(text: str) -> str:
    """What the person may see of `text`."""
    return visible(_secrets()(for_cli(text)))


def out(text: str) -> None:
    """A line (or lines) on stdout, written at once so a failure is known now, not at exit."""
    _write(clean(text))


def out_json(value: Any) -> None:
    """A JSON value on stdout (its encoder escapes control characters itself)."""
    _write(json.dumps(_secrets().value(rendered(value, for_cli)), indent=2, allow_nan=False))


def _write(text: str) -> None:
    stream = sys.stdout
    if stream is None:
        raise OutputFailed("standard output is closed")
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputFailed(BROKEN_PIPE) from None
    except (OSError, ValueError) as exc:  # (a full disk; ValueError: a stream closed by the program itself)
        silence_stdout()
        raise OutputFailed(getattr(exc, "strerror", None) or str(exc)) from None


def silence_stdout() -> None:
    """Point stdout at the null device: what is still buffered must not fail again at exit (the interpreter would
    print "Exception ignored" and exit 120)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def err(text: str, end: str = "\n") -> None:
    """Text on stderr; nothing when stderr is closed or broken (there is nowhere else to say it)."""
    try:
        if sys.stderr is not None:
            sys.stderr.write(clean(text) + end)
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def fail(message: str, code: int) -> int:
    """One sentence on stderr, naming the program; returns the exit code."""
    err(f"{PROGRAM}: {message}")
    return code


def failed(exc: FluxKleinError) -> int:
    """An error's message for the person, and its exit code."""
    return fail(exc.raw, exc.exit_code)


def log_to_stderr(level: int = logging.INFO, fmt: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    """Logs on stderr (on stdio, stdout carries the protocol), cleaned like everything else printed."""
    logging.basicConfig(stream=sys.stderr, level=level, format=fmt)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider request is noise
    clean_logs(clean)


class CleaningFilter(logging.Filter):
    """Cleans a log record's message and traceback (`clean`) before any handler writes them."""

    def __init__(self, clean: Callable[[str], str]) -> None:
        super().__init__()
        self._clean = clean
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._clean(record.getMessage()), None
        if record.exc_info:
            record.exc_text = self._clean(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


def clean_logs(clean: Callable[[str], str]) -> None:
    """Put the filter on every handler of the root logger (a filter on a logger misses its children's records)."""
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, CleaningFilter)]
        handler.addFilter(CleaningFilter(clean))
