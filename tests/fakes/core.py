"""What every fake provider shares: recorded requests, scripted answers and faults, and two ways to serve them.

A fake is a plain object with `handle(Incoming) -> Answer | Fault`. `mock_transport(fake)` serves it in-process
through `httpx.MockTransport`; `Loopback(fake)` serves it on a real socket on 127.0.0.1, where faults are real
(a reset is a TCP RST, a hang holds the connection open until the client goes away).
"""

from __future__ import annotations

import enum
import functools
import io
import json
import select
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
from PIL import Image


class Fault(enum.Enum):
    HANG = "hang"  # never answer; wait until the client gives up
    RESET = "reset"  # drop the connection with a TCP reset
    TRUNCATE = "truncate"  # promise a body, send part of it, close


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: dict[str, str] | None = None) -> Answer:
        return cls(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class Incoming:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Behaviour = Answer | Fault | Callable[[Incoming], "Answer | Fault"]


@functools.lru_cache(maxsize=64)
def png(width: int, height: int, colour: tuple[int, int, int] = (200, 80, 40), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), colour if mode == "RGB" else (*colour, 255)).save(out, "PNG")
    return out.getvalue()


class FakeBase:
    """Records every request; answers from a script first, then with the fake's own strict behaviour."""

    def __init__(self) -> None:
        self.requests: list[Incoming] = []
        self.script: deque[Behaviour] = deque()
        self.disconnects = 0
        self.disconnected = threading.Event()  # set whenever a client abandons a hanging request
        self.arrived = threading.Event()  # set whenever a request comes in
        self._lock = threading.Lock()
        self.release = threading.Event()  # set to end every hang

    def then(self, *behaviours: Behaviour) -> FakeBase:
        """Answer the next scripted requests (see `scripted_paths`) with these, in order."""
        self.script.extend(behaviours)
        return self

    def scripted_paths(self) -> tuple[str, ...]:
        """Which request paths consume the script (the generation endpoints)."""
        raise NotImplementedError

    def respond(self, incoming: Incoming) -> Answer | Fault:
        raise NotImplementedError

    def handle(self, incoming: Incoming) -> Answer | Fault:
        with self._lock:
            self.requests.append(incoming)
            self.arrived.set()
            scripted = None
            if self.script and incoming.path.endswith(self.scripted_paths()):
                scripted = self.script.popleft()
        if scripted is None:
            return self.respond(incoming)
        if callable(scripted) and not isinstance(scripted, Fault):
            return scripted(incoming)
        return scripted

    def count(self, suffix: str) -> int:
        return sum(1 for r in self.requests if r.path.endswith(suffix))


def mock_transport(fake: FakeBase | dict[str, FakeBase]) -> httpx.MockTransport:
    """Serve one fake for every host, or a fake per host name ({host: fake}); other hosts refuse to connect."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if isinstance(fake, dict):
            if request.url.host not in fake:
                raise httpx.ConnectError("connection refused", request=request)
            return await _answer(fake[request.url.host], request, body)
        return await _answer(fake, request, body)

    return httpx.MockTransport(handler)


async def _answer(fake: FakeBase, request: httpx.Request, body: bytes) -> httpx.Response:
    incoming = Incoming(request.method, request.url.raw_path.decode().split("?")[0],
                        {k.lower(): v for k, v in request.headers.items()}, body)
    answer = fake.handle(incoming)
    if answer is Fault.HANG:
        try:
            await anyio.sleep_forever()
        finally:
            fake.disconnects += 1
            fake.disconnected.set()
    if answer is Fault.RESET:
        raise httpx.ReadError("connection reset by peer", request=request)
    if answer is Fault.TRUNCATE:
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                        request=request)
    assert isinstance(answer, Answer)
    return httpx.Response(answer.status, content=answer.body, headers=answer.headers)


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 resets connections when dozens arrive at once (the load test opens 64).
    request_queue_size = 256
    daemon_threads = True


class Loopback:
    """Serves a fake on 127.0.0.1 on a free port, one thread per connection, until `close()`."""

    def __init__(self, fake: FakeBase) -> None:
        self.fake = fake
        handler = _handler_for(fake)
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if hasattr(fake, "public_url"):
            fake.public_url = self.url  # URL replies point back at this server
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.fake.release.set()
        self._server.shutdown()
        self._server.server_close()


def _handler_for(fake: FakeBase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            incoming = Incoming(self.command, self.path.split("?")[0],
                                {k.lower(): v for k, v in self.headers.items()}, body)
            answer = fake.handle(incoming)
            if answer is Fault.HANG:
                self._hang()
                return
            if answer is Fault.RESET:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True
                return
            if answer is Fault.TRUNCATE:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b'{"id": "gen-trunc", "choices": [')
                self.wfile.flush()
                self.close_connection = True
                return
            assert isinstance(answer, Answer)
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def _hang(self) -> None:
            """Hold the request until the client closes the connection (counted) or the fake is released."""
            while not fake.release.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable:
                    try:
                        if not self.connection.recv(1, socket.MSG_PEEK):
                            break
                    except OSError:
                        break
            else:
                self.close_connection = True
                return
            fake.disconnects += 1
            fake.disconnected.set()
            self.close_connection = True

        do_GET = do_POST = _serve

    return Handler
