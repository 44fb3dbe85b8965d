"""FastMCP's client (`fastmcp-slim[client]`, a test dependency of the project) over stdio.

Run: `.venv/bin/python -m clients.check_fastmcp`
"""

from __future__ import annotations

from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp.types import TextContent

from clients.common import BAD_ARGS, PROMPT, SERVER, Sandbox, expect_tools, in_our_words, run_checks, saved_paths


async def stdio(sandbox: Sandbox) -> str:
    transport = StdioTransport(command=str(SERVER), args=[], env=sandbox.env, cwd=str(sandbox.root))
    async with Client(transport) as client:
        expect_tools(tool.name for tool in await client.list_tools())
        result = await client.call_tool("generate_image", {"prompt": PROMPT})
        refused = await client.call_tool("generate_image", BAD_ARGS, raise_on_error=False)
    first = result.content[0]
    assert isinstance(first, TextContent), result.content
    paths = saved_paths(first.text, sandbox)
    kinds = ", ".join(block.type for block in result.content)
    # fastmcp names itself "fastmcp", as the frameworks built on it do: no resource_link (the server's gate).
    assert "resource_link" not in kinds, kinds
    message = refused.content[0]
    assert refused.is_error and isinstance(message, TextContent) and in_our_words(message.text), refused
    return f"4 tools; saved {paths[0].name}; blocks: {kinds}; a bad aspect_ratio is a tool error"


if __name__ == "__main__":
    run_checks(("fastmcp Client, stdio", stdio))
