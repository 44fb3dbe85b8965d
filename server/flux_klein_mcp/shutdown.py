"""Stopping on SIGTERM the way a cancelled call stops: what the calls in flight saved is rolled back, then the
process exits at once.

MCP clients send SIGTERM when their shutdown grace runs out, often while a call is still saving; a plain exit there
would leave images the client never saw (and, killed mid-save, hidden temporary files). Each tool call or CLI run
is made `cancellable()`; `exit_on_sigterm()` cancels them all, waits (up to a grace period) for their rollbacks,
and ends the process. What a kill -9 leaves is swept at the next start (`store.sweep`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

import anyio

from .words import plural

log = logging.getLogger("flux_klein_mcp")

#: How long a shutdown waits for the calls in flight to roll back what they saved.
GRACE_S = 10.0

_active: set[anyio.CancelScope] = set()
_waiting: list[anyio.Event] = []  # set when the last call in flight has finished


@contextlib.contextmanager
def cancellable() -> Iterator[anyio.CancelScope]:
    """Run a call so that a shutdown can cancel it (its own cancellation handling then rolls back its files)."""
    with anyio.CancelScope() as scope:
        _active.add(scope)
        try:
            yield scope
        finally:
            _active.discard(scope)
            if not _active:
                for event in _waiting:
                    event.set()
                _waiting.clear()


async def cancel_all(grace_s: float = GRACE_S) -> None:
    """Cancel every call in flight and wait, at most `grace_s`, until each has rolled back."""
    if not _active:
        return
    done = anyio.Event()
    _waiting.append(done)
    for scope in list(_active):
        scope.cancel()
    with anyio.move_on_after(grace_s):
        await done.wait()


async def exit_on_sigterm(code: int = 0) -> None:
    """Wait for SIGTERM; then cancel the calls in flight, let them roll back, and exit the process.

    The exit is immediate (`os._exit`): the stdio transport may be blocked reading a stdin the client never
    closed, and nothing is left to clean up once the rollbacks are done.
    """
    if sys.platform == "win32":  # no SIGTERM delivery to handle there
        await anyio.sleep_forever()
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            busy = len(_active)
            await cancel_all()
            log.info("SIGTERM: %s in flight cancelled and rolled back; exiting", plural(busy, "call"))
            logging.shutdown()
            sys.stderr.flush()
            os._exit(code)
