"""OpenAI's Agents SDK (`openai-agents`): `MCPServerStdio` under a real `Runner.run`, with a scripted model in
place of OpenAI's, so no key is needed. The model calls generate_image, then the tool with a bad argument, then
answers; what the Runner hands back to the model (Responses API input items) is checked like a provider request.

Run: `.venv-clients/bin/python -m clients.check_openai_agents`
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelSettings, RunConfig, Runner, Tool
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.mcp import MCPServerStdio
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

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

CALLS = [("call_1", {"prompt": PROMPT}), ("call_2", BAD_ARGS)]


class ScriptedModel(Model):
    """Calls generate_image once per entry of CALLS, then says it is done; keeps what it was given each turn."""

    def __init__(self) -> None:
        self.inputs: list[list[TResponseInputItem]] = []
        self.tool_names: list[str] = []

    async def get_response(self, system_instructions: str | None, input: str | list[TResponseInputItem],
                           model_settings: ModelSettings, tools: list[Tool], *args: Any, **kwargs: Any,
                           ) -> ModelResponse:
        self.inputs.append([] if isinstance(input, str) else list(input))
        self.tool_names = [tool.name for tool in tools]
        turn = len(self.inputs) - 1
        if turn < len(CALLS):
            call_id, arguments = CALLS[turn]
            output: list[Any] = [ResponseFunctionToolCall(
                type="function_call", id=f"fc_{turn}", call_id=call_id, name="generate_image",
                arguments=json.dumps(arguments), status="completed")]
        else:
            output = [ResponseOutputMessage(
                type="message", id="msg_1", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", text="done", annotations=[])])]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the check runs without streaming")


def tool_output(items: list[Any], call_id: str) -> Any:
    for item in items:
        if isinstance(item, dict) and item.get("type") == "function_call_output" and item.get("call_id") == call_id:
            return item["output"]
    raise AssertionError(f"no function_call_output for {call_id} in what the model was given")


async def agent_run(sandbox: Sandbox) -> str:
    params = {"command": str(SERVER), "args": [], "env": sandbox.env, "cwd": str(sandbox.root)}
    async with MCPServerStdio(params=params, client_session_timeout_seconds=60) as server:  # type: ignore[arg-type]
        expect_tools(tool.name for tool in await server.list_tools())
        model = ScriptedModel()
        agent = Agent(name="artist", instructions="Draw what you are asked for.", model=model, mcp_servers=[server])
        result = await Runner.run(agent, "Draw a red fox in the snow.", run_config=RunConfig(tracing_disabled=True))
    assert result.final_output == "done", result.final_output
    expect_tools(model.tool_names)
    output = tool_output(model.inputs[-1], "call_1")
    texts = text_parts(output)
    paths = saved_paths(texts[0], sandbox)
    assert fetch_urls(output) == [], f"the model would be sent URLs to fetch: {fetch_urls(output)}"
    assert any(url.startswith("data:image/jpeg") for url in media(output)), f"no inline thumbnail: {output}"
    assert str(paths[0]) in texts[0], texts[0]
    refused = json.dumps(tool_output(model.inputs[-1], "call_2"))
    assert in_our_words(refused), f"the model was not told what was wrong: {refused[:300]}"
    kinds = ", ".join(part.get("type", "?") for part in output) if isinstance(output, list) else type(output).__name__
    return (f"4 tools; saved {paths[0].name}; the model got [{kinds}] (images as data: URLs, the path as text); "
            "a bad aspect_ratio reached the model as the tool's error text")


if __name__ == "__main__":
    run_checks(("openai-agents Runner + MCPServerStdio", agent_run))
