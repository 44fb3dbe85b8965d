"""The official MCP Python SDK 1.x `ClientSession` (what LangChain's adapters are built on), over stdio or
streamable HTTP. Runs in .venv-langchain (mcp<2)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.context import RequestContext
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult, ErrorData, Implementation, TextContent

from deployment.drivers.plan import read_plan, report


@contextlib.asynccontextmanager
async def streams(target: dict[str, Any]) -> AsyncIterator[Any]:
    if "url" in target:
        headers = {"Authorization": f"Bearer {target['token']}"} if target.get("token") else {}
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=300)) as http, \
                streamable_http_client(target["url"], http_client=http) as (read, write, _):
            yield read, write
    else:
        params = StdioServerParameters(command=target["command"], args=[], env=target["env"], cwd=target["cwd"])
        async with stdio_client(params) as (read, write):
            yield read, write


def outcome(result: CallToolResult, asked: list[str]) -> dict[str, Any]:
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    return {"error": result.isError, "text": "\n".join(texts), "kinds": [block.type for block in result.content],
            "asked": asked}


async def main() -> None:
    plan = read_plan()
    asked: list[str] = []

    async def elicit(context: RequestContext[Any, Any], params: ElicitRequestParams) -> ElicitResult | ErrorData:
        asked.append(params.message)
        if plan["answer"] == "accept":
            return ElicitResult(action="accept", content={"approve": True})
        return ElicitResult(action="decline")

    steps: list[dict[str, Any]] = []
    info = Implementation(**plan["client"]) if plan.get("client") else None  # None: the SDK's mcp/0.1.0
    async with streams(plan["target"]) as (read, write), \
            ClientSession(read, write, elicitation_callback=elicit if plan.get("answer") else None,
                          client_info=info) as session:
        await session.initialize()
        for step in plan["steps"]:
            if step[0] == "list":
                steps.append({"tools": sorted(tool.name for tool in (await session.list_tools()).tools)})
            else:
                asked.clear()
                steps.append(outcome(await session.call_tool(step[1], step[2]), list(asked)))
    report(steps)


if __name__ == "__main__":
    asyncio.run(main())
