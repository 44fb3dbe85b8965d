"""The stdio transport's one gap: a line that is not a JSON-RPC message is answered, not dropped.

The SDK's stdio reader hands such a line on as an exception, and its dispatcher drops it with a debug log, so a
client that sent, say, a lone UTF-16 surrogate (`"\\ud800"`, which JSON text cannot carry) waits forever for an
answer. JSON-RPC 2.0 says what to answer instead: -32700 (parse error) for text that is not valid JSON, -32600
(invalid request) for JSON that is not a request; with the request's id when it can still be read, else null. A
notification, or a response the client sent back, is never answered (the spec forbids it): it is logged.
"""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, ErrorData, JSONRPCError
from pydantic import ValidationError

log = logging.getLogger("flux_klein_mcp")


class AnsweringUnreadable:
    """The stdio read stream, with every unreadable line answered on the write stream."""

    def __init__(self, read: Any, write: Any) -> None:
        self._read = read
        self._write = write

    @property
    def last_context(self) -> Any:  # (the SDK reads the sender's context from here)
        return getattr(self._read, "last_context", None)

    async def receive(self) -> SessionMessage:
        while True:
            item = await self._read.receive()
            if not isinstance(item, Exception):
                return item  # type: ignore[no-any-return]
            await self._answer(item)

    def __aiter__(self) -> AnsweringUnreadable:
        return self

    async def __anext__(self) -> SessionMessage:
        while True:
            item = await self._read.__anext__()
            if not isinstance(item, Exception):
                return item  # type: ignore[no-any-return]
            await self._answer(item)

    async def aclose(self) -> None:
        await self._read.aclose()

    async def __aenter__(self) -> AnsweringUnreadable:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> bool | None:
        await self.aclose()
        return None

    async def _answer(self, problem: Exception) -> None:
        error = answer_for(problem)
        if error is None:
            log.warning("Ignored a notification or response that is not valid JSON-RPC (it gets no answer)")
        else:
            log.warning("Answered a message that is not valid JSON-RPC: %s", error.error.message)
            await self._write.send(SessionMessage(error))


def answer_for(problem: Exception) -> JSONRPCError | None:
    """The JSON-RPC error for a line the SDK could not read, or None when the line needs no answer."""
    try:
        message = _message_of(problem)
    except (ValueError, RecursionError):
        return _error(None, PARSE_ERROR, "Parse error: the message is not valid JSON.")
    if isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message):
        return None  # a response to one of our requests: never answered
    if isinstance(message, dict) and "method" in message and "id" not in message:
        return None  # a notification: never answered
    raw_id = message.get("id") if isinstance(message, dict) else None
    request_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    if not _encodable(message):
        return _error(request_id, PARSE_ERROR, "Parse error: the message holds an unpaired UTF-16 surrogate (such as "
                      "\\ud800), which is not valid Unicode. Remove it or send the character it was meant to be.")
    return _error(request_id, INVALID_REQUEST, "Invalid Request: the message is not a JSON-RPC 2.0 request.")


def _message_of(problem: Exception) -> Any:
    """What the client sent, as far as it can be read: pydantic keeps the line (JSON it could not parse) or the
    object (JSON that is not a JSON-RPC message) as an error's input. ValueError: not JSON at all."""
    inputs = [detail.get("input") for detail in problem.errors()] if isinstance(problem, ValidationError) else []
    for given in inputs:
        if isinstance(given, str | bytes):
            return json.loads(given)  # (Python's parser takes a lone surrogate; the client's id is read back)
    return next((given for given in inputs if isinstance(given, dict) and "jsonrpc" in given), None)


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        return False
    return True


def _error(request_id: str | int | None, code: int, message: str) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=code, message=message))
