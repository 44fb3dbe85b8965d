"""Pydantic AI 2.x: `MCPToolset` (built on fastmcp's client) under a real `Agent.run`, over stdio and over
streamable HTTP, with a scripted `FunctionModel` in place of a provider, so no key is needed. The model calls
generate_image, then the tool with a bad argument, then answers; what the agent handed back is checked.

Run: `.venv-clients/bin/python -m clients.check_pydantic_ai`
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import (
    BinaryContent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

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

CALLS = [("call_1", {"prompt": PROMPT}), ("call_2", BAD_ARGS)]


class Script:
    """The model: one tool call per entry of CALLS, then a text answer; keeps the tools it was offered."""

    def __init__(self) -> None:
        self.tool_names: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.tool_names = [tool.name for tool in info.function_tools]
        turn = sum(isinstance(message, ModelResponse) for message in messages)
        if turn < len(CALLS):
            call_id, arguments = CALLS[turn]
            return ModelResponse(parts=[ToolCallPart("generate_image", arguments, tool_call_id=call_id)])
        return ModelResponse(parts=[TextPart("done")])


def parts(messages: list[ModelMessage], call_id: str) -> list[Any]:
    return [part for message in messages if isinstance(message, ModelRequest) for part in message.parts
            if getattr(part, "tool_call_id", None) == call_id]


async def agent_run(toolset: MCPToolset[Any], sandbox: Sandbox) -> str:
    script = Script()
    agent = Agent(FunctionModel(script), toolsets=[toolset])
    async with agent:
        expect_tools(tool.name for tool in await toolset.list_tools())
        result = await agent.run("Draw a red fox in the snow.")
    assert result.output == "done", result.output
    expect_tools(script.tool_names)
    messages = result.all_messages()
    returned = [part for part in parts(messages, "call_1") if isinstance(part, ToolReturnPart)]
    assert returned, f"no tool return for the first call: {parts(messages, 'call_1')}"
    content = returned[0].content
    items = content if isinstance(content, list) else [content]
    summary = next(item for item in items if isinstance(item, dict) and "images" in item)
    images = [item for item in items if isinstance(item, BinaryContent)]
    paths = saved_paths(json.dumps(summary), sandbox)
    # Everything the model gets is inline: the JSON (with the path) and the thumbnails' bytes; no URL to fetch.
    assert images and all(item.media_type == "image/jpeg" for item in images), items
    assert not [item for item in items if isinstance(item, str) and item.startswith("file://")], items
    # The tool error goes back to the model for a retry: a RetryPromptPart, or (2.6x) a ToolReturnPart "retried".
    retry = [part for part in parts(messages, "call_2")
             if isinstance(part, RetryPromptPart) or getattr(part, "outcome", None) == "retried"]
    assert retry and in_our_words(str(retry[0].content)), parts(messages, "call_2")
    return (f"4 tools; saved {paths[0].name}; the model got the JSON summary and {len(images)} inline JPEG; "
            "a bad aspect_ratio came back as a retry prompt with the tool's error text")


async def stdio(sandbox: Sandbox) -> str:
    transport = StdioTransport(command=str(SERVER), args=[], env=sandbox.env, cwd=str(sandbox.root))
    return await agent_run(MCPToolset(transport, init_timeout=60), sandbox)


async def http(sandbox: Sandbox) -> str:
    base_env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    with http_server(sandbox, base_env) as url:
        return await agent_run(MCPToolset(url), sandbox) + f" ({url})"


if __name__ == "__main__":
    run_checks(("pydantic-ai Agent + MCPToolset, stdio", stdio), ("pydantic-ai Agent + MCPToolset, HTTP", http))
