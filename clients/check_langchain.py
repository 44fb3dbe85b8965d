"""LangChain: `langchain-mcp-adapters` (its own venv: it pins mcp<2) with no configuration beyond the server's command,
then the providers' own LangChain converters, offline, on the ToolMessage the adapter built.

What it proves: after conversion for OpenAI Chat Completions, OpenAI Responses and Anthropic, the request carries no
URL the provider would have to fetch (a `file://` URL there fails the agent's next model call) and the saved file's
absolute path still reaches the model as text. A control run with `FLUX_KLEIN_RESOURCE_LINKS=always` shows the
same converters do send `file://` URLs when the server links the files, so the first assertion is not vacuous.

Run: `.venv-langchain/bin/python -m clients.check_langchain`
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_openai import ChatOpenAI

from clients.common import (
    BAD_ARGS,
    PROMPT,
    SERVER,
    Sandbox,
    expect_tools,
    fetch_urls,
    in_our_words,
    media,
    run_checks,
    saved_paths,
    text_parts,
)

#: Request builders of the three provider APIs a LangChain agent talks to, with fake keys: nothing is sent.
CONVERTERS: dict[str, Callable[[list[BaseMessage]], Any]] = {
    "OpenAI chat": ChatOpenAI(model="gpt-4.1", api_key="sk-fake")._get_request_payload,  # type: ignore[arg-type]
    "OpenAI responses": ChatOpenAI(model="gpt-4.1", api_key="sk-fake",  # type: ignore[arg-type]
                                   use_responses_api=True)._get_request_payload,
    "Anthropic": ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-ant-fake")._get_request_payload,  # type: ignore[arg-type, call-arg]
}


async def tools_for(sandbox: Sandbox, **env: str) -> dict[str, BaseTool]:
    connection: Any = {"transport": "stdio", "command": str(SERVER), "args": [], "env": {**sandbox.env, **env},
                       "cwd": str(sandbox.root)}
    return {tool.name: tool for tool in await MultiServerMCPClient({"flux-klein": connection}).get_tools()}


async def call(tool: BaseTool, arguments: dict[str, Any], call_id: str) -> ToolMessage:
    message = await tool.ainvoke({"type": "tool_call", "name": tool.name, "args": arguments, "id": call_id})
    assert isinstance(message, ToolMessage), message
    return message


def conversation(message: ToolMessage) -> list[BaseMessage]:
    """What an agent sends after a tool call: the request, the model's call and the tool's answer."""
    call = {"name": "generate_image", "args": {"prompt": PROMPT}, "id": message.tool_call_id}
    return [HumanMessage("Draw a red fox in the snow."), AIMessage("", tool_calls=[call]), message]


def payloads(message: ToolMessage) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: build(conversation(message)) for name, build in CONVERTERS.items()}


def summary_text(message: ToolMessage) -> str:
    blocks = message.content if isinstance(message.content, list) else [message.content]
    first = blocks[0]
    return first if isinstance(first, str) else str(first["text"])


async def conversion(sandbox: Sandbox) -> str:
    tools = await tools_for(sandbox)
    expect_tools(tools)
    message = await call(tools["generate_image"], {"prompt": PROMPT}, "call_1")
    assert message.status == "success", message.content
    path = saved_paths(summary_text(message), sandbox)[0]
    for name, payload in payloads(message).items():
        assert fetch_urls(payload) == [], f"{name}: the provider would be asked to fetch {fetch_urls(payload)}"
        assert any(url.startswith("data:image/jpeg") for url in media(payload)), f"{name}: no inline thumbnail"
        assert any(str(path) in text for text in text_parts(payload)), f"{name}: the path is not in any text part"
    refused = await call(tools["generate_image"], BAD_ARGS, "call_2")
    assert refused.status == "error" and in_our_words(json.dumps(refused.content, ensure_ascii=False)), refused
    blocks = [block.get("type", "?") for block in message.content if isinstance(block, dict)]
    return (f"4 tools; saved {path.name}; ToolMessage blocks [{', '.join(blocks)}]; the OpenAI chat, OpenAI "
            "responses and Anthropic requests carry no URL to fetch, the thumbnail inline and the path as text; "
            "a bad aspect_ratio is an error ToolMessage")


async def control(sandbox: Sandbox) -> str:
    """With the links forced on, the same pipeline must show the file:// URLs: the detector sees what it guards."""
    tools = await tools_for(sandbox, FLUX_KLEIN_RESOURCE_LINKS="always")
    message = await call(tools["generate_image"], {"prompt": PROMPT}, "call_1")
    path = saved_paths(summary_text(message), sandbox)[0]
    leaked = {name: fetch_urls(payload) for name, payload in payloads(message).items()}
    assert all(urls == [path.as_uri()] for urls in leaked.values()), leaked
    return f"with FLUX_KLEIN_RESOURCE_LINKS=always each converter would send {path.as_uri()}: detected"


if __name__ == "__main__":
    run_checks(("langchain-mcp-adapters + provider converters", conversion),
               ("langchain conversion check control (links forced on)", control))
