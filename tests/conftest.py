from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import CallToolResult, TextContent

from flux_klein_mcp.config import Settings
from flux_klein_mcp.server import create_server
from tests.fakes.core import Loopback, mock_transport
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The server's working directory: output/ lands here."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def make_settings(workdir: Path) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        base = {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": "https://openrouter.test/api/v1"}
        return Settings.from_env({**base, **env}, cwd=workdir)

    return make


@pytest.fixture
def fake() -> FakeOpenRouter:
    return FakeOpenRouter()


@pytest.fixture
def loopback(fake: FakeOpenRouter):
    server = Loopback(fake)
    yield server
    server.close()


class Sleeps:
    """Stands in for anyio.sleep: records the waits the policy asks for, returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def connect(fake: FakeOpenRouter, make_settings: Callable[..., Settings], sleeps: Sleeps):
    """`async with connect(**env) as client`: the real server, in memory, against the fake through MockTransport."""

    @asynccontextmanager
    async def open_client(fake_provider: Any = None, *, loopback: bool = False, **env: str) -> AsyncIterator[Client]:
        """`loopback=True` serves the fake on a real socket (the base URL points there) instead of in-process."""
        provider = fake_provider or fake
        if not loopback:
            server = create_server(make_settings(**env), transport=mock_transport(provider), sleep=sleeps)
            async with Client(server) as client:
                yield client
            return
        real = Loopback(provider)
        try:
            server = create_server(make_settings(OPENROUTER_BASE_URL=f"{real.url}/api/v1", **env), sleep=sleeps)
            async with Client(server) as client:
                yield client
        finally:
            real.close()

    return open_client


def summary(result: CallToolResult) -> dict[str, Any]:
    """The JSON text block every successful result starts with."""
    assert not result.is_error, error_text(result)
    first = result.content[0]
    assert isinstance(first, TextContent)
    return json.loads(first.text)


def error_text(result: CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, TextContent))


def output_files(workdir: Path) -> list[Path]:
    folder = workdir / "output"
    return sorted(p for p in folder.iterdir()) if folder.exists() else []
