"""Idle or slow peers cannot starve the server: connection caps and read timeouts, in front of uvicorn.

Every open connection holds a file descriptor, and a peer that connects and sends nothing costs nothing to keep
open. Three hundred of them under a 256-file limit would leave none for real clients (nor for the files and the
provider's connections a call needs). So, for each connection, uvicorn's HTTP protocol (h11) is wrapped by
`GuardedProtocol`, which reports to one `Guard`:

- a cap on connections in all (`max_connections`, kept well inside the open-file limit) and per client address
  (`per_peer`). At a cap, the connection that has kept the server waiting longest (for a request's headers, or in
  the middle of its body) is closed to make room - never one whose request is being served. When every
  connection is busy the new one is refused in our words (503, or 429 for one address over its share).
- a read timeout: a client has `read_timeout_s` to send a request's headers (in all: a byte at a time does not
  extend it) and may pause that long at most in its body; then it gets a 408 in our words and is closed.
- connections are accepted a few at a time (so one burst cannot take more descriptors than were kept free), from a
  long queue in the kernel (where waiting costs no descriptor, and a client's connection is not dropped while
  idle peers reconnect as fast as they are closed).

Behind a reverse proxy every connection comes from the proxy: there FLUX_KLEIN_HTTP_PEER_CONNECTIONS=0 leaves the
per-client cap to the proxy (docs/remote.md shows its settings).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("flux_klein_mcp.http")

#: Descriptors kept for the server's own use (its listening socket, the event loop, logs, the ledger, output
#: files), besides a provider connection for each call in flight, which the cap leaves room for.
RESERVED_FDS = 64
DEFAULT_MAX_CONNECTIONS = 1000
#: How long a refused peer is given to read the refusal before its connection is closed.
LINGER_S = 2.0
#: Connections the kernel may hold for the server before it accepts them (the system caps it: somaxconn).
QUEUE = 4096


@dataclass(frozen=True)
class Limits:
    max_connections: int
    per_peer: int  # 0: no cap per address
    read_timeout_s: float
    backlog: int


def limits_for(configured_max: int | None, per_peer: int, read_timeout_s: float) -> Limits:
    """The caps this process can keep: its open-file limit is raised as far as allowed, then shared out."""
    soft = _raise_open_file_limit()
    backlog = max(16, min(128, soft // 8))
    # Each connection being served may need a second descriptor (its call's connection to the provider).
    room = max(4, (soft - RESERVED_FDS - backlog) // 2)
    wanted = configured_max or DEFAULT_MAX_CONNECTIONS
    if configured_max is not None and configured_max > room:
        log.warning("FLUX_KLEIN_HTTP_MAX_CONNECTIONS=%d does not fit the open-file limit (ulimit -n %d): %d instead",
                    configured_max, soft, room)
    return Limits(min(wanted, room), per_peer, read_timeout_s, backlog)


def _raise_open_file_limit() -> int:
    try:
        import resource
    except ImportError:  # Windows: no such limit to share out
        return 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(target, 65536), hard))
        except (OSError, ValueError):
            pass
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 65536 if soft == resource.RLIM_INFINITY else int(soft)


def _refusal(status: int, reason: str, message: str, retry: bool) -> bytes:
    body = json.dumps({"error": reason, "message": message}).encode()
    headers = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
               "connection: close"] + (["retry-after: 2"] if retry else [])
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


class Guard:
    """The connections of one server, and the caps and timeouts they are held to."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.open: dict[GuardedProtocol, None] = {}  # (insertion-ordered: oldest first)
        self.per_peer: Counter[str] = Counter()
        self._sweeping: asyncio.TimerHandle | None = None

    def admit(self, conn: GuardedProtocol) -> bytes | None:
        """Count a new connection, making room if a cap is reached; a refusal to send when there is none."""
        cap = self.limits.per_peer
        if cap and self.per_peer[conn.peer] >= cap and not self._evict(lambda c: c.peer == conn.peer):
            log.warning("Refused a connection from %s: it already holds %d (FLUX_KLEIN_HTTP_PEER_CONNECTIONS)",
                        conn.peer, cap)
            return _refusal(429, "Too Many Requests", f"Too many connections from your address ({cap} are open). "
                            "Close idle connections or wait for your requests to finish, then try again.", True)
        if len(self.open) >= self.limits.max_connections and not self._evict(lambda c: True):
            log.warning("Refused a connection: all %d are serving requests (FLUX_KLEIN_HTTP_MAX_CONNECTIONS)",
                        self.limits.max_connections)
            return _refusal(503, "Service Unavailable", "The server is busy: every connection it can hold is serving "
                            "a request. Try again in a few seconds.", True)
        self.open[conn] = None
        self.per_peer[conn.peer] += 1
        self._sweep_later(conn.loop)
        return None

    def release(self, conn: GuardedProtocol) -> None:
        if self.open.pop(conn, False) is None:
            self.per_peer[conn.peer] -= 1
            if not self.per_peer[conn.peer]:
                del self.per_peer[conn.peer]

    def _evict(self, among: Callable[[GuardedProtocol], bool]) -> bool:
        """Close the connection that has kept the server waiting longest (none that is being served)."""
        waiting = [c for c in self.open if c.waiting_since is not None and among(c)]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.served > 0, c.waiting_since))
        victim.close_quietly()
        self.release(victim)
        return True

    def _sweep_later(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeping is None:
            self._sweeping = loop.call_later(min(1.0, self.limits.read_timeout_s / 4), self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeping = None
        now = self.clock()
        for conn in list(self.open):
            conn.check_timeouts(now)
        if self.open:
            self._sweep_later(loop)


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol, reporting to a `Guard` (bound by `guarded_protocol`)."""

    guard: ClassVar[Guard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else "unknown"
        #: Since when the server has been waiting on this peer (headers, or more body); None while serving it.
        self.waiting_since: float | None = self.guard.clock()
        self.served = 0
        self.refused_at: float | None = None
        refusal = self.guard.admit(self)
        if refusal is not None:
            self.refused_at = self.guard.clock()
            self.waiting_since = None
            transport.write(refusal)
            if transport.can_write_eof():
                transport.write_eof()  # then read what the peer sent until it closes, so it sees the refusal
            else:
                transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refused_at is not None:
            return  # a refused peer's request, read only so that closing does not reset the refusal away
        super().data_received(data)
        their = self.conn.their_state
        if their is h11.SEND_BODY:
            self.waiting_since = self.guard.clock()  # the body is moving: its pause timer starts again
        elif their is not h11.IDLE:
            self.waiting_since = None  # the whole request is in: serving it

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.served += 1
        self.waiting_since = self.guard.clock()  # waiting for the next request (keep-alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.release(self)
        super().connection_lost(exc)

    def close_quietly(self) -> None:
        """Make room: this connection has kept the server waiting longest."""
        if not self.transport.is_closing():
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        if self.transport.is_closing():
            return
        if self.refused_at is not None:
            if now - self.refused_at >= LINGER_S:
                self.transport.close()
            return
        allowed = self.guard.limits.read_timeout_s
        # (A body uvicorn stopped reading, because the server is slow to take it, is not the peer's pause.)
        if self.waiting_since is None or self.flow.read_paused or now - self.waiting_since < allowed:
            return
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            what = "the next request's headers" if self.served else "a request's headers"
            self.transport.write(_refusal(408, "Request Timeout", f"The server waited {allowed:g} s for {what} and "
                                          "closed the connection. Send each request whole, without pauses.", False))
        self.transport.close()


def guarded_protocol(guard: Guard) -> type[GuardedProtocol]:
    """The protocol class uvicorn is given (`http=`), bound to `guard`."""
    return type("GuardedH11Protocol", (GuardedProtocol,), {"guard": guard})


def run(app: Any, host: str, port: int, limits: Limits, **options: Any) -> None:
    """uvicorn, serving `app` under `limits` (until a signal stops it)."""
    import uvicorn

    class QueuedServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # asyncio accepts `backlog` connections per wake-up and listens with the same number: the kernel's
            # queue is lengthened again after it, so that only the accepting stays short.
            for server in getattr(self, "servers", []):
                for listening in server.sockets:
                    with socket.socket(fileno=os.dup(listening.fileno())) as view:
                        view.listen(QUEUE)

    config = uvicorn.Config(app, host=host, port=port, http=guarded_protocol(Guard(limits)), backlog=limits.backlog,
                            ws="none", h11_max_incomplete_event_size=16 * 1024, **options)
    server = QueuedServer(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # (as uvicorn.run: it could not start, and said why)
