"""The official MCP Python SDK 2.x `Client`, over stdio or streamable HTTP, on either protocol generation
(`mode`: "legacy" initialises like the 2025 revisions, "auto" speaks 2026-07-28). Runs in .venv-clients
(mcp 2.x, pinned)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, Implementation, TextContent

from deployment.drivers.plan import read_plan, report


def outcome(result: CallToolResult, asked: list[str]) -> dict[str, Any]:
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    return {"error": result.is_error, "text": "\n".join(texts), "kinds": [block.type for block in result.content],
            "asked": asked}


async def main() -> None:
    plan = read_plan()
    target = plan["target"]
    asked: list[str] = []

    async def elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        if plan["answer"] == "accept":
            return ElicitResult(action="accept", content={"approve": True})
        return ElicitResult(action="decline")

    server: Any
    if "url" in target:
        headers = {"Authorization": f"Bearer {target['token']}"} if target.get("token") else {}
        server = streamable_http_client(target["url"], http_client=httpx2.AsyncClient(headers=headers, timeout=300))
    else:
        server = StdioServerParameters(command=target["command"], args=[], env=target["env"], cwd=target["cwd"])
    extensions = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})] if plan.get("apps") else None
    steps: list[dict[str, Any]] = []
    info = Implementation(**plan["client"]) if plan.get("client") else None  # None: the SDK's mcp/0.1.0
    async with Client(server, elicitation_callback=elicit if plan.get("answer") else None,
                      mode=plan.get("mode", "auto"), extensions=extensions, client_info=info) as client:
        for step in plan["steps"]:
            if step[0] == "list":
                steps.append({"tools": sorted(tool.name for tool in (await client.list_tools()).tools)})
            else:
                asked.clear()
                steps.append(outcome(await client.call_tool(step[1], step[2]), list(asked)))
    report(steps)


if __name__ == "__main__":
    asyncio.run(main())
