"""The idle-connection attack: 300 peers (each from its own 127.x.y.z address, as different hosts would be) connect
and send nothing, and reconnect whenever the server drops them, while the server runs under a 256-file limit.
Legitimate calls must still succeed, each within 2 s. (Without the caps of remote/limits.py the server runs out of
descriptors, cannot accept, and these calls time out.)"""

from __future__ import annotations

import json
import resource
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from deployment.conftest import replica

PEERS = 300
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}}}
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2025-11-25"}


def address(n: int) -> str:
    return f"127.{10 + n // 250}.{n % 250}.{1 + n % 7}"


class Attack:
    """Idle connections from `addresses`, reopened as soon as the server closes one (with `reconnect`), until
    `stop()`."""

    def __init__(self, port: int, addresses: list[str], reconnect: bool = True) -> None:
        self.port = port
        self.reconnect = reconnect
        self.socks: dict[int, tuple[socket.socket, str]] = {}
        self.dropped = 0
        self._stop = threading.Event()
        for source in addresses:
            self._open(source)
        self._thread = threading.Thread(target=self._hold, daemon=True)
        self._thread.start()

    def _open(self, source: str) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((source, 0))
        try:
            sock.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass  # completes in the background (or not, while the server's backlog is full)
        self.socks[sock.fileno()] = (sock, source)

    def _hold(self) -> None:
        poller = select.poll()
        for fd in self.socks:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll(50):
                sock, source = self.socks.pop(fd)
                poller.unregister(fd)
                sock.close()
                self.dropped += 1
                if self.reconnect:
                    self._open(source)
                    poller.register(next(reversed(self.socks)), select.POLLIN)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock, _ in self.socks.values():
            sock.close()

    def held(self) -> int:
        """How many of the peers' connections the server holds open right now."""
        held = 0
        for sock, _ in list(self.socks.values()):  # (the holding thread changes the dict)
            try:
                held += _connected(sock) and not select.select([sock], [], [], 0)[0]
            except (OSError, ValueError):  # closed meanwhile
                pass
        return held


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


@contextmanager
def attack(port: int, addresses: list[str], reconnect: bool = True) -> Iterator[Attack]:
    peers = Attack(port, addresses, reconnect)
    try:
        yield peers
    finally:
        peers.stop()


@pytest.fixture(autouse=True)
def enough_files_for_the_attackers() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))


def timed_call(url: str) -> tuple[float, dict]:
    started = time.monotonic()
    answer = httpx.post(url, json=CALL, headers=HEADERS, timeout=2.0)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    message = json.loads(answer.text.split("data: ", 1)[1].splitlines()[0])
    return elapsed, message


def test_legitimate_calls_succeed_within_2_s_while_300_idle_peers_hold_connections(tmp_path, replica_env):
    env = {**replica_env, "FLUX_KLEIN_PROVIDER": "sandbox"}
    with replica(env, tmp_path, nofile=256) as server:
        port = int(server.address.rsplit(":", 1)[1])
        timed_call(server.url)  # the first call imports the pipeline: not what is measured
        with attack(port, [address(n) for n in range(PEERS)]) as peers:
            calls = [timed_call(server.url) for _ in range(5)]
            dropped = peers.dropped
    for elapsed, message in calls:
        assert message["result"]["isError"] is False, message
        assert elapsed < 2.0, f"a call took {elapsed:.2f} s under the attack"
    assert dropped > 0  # the server made room by closing idle peers (which came straight back)
    assert "out of system resource" not in server.log and "Too many open files" not in server.log


def test_one_address_holds_no_more_than_its_share(tmp_path, replica_env):
    env = {**replica_env, "FLUX_KLEIN_PROVIDER": "sandbox", "FLUX_KLEIN_HTTP_PEER_CONNECTIONS": "8"}
    with replica(env, tmp_path, nofile=256) as server:
        port = int(server.address.rsplit(":", 1)[1])
        with attack(port, ["127.20.0.1"] * 40, reconnect=False) as greedy:
            deadline = time.monotonic() + 30
            while greedy.dropped < 32 and time.monotonic() < deadline:  # the server closes its oldest idle ones
                time.sleep(0.05)
            timed_call(server.url)  # from 127.0.0.1: its own share
            held = greedy.held()
    assert greedy.dropped == 32 and held == 8
