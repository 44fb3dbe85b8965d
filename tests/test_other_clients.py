"""The server under an MCP client other than the official SDK's: FastMCP's, over stdio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastmcp import Client as FastMCPClient
from fastmcp.client.transports import StdioTransport

from tests.fakes.core import Loopback
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter, error
from tests.test_cli import BASE_ENV, COMMAND

pytestmark = pytest.mark.anyio


async def test_fastmcp_client_generates_and_reads_errors(workdir):
    fake = FakeOpenRouter()
    server = Loopback(fake)
    try:
        env = {**BASE_ENV, "OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{server.url}/api/v1"}
        async with FastMCPClient(StdioTransport(command=COMMAND, args=[], env=env, cwd=str(workdir))) as client:
            names = {tool.name for tool in await client.list_tools()}
            result = await client.call_tool("generate_image", {"prompt": "a kite", "n": 2, "seed": 8},
                                            raise_on_error=False)
            fake.then(error(402, "Insufficient credits"))
            refused = await client.call_tool("generate_image", {"prompt": "a kite"}, raise_on_error=False)
    finally:
        server.close()
    assert names == {"generate_image", "edit_image", "compose_images", "get_usage"}
    assert not result.is_error
    # fastmcp names itself "fastmcp", as frameworks built on it do: no resource_links (see server.wants_links),
    # the JSON block names the files.
    assert [type(block).__name__ for block in result.content] == ["TextContent", "ImageContent", "ImageContent"]
    data = json.loads(result.content[0].text)
    assert [image["seed"] for image in data["images"]] == [8, 9]
    assert all(Path(image["path"]).is_file() for image in data["images"])
    assert refused.is_error and "https://openrouter.ai/settings/credits" in refused.content[0].text
    assert len(fake.completions) == 3
