"""The cold-start floor: the smallest useful MCP server on the same SDK — one `MCPServer`, one trivial tool, stdio.

    python bench/floor_mcp_server.py
"""

from __future__ import annotations

from mcp.server import MCPServer

server = MCPServer("bench-floor")


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


if __name__ == "__main__":
    server.run()
