"""Asking a 2025-era client mid-call over HTTP, and getting its answer back whichever replica it reaches.

Before 2026-07-28 the server asks (elicitation) with a JSON-RPC request of its own, written on the response stream
of the `tools/call` POST, and the client answers with a new POST. The SDK's stateless mode refuses such questions,
because that POST lands on a fresh transport (or on another replica) where nothing waits for it. Here:

- `Asker` writes the question on the call's own stream, under an id nobody can guess (`QUESTION_PREFIX` + 128
  random bits), and waits for the answer.
- Whatever replica the answer POST reaches hands it to `Answers.deliver`: straight to the waiting call when that is
  in this process, else into the shared state, where the asking replica looks for it a few times a second.

An answer is taken only from the session the question was asked in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import anyio.to_thread
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp.types import JSONRPCRequest, RequestId

from .shared import Shared

log = logging.getLogger("flux_klein_mcp.http")

QUESTION_PREFIX = "flux-klein-q-"
_QUESTION_ID = re.compile(re.escape(QUESTION_PREFIX) + r"[A-Za-z0-9_-]{22}")
#: How long a question waits for the person (the same as a 2026-07-28 round is valid for).
ASK_TIMEOUT_S = 600.0
#: How often a waiting replica looks for an answer another replica received.
POLL_S = 0.25
#: Where a tool call finds the `Asker` for its client (in the ASGI scope's state, which its request carries).
ASKER = "flux_klein_asker"
#: An answer is a small form: anything larger is not one of ours.
MAX_ANSWER_BYTES = 16 * 1024


def question_key(message: Any) -> str | None:
    """The key of one of our questions that a POSTed JSON-RPC message answers, or None."""
    if not isinstance(message, Mapping) or "method" in message or not ("result" in message or "error" in message):
        return None
    qid = message.get("id")
    return qid[len(QUESTION_PREFIX):] if isinstance(qid, str) and _QUESTION_ID.fullmatch(qid) else None


@dataclass
class _Waiting:
    session: str
    arrived: anyio.Event = field(default_factory=anyio.Event)
    answer: dict[str, Any] | None = None


class Answers:
    """The answers to this process's questions, however they come back."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._waiting: dict[str, _Waiting] = {}

    async def deliver(self, key: str, session: str, message: Mapping[str, Any]) -> None:
        """An answer POSTed to this replica, for the call that asked (here or elsewhere)."""
        waiting = self._waiting.get(key)
        if waiting is not None:
            if waiting.session == session and waiting.answer is None:
                waiting.answer = dict(message)
                waiting.arrived.set()
            return
        value = json.dumps({"session": session, "message": message})
        if len(value) <= MAX_ANSWER_BYTES:
            await anyio.to_thread.run_sync(self._shared.post, key, value, time.time() + ASK_TIMEOUT_S)

    @contextlib.asynccontextmanager
    async def expecting(self, key: str, session: str) -> AsyncIterator[_Waiting]:
        """Listen for the answer to question `key` (before asking it: an answer may come back at once)."""
        waiting = self._waiting[key] = _Waiting(session)
        try:
            yield waiting
        finally:
            del self._waiting[key]

    async def wait(self, key: str, waiting: _Waiting, timeout_s: float) -> dict[str, Any] | None:
        """The client's JSON-RPC answer, or None when none came in time."""
        with anyio.move_on_after(timeout_s):
            while waiting.answer is None:
                with anyio.move_on_after(POLL_S):
                    await waiting.arrived.wait()
                if waiting.answer is None:
                    waiting.answer = await self._from_elsewhere(key, waiting.session)
        return waiting.answer

    async def _from_elsewhere(self, key: str, session: str) -> dict[str, Any] | None:
        try:
            value = await anyio.to_thread.run_sync(self._shared.take, key)
        except Exception as exc:  # (the shared state is unreadable for now: look again at the next poll)
            log.warning("Could not look for an answer in the shared state: %s", exc)
            return None
        record = json.loads(value) if value is not None else None
        if not isinstance(record, dict) or record.get("session") != session or not isinstance(record["message"], dict):
            return None
        return dict(record["message"])


class MessageStream(Protocol):
    """The write side of the SDK transport's streams (what `StreamableHTTPServerTransport.connect` yields)."""

    async def send(self, item: SessionMessage, /) -> None: ...


class Asker:
    """Asks the client of one 2025-era `tools/call` over that call's response stream."""

    def __init__(self, stream: MessageStream, session: str, answers: Answers) -> None:
        self._stream = stream
        self._session = session
        self._answers = answers

    async def ask(self, call_id: RequestId, method: str, params: Mapping[str, Any],
                  timeout_s: float = ASK_TIMEOUT_S) -> dict[str, Any] | None:
        """The client's JSON-RPC answer (a `result` or an `error`), or None when it did not answer in time."""
        key = secrets.token_urlsafe(16)
        question = JSONRPCRequest(jsonrpc="2.0", id=QUESTION_PREFIX + key, method=method, params=dict(params))
        async with self._answers.expecting(key, self._session) as waiting:
            on_the_call = ServerMessageMetadata(related_request_id=call_id)  # (its POST's response stream)
            await self._stream.send(SessionMessage(question, metadata=on_the_call))
            return await self._answers.wait(key, waiting, timeout_s)


def asker_for(request: Any) -> Asker | None:
    """The `Asker` of the HTTP request a tool call arrived in (2025-era clients with a session only)."""
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    asker = state.get(ASKER) if isinstance(state, dict) else None
    return asker if isinstance(asker, Asker) else None
