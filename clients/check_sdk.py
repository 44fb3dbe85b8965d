"""The official MCP Python SDK's `Client` (the project's own `mcp`), over stdio and over streamable HTTP.

Run: `.venv/bin/python -m clients.check_sdk`
"""

from __future__ import annotations

import os

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from clients.common import (
    BAD_ARGS,
    PROMPT,
    SERVER,
    Sandbox,
    expect_tools,
    http_server,
    in_our_words,
    run_checks,
    saved_paths,
)


def kinds(result: CallToolResult) -> str:
    return ", ".join(block.type for block in result.content)


def first_text(result: CallToolResult) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent), f"the result does not start with a text block: {kinds(result)}"
    return first.text


async def exercise(client: Client, sandbox: Sandbox) -> str:
    expect_tools(tool.name for tool in (await client.list_tools()).tools)
    result = await client.call_tool("generate_image", {"prompt": PROMPT})
    assert not result.is_error, first_text(result)
    paths = saved_paths(first_text(result), sandbox)
    # The SDK's default clientInfo (mcp/0.1.0) is what agent frameworks built on it send: no resource_link.
    assert all(block.type != "resource_link" for block in result.content), kinds(result)
    refused = await client.call_tool("generate_image", BAD_ARGS)
    assert refused.is_error and in_our_words(first_text(refused)), first_text(refused)
    return f"4 tools; saved {paths[0].name}; blocks: {kinds(result)}; a bad aspect_ratio is a tool error"


async def stdio(sandbox: Sandbox) -> str:
    params = StdioServerParameters(command=str(SERVER), args=[], env=sandbox.env, cwd=sandbox.root)
    async with Client(params) as client:
        return await exercise(client, sandbox)


async def http(sandbox: Sandbox) -> str:
    base_env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    with http_server(sandbox, base_env) as url:
        async with Client(streamable_http_client(url)) as client:
            return await exercise(client, sandbox) + f" ({url})"


if __name__ == "__main__":
    run_checks(("official SDK, stdio", stdio), ("official SDK, streamable HTTP", http))
