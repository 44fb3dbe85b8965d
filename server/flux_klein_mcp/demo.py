"""`flux-klein-mcp demo`: what an MCP client sees, end to end, in one command.

Starts the server as a stdio subprocess, lists its tools and calls `generate_image` through the official SDK
client. With no provider key set it runs on the offline sandbox, so it works on a fresh machine.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from mcp import Client, StdioServerParameters
from mcp.types import ImageContent, Implementation, ResourceLink, TextContent

from . import __version__
from .config import Settings
from .errors import FluxKleinError
from .providers import Providers
from .rules import AspectRatio
from .words import plural

Write = Callable[[str], None]


def _demo_env() -> tuple[dict[str, str], str, str]:
    """The server's environment, its provider, and why that one (said on stderr)."""
    env = dict(os.environ)
    try:
        provider = Providers(Settings.from_env(env)).choose().name
    except FluxKleinError:
        env["FLUX_KLEIN_PROVIDER"] = "sandbox"
        return env, "sandbox", " (no usable provider is configured: offline placeholders, nothing is charged)"
    return env, provider, ""


async def run_demo(prompt: str, aspect_ratio: AspectRatio, show: Write, say: Write) -> int:
    """`show` gets the JSON summary (stdout), `say` the running commentary (stderr); the CLI owns both."""
    env, provider, note = _demo_env()
    say(f"Starting the MCP server on stdio with provider {provider}{note}")
    server = StdioServerParameters(command=sys.executable, args=["-m", "flux_klein_mcp", "serve"], env=env)
    async with Client(server, client_info=Implementation(name="flux-klein-mcp-demo", version=__version__)) as client:
        tools = await client.list_tools()
        say("Tools: " + ", ".join(tool.name for tool in tools.tools))
        say(f"Calling generate_image(prompt={prompt!r}, aspect_ratio={aspect_ratio!r}) ...")
        result = await client.call_tool("generate_image", {"prompt": prompt, "aspect_ratio": aspect_ratio})
    text = next((block.text for block in result.content if isinstance(block, TextContent)), "")
    if result.is_error:
        say(f"The tool answered with an error: {text}")
        return 1
    thumbs = sum(isinstance(block, ImageContent) for block in result.content)
    links = [block.uri for block in result.content if isinstance(block, ResourceLink)]
    show(json.dumps(json.loads(text), indent=2))
    say(f"The model would also see {plural(thumbs, 'thumbnail')}; full-size files: {', '.join(str(u) for u in links)}")
    return 0
