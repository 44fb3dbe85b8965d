"""The MCP SDK's server class, adapted where it meets the outside (the tools themselves are in `server.py`).

- `call_tool` is the one exit for tool results and tool errors: secrets are scrubbed there, every string is made
  one UTF-8 can carry (`well_formed`: text from files and providers may hold a lone surrogate, which would stop the
  stdio transport), and an error reads as our sentence rather than the SDK's "Error executing tool <name>: ..."
  (see its docstring).
- Over stdio, a line that is not a JSON-RPC message is answered (`stdio.py`) instead of dropped.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from mcp.server import MCPServer
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ValidationError

from .arguments import explain
from .redact import Redactor
from .runtime import Runtime
from .words import for_mcp, well_formed


class FluxServer(MCPServer[Runtime]):
    """The SDK's server, except that every tool result and tool error leaves through one exit (`call_tool`), and a
    stdio line that is not JSON-RPC is answered."""

    @property
    def lowlevel(self) -> Server[Runtime]:
        """The SDK's low-level server, which `serve --http` hands to its session manager."""
        return self._lowlevel_server

    #: The server's secrets, scrubbed from every result; `create_server` sets it from the settings.
    secrets = Redactor({})

    async def run_stdio_async(self) -> None:
        """The SDK's stdio loop (`MCPServer.run_stdio_async`), with every line that is not a JSON-RPC message
        answered with a JSON-RPC error instead of dropped (`stdio.py`), and pipes read and written by the event loop
        instead of worker threads (`pipes.py`)."""
        from mcp.server.stdio import stdio_server

        from .pipes import claim, served
        from .stdio import AnsweringUnreadable

        with claim() as held:  # pipes (as clients start servers): served by the loop, without threads (pipes.py)
            async with contextlib.AsyncExitStack() as stack:
                ends: tuple[Any, Any] = (None, None)
                if held is not None:
                    ends = await stack.enter_async_context(served(held))
                read_stream, write_stream = await stack.enter_async_context(stdio_server(*ends))
                lowlevel = self._lowlevel_server  # (no public handle; the SDK's own method is these three lines)
                await lowlevel.run(AnsweringUnreadable(read_stream, write_stream), write_stream,
                                   lowlevel.create_initialization_options())

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        """The exit every tool result and tool error leaves by: secrets are scrubbed from their text here, and an
        error reads as our own sentence. (The SDK puts "Error executing tool <name>: " before the message of a
        ToolError a tool raises, keeping that error as `__cause__`; the model should read what to do first, and
        the result's is_error already says it failed.)"""
        try:
            result = await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a crash: the SDK's message names only the tool, and the traceback stays in the log
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                tool = next((t for t in await self.list_tools() if t.name == name), None)
                text = explain(name, tool.input_schema if tool is not None else {}, cause)
            else:
                text = str(cause) if isinstance(cause, ToolError | ResourceError) else str(exc)
            raise ToolError(well_formed(self.secrets(for_mcp(text)))) from cause
        if isinstance(result, CallToolResult):
            result = result.model_copy(update={"content": [
                block.model_copy(update={"text": self._scrubbed(block.text)}) if isinstance(block, TextContent)
                else block for block in result.content]})
        return sendable(result)

    def _scrubbed(self, text: str) -> str:
        """A text block without secrets. Our JSON blocks are scrubbed value by value and encoded again: a scrub of
        the encoded text could cut an escape sequence in two. Their strings are made well formed there too: an
        escaped lone surrogate (`\\udce9`, from a folder's name) is ASCII, but not text every client's JSON parser
        takes (Rust's refuses it)."""
        if text.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                scrubbed = sendable(self.secrets.value(value))
                if scrubbed == value:
                    return text  # (as it was written: a gallery page is sized compact, never re-indented)
                indented = "\n" in text
                return json.dumps(scrubbed, indent=2 if indented else None, allow_nan=False,
                                  separators=None if indented else (",", ":"), ensure_ascii=text.isascii())
        return self.secrets(for_mcp(text))


def sendable(value: Any) -> Any:
    """`value` (a result, or any part of one) with every string in it well formed (`well_formed`), field by field
    and item by item, keys too; the very same object when nothing needed it (the usual case: no copy is made)."""
    if isinstance(value, str):
        return well_formed(value)
    if isinstance(value, BaseModel):
        fields = [*type(value).model_fields, *(value.model_extra or {})]
        changed = {name: new for name in fields if (new := sendable(old := getattr(value, name))) is not old}
        return value.model_copy(update=changed) if changed else value
    if isinstance(value, dict):
        pairs = [(sendable(k), sendable(v)) for k, v in value.items()]
        same = all(new_k is k and new_v is v for (new_k, new_v), (k, v) in zip(pairs, value.items(), strict=True))
        return value if same else dict(pairs)
    if isinstance(value, list | tuple):
        items = [sendable(v) for v in value]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else (
            items if isinstance(value, list) else tuple(items))
    return value
