"""The view in a real MCP Apps host: the MCP Inspector web app (npm @modelcontextprotocol/inspector, pinned in
browser/inspector/package-lock.json with the Node 22 it needs), driven by headless Chromium (Debian's), against the
real server over streamable HTTP (`flux-klein-mcp serve --http`, on the sandbox provider).

How the Inspector runs headless (read from its package and its docs/mcp-app-review.md): `mcp-inspector --web` with
HOST=127.0.0.1, CLIENT_PORT (it must be a fixed port: it builds its origin allow-list from it, so a free one is
picked here), MCP_SANDBOX_PORT=0, MCP_AUTO_OPEN_ENABLED=false and MCP_INSPECTOR_API_TOKEN; then one deep link
(`?serverUrl=...&transport=http&autoConnect=<token>&openApp=<tool>&appArgs=<base64url JSON>`) connects, opens the
Apps tab on the tool with its arguments filled in, and one click on "Open App" calls the tool and renders the view
in the Inspector's sandbox proxy, under the CSP it derives from the view's `_meta.ui.csp`.

`make test-view SCREENSHOTS=docs` writes docs/view.png, docs/view-dark.png and docs/view-lightbox.png from here.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.async_api import FrameLocator, Page, async_playwright, expect

from browser.conftest import CHROMIUM, ROOT, SCREENSHOTS

pytestmark = pytest.mark.anyio
INSPECTOR = ROOT / "browser" / "inspector" / "node_modules"
SERVER = Path(sys.executable).with_name("flux-klein-mcp")
PROMPT = "a paper crane on a walnut desk, soft studio light"
STARTUP_S = 90  # the Inspector's first start (Vite's prebuilt app, the Node backend) on a busy 2-core machine


@dataclass
class Inspector:
    url: str  # the web app
    token: str
    server_url: str  # our server's /mcp
    output: Path

    def deep_link(self, tool: str, args: dict[str, Any]) -> str:
        encoded = base64.urlsafe_b64encode(json.dumps(args).encode()).decode().rstrip("=")
        return (f"{self.url}/?serverUrl={quote(self.server_url, safe='')}&transport=http"
                f"&autoConnect={self.token}&openApp={tool}&appArgs={encoded}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], env: dict[str, str], ready: str, log: Path) -> subprocess.Popen[str]:
    """Start a process of ours and wait for the line that says it is ready (an event, not a sleep)."""
    proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        with log.open("w") as out:
            for line in proc.stdout:
                out.write(line)
                out.flush()
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        while (line := lines.get(timeout=STARTUP_S)) is not None:
            if ready in line:
                return proc
    except queue.Empty:
        pass
    stop(proc)
    raise RuntimeError(f"{command[0]} did not start ({ready!r} never came): see {log}\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[str]) -> None:
    """End a process we started, and its children, by its own process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture(scope="module")
def inspector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inspector]:
    if not (INSPECTOR / ".bin" / "mcp-inspector").exists():
        pytest.fail(f"no MCP Inspector in {INSPECTOR}: run `make test-view`, which installs it")
    base = tmp_path_factory.mktemp("inspector")
    home = base / "home"
    home.mkdir()
    # A neutral folder name: the screenshots in docs/ show the end of this path.
    output = base / "Pictures" / "flux-klein"
    server_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "FLUX_KLEIN_PROVIDER": "sandbox",
                  "FLUX_KLEIN_OUTPUT_DIR": str(output), "FLUX_KLEIN_LEDGER": str(base / "ledger.jsonl")}
    token = secrets.token_hex(24)
    procs: list[subprocess.Popen[str]] = []
    try:
        for attempt in range(3):  # (a free port picked may be taken before the server binds it)
            port = free_port()
            try:
                procs.append(start([str(SERVER), "serve", "--http", "--port", str(port)], server_env,
                                   "Application startup complete", base / f"server-{attempt}.log"))
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        for attempt in range(3):
            client_port = free_port()
            inspector_env = {"PATH": f"{INSPECTOR / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                             "HOME": str(home), "HOST": "127.0.0.1", "CLIENT_PORT": str(client_port),
                             "MCP_SANDBOX_PORT": "0", "MCP_APP_ORIGIN_PORT": "0", "MCP_AUTO_OPEN_ENABLED": "false",
                             "MCP_INSPECTOR_API_TOKEN": token, "MCP_INSPECTOR_SECRET_STORE": "memory",
                             "NO_COLOR": "1"}
            try:
                procs.append(start([str(INSPECTOR / ".bin" / "mcp-inspector"), "--web"], inspector_env,
                                   "is up and running", base / f"inspector-{attempt}.log"))
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        yield Inspector(f"http://127.0.0.1:{client_port}", token, f"http://127.0.0.1:{port}/mcp", output)
    finally:
        for proc in reversed(procs):
            stop(proc)


@asynccontextmanager
async def browser_page(scheme: str = "light", width: int = 1400) -> AsyncIterator[Page]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--font-render-hinting=none"])
        try:
            yield await browser.new_page(viewport={"width": width, "height": 1000}, color_scheme=scheme)
        finally:
            await browser.close()


async def open_app(page: Page, inspector: Inspector, args: dict[str, Any]) -> FrameLocator:
    """The deep link, then the one click a person makes: the tool runs and its view renders."""
    await page.goto(inspector.deep_link("generate_image", args))
    await expect(page.locator('[data-testid="connection-status"]')).to_have_attribute("data-status", "connected",
                                                                                        timeout=60_000)
    await page.locator('[data-testid="open-app"]').click()
    # The Inspector's sandbox proxy (its own origin), and inside it the view (an opaque origin).
    return page.frame_locator("iframe[src*=\"/sandbox\"]").frame_locator("iframe")


async def shoot(page: Page, name: str) -> None:
    """The Inspector's app panel, for docs/ when `make test-view SCREENSHOTS=docs` (else build/browser)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.mouse.move(0, 0)  # no tooltip in the picture
    await page.locator('[data-testid="apps-form"]').screenshot(path=str(SCREENSHOTS / name))


async def natural_widths(images: Any) -> list[int]:
    for image in await images.all():
        await expect(image).to_have_js_property("complete", True)
    return [int(w) for w in await images.evaluate_all("all => all.map(i => i.naturalWidth)")]


async def test_in_the_inspector_images_show_variations_add_a_batch_and_the_lightbox_opens(inspector):
    async with browser_page() as page:
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Content Security" in m.text
                else None)
        view = await open_app(page, inspector, {"prompt": PROMPT, "n": 4, "seed": 7})
        cards = view.locator(".batch").first.locator(".card")
        await expect(cards.locator(".frame img")).to_have_count(4, timeout=60_000)  # (not the placeholders)
        widths = await natural_widths(cards.locator(".frame img"))
        assert widths and all(w > 0 for w in widths), widths  # no grey boxes: the host's CSP lets them in
        await expect(view.locator(".broken")).to_have_count(0)
        await expect(view.locator("#gallery-list .tile")).to_have_count(4)  # the app-only tool, called through it
        await page.get_by_role("button", name="Maximize").click()  # a wider panel: the view reflows to fit it
        await expect(cards.nth(1)).to_be_visible()
        await shoot(page, "view.png")
        await cards.first.get_by_role("button", name="Variations").click()
        await expect(view.locator(".batch")).to_have_count(2, timeout=60_000)
        new = view.locator(".batch").first.locator(".card .frame img")
        await expect(new).to_have_count(2, timeout=60_000)
        assert all(w > 0 for w in await natural_widths(new))
        await new.first.click()
        box = view.get_by_role("dialog")
        await expect(box).to_be_visible()
        assert all(w > 0 for w in await natural_widths(box.locator(".lb-stage img")))
        await shoot(page, "view-lightbox.png")
        await view.locator(".lb-stage").first.press("ArrowRight")
        await expect(box.locator("#lb-count")).to_have_text("2 of 6")
        await view.locator(".lb-stage").first.press("Escape")
        await expect(box).to_be_hidden()
        assert errors == [], errors  # no CSP violation in the real host


async def test_the_inspector_lists_the_three_image_tools_as_apps_and_no_app_only_tool(inspector):
    async with browser_page() as page:
        await page.goto(inspector.deep_link("generate_image", {"prompt": PROMPT}))
        await expect(page.locator('[data-testid="connection-status"]')).to_have_attribute("data-status", "connected",
                                                                                            timeout=60_000)
        await expect(page.get_by_text("MCP Apps (3)")).to_be_visible()
        for name in ("recent_images", "pick_image", "hide_image", "restore_image", "final_price",
                     "Gallery page", "Pick an image", "Hide an image"):
            await expect(page.get_by_text(name, exact=False)).to_have_count(0)


async def test_in_the_inspector_dark(inspector):
    async with browser_page("dark") as page:
        view = await open_app(page, inspector, {"prompt": PROMPT, "n": 2, "seed": 11, "aspect_ratio": "4:5"})
        cards = view.locator(".batch").first.locator(".card")
        await expect(cards.locator(".frame img")).to_have_count(2, timeout=60_000)
        assert all(w > 0 for w in await natural_widths(cards.locator(".frame img")))
        await expect(view.locator("html")).to_have_attribute("data-theme", "dark")
        await page.get_by_role("button", name="Maximize").click()
        await expect(cards.nth(1)).to_be_visible()
        await shoot(page, "view-dark.png")


def test_the_inspector_is_the_pinned_one():
    package = json.loads((INSPECTOR / "@modelcontextprotocol" / "inspector" / "package.json").read_text())
    node = subprocess.run([str(INSPECTOR / ".bin" / "node"), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert package["version"] == "2.12.0" and node.startswith("v22."), (package["version"], node)
    assert shutil.which("node") != str(INSPECTOR / ".bin" / "node")  # Debian's node stays the machine's
