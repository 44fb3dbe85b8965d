"""Both generations of the official SDK client and LangChain's adapters, for real, over `serve --http` (behind a
bearer token): each does the same steps over stdio and over HTTP and must see the same - whether it gets
`resource_link`s, whether the person is asked before a high-tier call, whether the app-only tool is offered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deployment.conftest import COMMAND, TOKEN, drive, replica

FOX = {"prompt": "a red fox in the snow"}
STEPS = [["list"], ["call", "generate_image", {**FOX, "seed": 1}],
         ["call", "generate_image", {**FOX, "tier": "high", "seed": 2}], ["call", "recent_images", {"limit": 1}]]
VIEW_TOOL = "recent_images"

CLIENTS = [
    pytest.param("sdk1", {}, id="sdk-1.x-anonymous"),  # what LangChain's adapters send: mcp/0.1.0
    pytest.param("sdk1", {"client": {"name": "an-ide", "version": "2.0"}}, id="sdk-1.x-named"),
    pytest.param("sdk2", {"mode": "legacy", "apps": True}, id="sdk-2.x-2025-protocol-with-the-view"),
    pytest.param("sdk2", {"mode": "auto", "apps": True}, id="sdk-2.x-2026-protocol-with-the-view"),
    pytest.param("sdk2", {"mode": "legacy"}, id="sdk-2.x-2025-protocol"),
    pytest.param("langchain", {}, id="langchain-mcp-adapters"),
]


def seen(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What must not depend on the transport: the tools offered, and per call its outcome, its kinds of blocks,
    how often the person was asked, and the schemes of any URLs the client made of the result."""
    return [step if "tools" in step or "unlisted" in step else
            {"error": step["error"], "kinds": step["kinds"], "asked": len(step["asked"]),
             "urls": sorted({url.split(":", 1)[0] for url in step.get("urls", [])})} for step in steps]


@pytest.mark.parametrize(("client", "extra"), CLIENTS)
def test_a_client_sees_the_same_over_http_as_over_stdio(client, extra, tmp_path: Path, provider, replica_env):
    fake, _ = provider
    env = {**replica_env, "FLUX_KLEIN_HTTP_TOKEN": TOKEN}
    plan = {"answer": "accept", "steps": STEPS, **extra}
    over_stdio = drive(client, {**plan, "target": {"command": COMMAND, "env": env, "cwd": str(tmp_path)}})
    with replica(env, tmp_path) as server:
        over_http = drive(client, {**plan, "target": {"url": server.url, "token": TOKEN}})
    assert seen(over_http) == seen(over_stdio)

    listed, low, high, view = over_http
    named = bool(extra.get("client"))
    assert low["error"] is False and low["kinds"].count("resource_link") == (1 if named else 0), low
    assert high["error"] is False and len(high["asked"]) == 1, high
    assert "Approve this spend?" in high["asked"][0]
    assert not [url for step in over_http for url in step.get("urls", []) if url.startswith("file:")]
    if extra.get("apps"):
        assert VIEW_TOOL in listed["tools"] and view["error"] is False and view["kinds"] == ["text", "image"]
    else:
        assert VIEW_TOOL not in listed["tools"]
        assert view.get("unlisted") == VIEW_TOOL or "serves the image view" in view["text"]
    assert len(fake.completions) == 4  # two images on each transport, none for the view


@pytest.mark.parametrize("client", ["sdk1", "langchain"])
def test_a_declined_approval_spends_nothing_over_http(client, tmp_path: Path, provider, replica_env):
    fake, _ = provider
    with replica(replica_env, tmp_path) as server:
        steps = drive(client, {"answer": "decline", "target": {"url": server.url},
                               "steps": [["call", "generate_image", {**FOX, "tier": "high"}]]})
    assert steps[0]["error"] and "declined the high-tier spend" in steps[0]["text"] and len(steps[0]["asked"]) == 1
    assert fake.requests == []


def test_a_client_that_declares_no_elicitation_is_refused_in_our_words(tmp_path: Path, provider, replica_env):
    fake, _ = provider
    with replica(replica_env, tmp_path) as server:
        steps = drive("sdk1", {"answer": None, "target": {"url": server.url},
                               "steps": [["call", "generate_image", {**FOX, "tier": "high"}]]})
    assert steps[0]["error"] and "declares no elicitation" in steps[0]["text"] and fake.requests == []
