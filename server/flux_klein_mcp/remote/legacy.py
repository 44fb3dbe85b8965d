"""The SDK's stateless session manager, made to remember 2025-era clients (see sessions.py) and to ask them mid-call
(see asking.py).

Requests on the 2026-07-28 protocol carry everything in each request and never reach this code (the SDK routes
them by their protocol header). For the others, one hook of the SDK's manager is replaced: how a stateless request
is served. What changes from the SDK's own:
- `initialize` is answered with an `Mcp-Session-Id` recording what the client declared;
- a request carrying one is served knowing that (its name, its capabilities), and a tool call gets an `Asker` for
  questions to its client; a session id this server did not seal (or too old) is answered 404;
- a POSTed answer to one of our questions is handed to `Answers` (202), whichever replica asked it.
Everything else - the transport, the dispatcher, the handlers - is the SDK's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskStatus
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, authorization_context
from mcp.server.connection import Connection
from mcp.server.lowlevel.server import Server
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import DEFAULT_NEGOTIATED_VERSION
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .asking import ASKER, MAX_ANSWER_BYTES, Answers, Asker, question_key
from .sessions import SessionRecord, Sessions
from .shared import SharedStateError

log = logging.getLogger("flux_klein_mcp.http")

#: Bodies are looked into (for `initialize` and for answers) only up to this size; a tool call may be 4 MiB.
_PEEK_BYTES = 64 * 1024
UNKNOWN_SESSION = (
    "This session id was not issued by this server, or has expired: initialize a new session. (Replicas behind one "
    "address must share FLUX_KLEIN_HTTP_SECRET, or each rejects the sessions the others issued.)")


class RememberingSessionManager(StreamableHTTPSessionManager):
    def __init__(self, app: Server[Any], *, sessions: Sessions, answers: Answers,
                 security_settings: TransportSecuritySettings | None) -> None:
        super().__init__(app, stateless=True, security_settings=security_settings)
        self.sessions = sessions
        self.answers = answers
        self._unknown_logged = False

    async def _handle_stateless_request(self, protocol_version_hint: str | None, scope: Scope, receive: Receive,
                                        send: Send) -> None:
        token = Request(scope).headers.get(MCP_SESSION_ID_HEADER)
        if scope["method"] != "POST":  # (DELETE: the SDK answers that a stateless server has no session to end)
            await super()._handle_stateless_request(protocol_version_hint, scope, receive, send)
            return
        refusal = await TransportSecurityMiddleware(self.security_settings).validate_request(Request(scope, receive))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        message = _peek(body)
        receive = _replay(body, receive)
        owner = owner_of(scope)
        if isinstance(message, Mapping) and message.get("method") == "initialize":
            issued = self.sessions.issue(message.get("params"), owner)
            # A new session, even for a client that still sends its old id (the transport would call it a mismatch).
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != MCP_SESSION_ID_HEADER.encode()]}
            await self._serve(protocol_version_hint, None, issued, scope, receive, send)
            return
        record = self.sessions.open(token, owner) if token is not None else None
        if token is not None and record is None:
            self._log_unknown()
            await _error(404, UNKNOWN_SESSION)(scope, receive, send)
            return
        key = question_key(message)
        if record is not None and key is not None and len(body) <= MAX_ANSWER_BYTES:
            assert isinstance(message, Mapping)
            try:
                await self.answers.deliver(key, record.digest, message)
            except SharedStateError as exc:  # the asking replica cannot be reached: the client may answer again
                log.warning("Could not pass an answer on to the replica that asked: %s", exc)
                await _error(503, "The server could not pass this answer on; send it again.")(scope, receive, send)
                return
            await Response(status_code=202)(scope, receive, send)
            return
        await self._serve(protocol_version_hint, record, None, scope, receive, send)

    async def _serve(self, protocol_version_hint: str | None, record: SessionRecord | None, issued: str | None,
                     scope: Scope, receive: Receive, send: Send) -> None:
        """The SDK's stateless serving, with the client's record behind the connection (and `issued` as the
        session id of an `initialize` answer)."""
        transport = StreamableHTTPServerTransport(mcp_session_id=issued, is_json_response_enabled=self.json_response,
                                                  event_store=None, security_settings=self.security_settings)

        async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            async with transport.connect() as (read_stream, write_stream):
                if record is not None:
                    scope.setdefault("state", {})[ASKER] = Asker(write_stream, record.digest, self.answers)
                task_status.started()
                # The SDK's own questions stay refused (`can_send_request=False`): ours go through the Asker.
                dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                    read_stream, write_stream, inline_methods=frozenset({"initialize"}),
                    transport_builder=lambda _md: TransportContext(kind="streamable-http", can_send_request=False))
                if record is not None:
                    connection = record.connection(protocol_version_hint)
                else:
                    connection = Connection.from_envelope(protocol_version_hint or DEFAULT_NEGOTIATED_VERSION, None,
                                                          None)
                try:
                    await serve_connection(self.app, dispatcher, connection=connection,
                                           lifespan_state=self._lifespan_state)
                except Exception:
                    log.exception("A stateless request crashed")

        assert self._task_group is not None
        try:
            await self._task_group.start(run)
            await transport.handle_request(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await transport.terminate()

    def _log_unknown(self) -> None:
        if not self._unknown_logged:  # once: a client retrying with it would fill the log
            self._unknown_logged = True
            log.warning("A client sent a session id this server cannot open (sealed under another "
                        "FLUX_KLEIN_HTTP_SECRET, altered, or expired); it was told to start a new session")


def owner_of(scope: Scope) -> str | None:
    """Who a session belongs to when people sign in: the SDK's principal (client, issuer, subject) of the request's
    token, as a digest; None without sign-in."""
    user = scope.get("user")
    if not isinstance(user, AuthenticatedUser):
        return None
    principal = json.dumps(authorization_context(user), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()[:32]


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over the body already read, then waits on the client as before (for disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _peek(body: bytes) -> Any:
    if len(body) > _PEEK_BYTES:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None  # the SDK answers it


def _error(status: int, message: str) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}
    return Response(json.dumps(body), status_code=status, media_type="application/json")
