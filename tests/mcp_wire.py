"""MCP over streamable HTTP by hand, for what real clients do not let a test do: send one request to a chosen
server, replay an answer, answer a question through another replica. Both protocol generations:

- 2025 revisions: `initialize` hands out a session id; a tool call's response stream may carry a question
  (`elicitation/create`), which is answered by a separate POST.
- 2026-07-28: every request carries the client's name and capabilities; a question comes back as an
  `input_required` result, answered by sending the call again with `inputResponses` and the sealed `requestState`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

ACCEPT = "application/json, text/event-stream"
ELICITATION = {"elicitation": {}}
APPROVE = {"action": "accept", "content": {"approve": True}}


def messages(text: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE body (or a plain JSON one)."""
    if not text.lstrip().startswith(("event:", "data:", "id:", ":")):
        return [json.loads(text)] if text.strip() else []
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]


def result_of(text: str, request_id: Any) -> dict[str, Any]:
    found = [m for m in messages(text) if m.get("id") == request_id and "method" not in m]
    assert found, text[:2000]
    return found[-1]


def call(name: str, arguments: dict[str, Any], request_id: Any = 1, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments, **params}}


class Legacy:
    """A 2025-era client: `initialize` once, then requests carrying the session id."""

    def __init__(self, http: httpx.Client, version: str = "2025-06-18", token: str | None = None) -> None:
        self.http = http
        self.version = version
        self.session: str | None = None
        self.auth = {"authorization": f"Bearer {token}"} if token else {}

    def headers(self, session: bool = True) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": ACCEPT, **self.auth}
        if self.session is not None and session:
            headers |= {"mcp-session-id": self.session, "mcp-protocol-version": self.version}
        return headers

    def initialize(self, url: str, name: str = "mcp", version: str = "0.1.0",
                   capabilities: dict[str, Any] | None = None, *, old_session: bool = False) -> httpx.Response:
        """`initialize` (with `old_session`, still sending the session id it had)."""
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": self.version, "capabilities": capabilities or {},
            "clientInfo": {"name": name, "version": version}}}
        answer = self.http.post(url, json=body, headers=self.headers(session=old_session))
        self.session = answer.headers.get("mcp-session-id")
        self.http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers())
        return answer

    def post(self, url: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(url, json=body, headers=self.headers())

    @contextmanager
    def stream(self, url: str, body: dict[str, Any]) -> Iterator[Iterator[dict[str, Any]]]:
        """The messages of a call's response stream as they arrive (questions before the result)."""
        with self.http.stream("POST", url, json=body, headers=self.headers()) as response:
            assert response.status_code == 200, response.read()

            def each() -> Iterator[dict[str, Any]]:
                for line in response.iter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        yield json.loads(line[5:])

            yield each()


class Modern:
    """A 2026-07-28 client: no session, its name and capabilities in every request."""

    VERSION = "2026-07-28"

    def __init__(self, http: httpx.Client, capabilities: dict[str, Any] | None = None, name: str = "raw-client",
                 token: str | None = None) -> None:
        self.http = http
        self.meta = {"io.modelcontextprotocol/clientInfo": {"name": name, "version": "1"},
                     "io.modelcontextprotocol/clientCapabilities": capabilities or {},
                     "io.modelcontextprotocol/protocolVersion": self.VERSION}
        self.auth = {"authorization": f"Bearer {token}"} if token else {}

    def post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        params = {**body["params"], "_meta": self.meta}
        headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": self.VERSION,
                   "mcp-method": body["method"], "mcp-name": params["name"], **self.auth}
        answer = self.http.post(url, json={**body, "params": params}, headers=headers)
        assert answer.status_code in (200, 400), answer.text  # (a JSON-RPC error comes as a 400)
        return result_of(answer.text, body["id"])
