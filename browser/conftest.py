"""The view in a real browser: headless Chromium (Debian's, never a downloaded one) loads a host page running the
official AppBridge, which renders the view as MCP Apps hosts do: a sandboxed iframe under the strictest CSP a host
derives from the view's own `_meta.ui.csp` (so an undeclared image fails here as in the MCP Inspector). The host's
MCP client is the test: every tools/call and resources/read the view sends goes to the real server (in memory, on
the sandbox or a strict fake OpenRouter), and its answers go back to the view.

Run with `make test-view` (it builds the host bundle and installs Playwright).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import CallToolResult, ElicitResult, Implementation, Tool
from playwright.async_api import FrameLocator, Page, async_playwright
from tests.fakes.core import mock_transport
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter

from flux_klein_mcp.config import Settings
from flux_klein_mcp.server import create_server
from flux_klein_mcp.view import VIEW_URI

ROOT = Path(__file__).resolve().parents[1]
HOST_PAGE = ROOT / "build" / "browser" / "host.html"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
#: Screenshots land here; `make test-view SCREENSHOTS=docs` writes the README's.
SCREENSHOTS = ROOT / os.environ.get("FLUX_KLEIN_SCREENSHOTS", "build/browser")
HOST_INFO = Implementation(name="flux-klein-browser-host", version="1")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _browser_and_host_bundle() -> None:
    """Missing pieces fail the test with what to do (this suite is run on purpose: a skip would hide it)."""
    if not HOST_PAGE.exists():
        pytest.fail(f"no host bundle at {HOST_PAGE}: run `make test-view`, which builds it")
    if CHROMIUM is None:
        pytest.fail("no Chromium: apt-get install chromium, or set CHROMIUM to its path")


class Person:
    """The person at the host, answering the server's high-tier question (MCP elicitation)."""

    def __init__(self, approve: bool) -> None:
        self.approve = approve
        self.asked: list[str] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        self.asked.append(params.message)
        return ElicitResult(action="accept", content={"approve": self.approve})


def wire(value: Any) -> Any:
    return value.model_dump(by_alias=True, exclude_none=True, mode="json")


@dataclass
class Host:
    """One browser page hosting the view, wired to the real server through `mcp`."""

    page: Page
    mcp: Client
    tools: dict[str, Tool]
    fake: FakeOpenRouter | None
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    #: Set by a test that provokes console errors on purpose (every other test ends with none: no CSP violation).
    errors_expected: bool = False

    @property
    def view(self) -> FrameLocator:
        return self.page.frame_locator("#view")

    async def mount(self, tool: str = "generate_image", theme: str = "light", clipboard: bool = True,
                    declared: bool = True) -> None:
        """Render the view `tool` names, under the CSP the host derives from the view's own `_meta.ui.csp`
        (`declared=False`: as if it declared nothing)."""
        uri = (self.tools[tool].meta or {})["ui"]["resourceUri"]
        content = (await self.mcp.read_resource(uri)).contents[0]
        ui = (content.meta or {}).get("ui", {})
        await self.page.evaluate("([html, options]) => host.mount(html, options)", [content.text, {
            "csp": ui.get("csp") if declared else None, "permissions": ui.get("permissions") if clipboard else None,
            "theme": theme, "toolInfo": {"id": 1, "tool": wire(self.tools[tool])}}])

    async def show(self, tool: str, arguments: dict[str, Any], theme: str = "light",
                   clipboard: bool = True, declared: bool = True) -> CallToolResult:
        """What a host does when the model calls `tool`: run it, render the view it names, hand it the call.
        `clipboard=False` is a host that does not grant the frame the clipboard the view asks for."""
        await self.mount(tool, theme, clipboard, declared)
        await self.page.evaluate("args => host.toolInput(args)", arguments)
        result = await self.mcp.call_tool(tool, arguments)
        await self.page.evaluate("result => host.toolResult(result)", wire(result))
        return result

    async def tool_calls(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("() => host.toolCalls"))

    async def calls_of(self, name: str) -> list[dict[str, Any]]:
        return [c["arguments"] for c in await self.tool_calls() if c["name"] == name]


@pytest.fixture
def open_host(tmp_path: Path) -> Callable[..., Any]:
    """`async with open_host(...) as host`: a browser page, the host bundle, and the real server behind it."""

    @asynccontextmanager
    async def open_(*, provider: str = "sandbox", person: Person | None = None, width: int = 960,
                    **env: str) -> AsyncIterator[Host]:
        fake = FakeOpenRouter() if provider == "openrouter" else None
        settings = Settings.from_env({
            "FLUX_KLEIN_LEDGER": str(tmp_path / "ledger.jsonl"), "FLUX_KLEIN_OUTPUT_DIR": str(tmp_path / "output"),
            **({"FLUX_KLEIN_PROVIDER": "sandbox"} if fake is None else {
                "OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": "https://openrouter.test/api/v1"}),
            **env}, cwd=tmp_path)
        server = create_server(settings, transport=mock_transport(fake) if fake else None)
        apps = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
        async with Client(server, client_info=HOST_INFO, extensions=[apps],  # type: ignore[arg-type]
                          elicitation_callback=person) as mcp, async_playwright() as playwright:
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            assert tools["generate_image"].meta["ui"]["resourceUri"] == VIEW_URI
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--font-render-hinting=none"])
            try:
                page = await browser.new_page(viewport={"width": width, "height": 900})
                host = Host(page, mcp, tools, fake)
                page.on("console", lambda m: host.console_errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: host.console_errors.append(str(e)))
                page.on("request", lambda r: host.requests.append(r.url))

                async def call_tool(params: dict[str, Any]) -> Any:
                    """The host's side of the spec: a view may call only tools whose visibility includes "app"."""
                    tool = tools.get(params["name"])
                    visibility = ((tool.meta or {}).get("ui", {}).get("visibility") if tool else None) or ["model",
                                                                                                          "app"]
                    if tool is None or "app" not in visibility:
                        return {"content": [{"type": "text", "text": "not callable from the view"}], "isError": True}
                    return wire(await mcp.call_tool(params["name"], params.get("arguments") or {}))

                async def read_resource(params: dict[str, Any]) -> Any:
                    return wire(await mcp.read_resource(params["uri"]))

                await page.expose_function("pyCallTool", call_tool)
                await page.expose_function("pyReadResource", read_resource)
                await page.goto(HOST_PAGE.as_uri())
                yield host
                if not host.errors_expected:  # a CSP violation is a console error: no test may cause one
                    assert host.console_errors == [], host.console_errors
                assert all(u.startswith(("file:", "data:")) for u in host.requests), host.requests  # no network
            finally:
                await browser.close()

    return open_
