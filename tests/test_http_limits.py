"""`serve --http` cannot be starved by peers that connect and send nothing (or dribble): a read timeout, caps on
connections in all and per client address, and refusals in our words. (The full attack - 300 idle peers under a
256-file limit - is in deployment/test_idle.py, `make test-http`.)"""

from __future__ import annotations

import json
import socket
import threading

import httpx

from tests.test_http import LIST_TOOLS, MCP_HEADERS, http_server


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def idle(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.settimeout(30)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_peer_that_never_finishes_its_headers_is_told_and_closed(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, FLUX_KLEIN_HTTP_READ_TIMEOUT_S="0.5", **env) as url:
        silent, dribbling = idle(port_of(url)), idle(port_of(url))
        dribbling.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no more
        answers = [read_all(silent), read_all(dribbling)]
        assert httpx.post(url, json=LIST_TOOLS, headers=MCP_HEADERS).status_code == 200  # others are served
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert "waited 0.5 s for a request's headers" in json.loads(body)["message"]


def test_a_body_that_stops_arriving_is_not_waited_for(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, FLUX_KLEIN_HTTP_READ_TIMEOUT_S="0.5", **env) as url:
        stalled = idle(port_of(url))
        stalled.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\"")
        read_all(stalled)  # returns once the server closes the connection
        assert httpx.post(url, json=LIST_TOOLS, headers=MCP_HEADERS).status_code == 200
    assert fake.requests == []


def test_at_the_cap_the_longest_idle_connection_makes_room(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, FLUX_KLEIN_HTTP_MAX_CONNECTIONS="4", **env) as url:
        idlers = [idle(port_of(url)) for _ in range(4)]
        answer = httpx.post(url, json=LIST_TOOLS, headers=MCP_HEADERS, timeout=10)
        oldest = read_all(idlers[0])  # closed to make room (without a word: it never asked for anything)
    assert answer.status_code == 200 and oldest == b""


def test_a_peer_over_its_share_while_all_its_connections_are_busy_is_refused_in_our_words(workdir, openrouter):
    fake, env = openrouter
    release = threading.Event()

    def slow(incoming):
        release.wait(20)
        return fake.respond(incoming)

    fake.then(slow)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "generate_image", "arguments": {"prompt": "a fox"}}}
    with http_server(workdir, FLUX_KLEIN_HTTP_PEER_CONNECTIONS="1", **env) as url:
        busy = threading.Thread(target=lambda: httpx.post(url, json=call, headers=MCP_HEADERS, timeout=30))
        busy.start()
        try:
            assert fake.arrived.wait(20)  # its one connection is serving a call
            refused = httpx.post(url, json=LIST_TOOLS, headers=MCP_HEADERS, timeout=10)
            other = idle(port_of(url), "127.0.0.2")  # another address has its own share
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            served = read_all(other)
        finally:
            release.set()
            busy.join(30)
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert "Too many connections from your address" in refused.json()["message"]
    assert served.startswith(b"HTTP/1.1 200")
