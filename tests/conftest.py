from __future__ import annotations

import contextlib
import os
import tempfile
import uuid

# Before anything reads it: the default ledger (~/.local/state/...) and the per-user output folder must never be
# the user's during tests. HOME too: a server the MCP SDK spawns over stdio gets HOME from this process but not
# the XDG variables (its default environment is a short list), and would write the user's own ledger.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="flux-klein-state-")
os.environ["HOME"] = tempfile.mkdtemp(prefix="flux-klein-home-")

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.lowlevel
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import CallToolResult, Implementation, ListRootsResult, Root, TextContent

from flux_klein_mcp.config import Settings
from flux_klein_mcp.server import create_server
from tests.fakes.core import Loopback, mock_transport
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter

#: How the tests' clients name themselves. A client that keeps the SDK's default name gets no resource_links
#: (that is how LangChain's adapters are recognised; see server.wants_links).
TEST_CLIENT = Implementation(name="flux-klein-mcp-tests", version="1")


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
def ledger(tmp_path: Path) -> Path:
    """This test's own ledger (never the user's): a SQLite file."""
    return tmp_path / "state" / "ledger.sqlite3"


def ledger_rows(path: Path, table: str = "charges") -> list[dict[str, Any]]:
    """The rows of a SQLite ledger (FLUX_KLEIN_LEDGER's value: a .jsonl path names the .sqlite3 beside it), as
    dicts, with `usd` for the whole micro-dollars; [] when there is no ledger yet."""
    import sqlite3

    path = path.with_suffix(".sqlite3") if path.suffix == ".jsonl" else path
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    for row in rows:
        row["usd"] = row["micro_usd"] / 1_000_000
    return rows


#: Both backends of the ledger; PostgreSQL's needs a server (`make test-postgres` starts one).
BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


def postgres_url() -> str:
    """The test server's URL; without one, skip (fail under CI=true: the suite must not pass by skipping)."""
    url = os.environ.get("FLUX_KLEIN_TEST_POSTGRES", "")
    if not url:
        message = "no PostgreSQL server: run `make test-postgres`, which starts one (FLUX_KLEIN_TEST_POSTGRES)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(params=BACKENDS)
def ledger_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """FLUX_KLEIN_LEDGER for this test's own ledger, on each backend: a SQLite file, or a PostgreSQL schema of
    its own (a URL whose search_path is that schema), dropped afterwards."""
    if request.param == "sqlite":
        yield str(tmp_path / "state" / "ledger.sqlite3")
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def postgres_at() -> Iterator[str]:
    """Like `ledger_at`, PostgreSQL only (mark the test `postgres`)."""
    with postgres_schema() as url:
        yield url


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    import psycopg

    url, schema = postgres_url(), f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def book(ledger_at: str) -> Iterator[Any]:
    """This test's own ledger, opened on each backend (`ledger_at`)."""
    from tests.ledger_helpers import open_at

    ledger = open_at(ledger_at)
    yield ledger
    ledger.close()


def rows_at(where: str, table: str = "charges") -> list[dict[str, Any]]:
    """The rows of a ledger on either backend, as dicts with `usd` added, in the order they were written."""
    if not where.startswith("postgresql://"):
        return ledger_rows(Path(where), table)
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(where, autocommit=True, row_factory=dict_row) as db:
        exists = db.execute("SELECT to_regclass(%s) IS NOT NULL AS here", (table,)).fetchone()
        if not exists or not exists["here"]:
            return []
        rows = db.execute(f"SELECT * FROM {table} ORDER BY {'id' if table == 'charges' else 'at'}").fetchall()
    for row in rows:
        row["usd"] = row["micro_usd"] / 1_000_000
    return rows


@pytest.fixture
def make_settings(workdir: Path, ledger: Path) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        return Settings.from_env({"FLUX_KLEIN_LEDGER": str(ledger), **env}, cwd=workdir)

    return make


@pytest.fixture
def fake() -> FakeOpenRouter:
    return FakeOpenRouter()


@pytest.fixture
def loopback(fake: FakeOpenRouter):
    server = Loopback(fake)
    yield server
    server.close()


@pytest.fixture
def openrouter():
    """A fake OpenRouter on a real socket, and the variables that point a server process at it."""
    fake = FakeOpenRouter()
    server = Loopback(fake)
    yield fake, {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{server.url}/api/v1"}
    server.close()


class Sleeps:
    """Stands in for anyio.sleep: records the waits the policy asks for, returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.lowlevel.checkpoint()  # like a real sleep, let the event loop run (and time out)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def provider_env(fake: Any, base_url: str | None = None) -> dict[str, str]:
    """The variables that point the server at `fake`: its key and base URL (and nothing for other providers)."""
    spec = getattr(fake, "spec", None)
    if spec is None:
        return {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{base_url or 'https://openrouter.test'}/api/v1"}
    env = {"OPENROUTER_API_KEY": "", spec.key_variable: spec.key,
           spec.base_url_variable: f"{base_url or f'https://{spec.name}.test'}/v1"}
    if spec.name == "openai-compatible":
        env["FLUX_KLEIN_MODEL"] = spec.model
    return env


@pytest.fixture
def connect(fake: FakeOpenRouter, make_settings: Callable[..., Settings], sleeps: Sleeps):
    """`async with connect(**env) as client`: the real server, in memory, against a fake provider.

    The fake (OpenRouter's unless one is given) is reached through MockTransport, or with `loopback=True` on a
    real socket; the provider's key and base URL are set for it, and `env` overrides anything. `roots` and
    `elicit` (an elicitation callback) give the client those capabilities, `apps=True` declares the MCP Apps
    extension (a host that shows the view); `mode` picks the protocol era.
    """

    @asynccontextmanager
    async def open_client(
        fake_provider: Any = None, *, loopback: bool = False, roots: list[Path] | None = None,
        elicit: Any = None, mode: str = "auto", apps: bool = False, **env: str
    ) -> AsyncIterator[Client]:
        provider = fake_provider or fake
        real = Loopback(provider) if loopback else None
        try:
            settings = make_settings(**{**provider_env(provider, real.url if real else None), **env})
            transport = None if real else mock_transport(provider)
            list_roots = None
            if roots is not None:

                async def list_roots(context: Any) -> ListRootsResult:
                    return ListRootsResult(roots=[Root(uri=root.as_uri(), name=root.name) for root in roots])

            server = create_server(settings, transport=transport, sleep=sleeps)
            extensions = [advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})] if apps else None
            async with Client(server, list_roots_callback=list_roots, elicitation_callback=elicit, mode=mode,
                              client_info=TEST_CLIENT, extensions=extensions) as client:  # type: ignore[arg-type]
                yield client
        finally:
            if real:
                real.close()

    return open_client


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition another task or process brings about (for when no event is exposed)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


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
