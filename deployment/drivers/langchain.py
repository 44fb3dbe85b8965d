"""LangChain's MCP adapters (`MultiServerMCPClient`, which opens a session per call), over stdio or streamable HTTP,
with an elicitation callback. Runs in .venv-langchain (langchain-mcp-adapters pins mcp<2).

A call's report also lists the URLs the adapter put in image blocks: a `file://` one there is what a model provider
would be asked to fetch, and fail on."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_mcp_adapters.callbacks import CallbackContext, Callbacks
from langchain_mcp_adapters.client import MultiServerMCPClient
from mcp.shared.context import RequestContext
from mcp.types import ElicitRequestParams, ElicitResult

from deployment.drivers.plan import read_plan, report


def connection(target: dict[str, Any]) -> Any:
    if "url" in target:
        headers = {"Authorization": f"Bearer {target['token']}"} if target.get("token") else {}
        return {"transport": "streamable_http", "url": target["url"], "headers": headers}
    return {"transport": "stdio", "command": target["command"], "args": [], "env": target["env"],
            "cwd": target["cwd"]}


def outcome(message: ToolMessage, asked: list[str]) -> dict[str, Any]:
    blocks = message.content if isinstance(message.content, list) else [message.content]
    texts = [b if isinstance(b, str) else str(b.get("text", "")) for b in blocks
             if isinstance(b, str) or b.get("type") == "text"]
    urls = [str(b.get("url") or b.get("source", {}).get("url", "")) for b in blocks
            if isinstance(b, dict) and b.get("type") in ("image", "image_url", "file")]
    return {"error": message.status == "error", "text": "\n".join(texts),
            "kinds": ["text" if isinstance(b, str) else str(b.get("type")) for b in blocks],
            "urls": [url for url in urls if url], "asked": asked}


async def main() -> None:
    plan = read_plan()
    asked: list[str] = []

    async def elicit(mcp_context: RequestContext[Any, Any], params: ElicitRequestParams,
                     context: CallbackContext) -> ElicitResult:
        asked.append(params.message)
        if plan["answer"] == "accept":
            return ElicitResult(action="accept", content={"approve": True})
        return ElicitResult(action="decline")

    callbacks = Callbacks(on_elicitation=elicit) if plan.get("answer") else None
    client = MultiServerMCPClient({"flux": connection(plan["target"])}, callbacks=callbacks)
    tools = {tool.name: tool for tool in await client.get_tools()}
    steps: list[dict[str, Any]] = []
    for number, step in enumerate(plan["steps"]):
        if step[0] == "list":
            steps.append({"tools": sorted(tools)})
            continue
        if step[1] not in tools:  # the adapter offers only the tools the server lists
            steps.append({"unlisted": step[1]})
            continue
        asked.clear()
        call = {"type": "tool_call", "name": step[1], "args": step[2], "id": f"call_{number}"}
        message = await tools[step[1]].ainvoke(call)
        steps.append(outcome(message, list(asked)))
    report(steps)


if __name__ == "__main__":
    asyncio.run(main())
