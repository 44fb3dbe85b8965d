"""The server as it is deployed: `serve --http` processes (one, or replicas sharing a ledger behind nginx) driven by
real clients, each in its own pinned environment (deployment/drivers). Run with `make test-http`.

Fixtures: `provider` (a strict fake OpenRouter on loopback), `ledger_location` (what FLUX_KLEIN_LEDGER names: the
ledger every replica shares), `replica_env`, and the context managers `replica(...)`, `nginx(...)`, `drive(...)`.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.core import Loopback
from tests.fakes.openrouter import TEST_KEY, FakeOpenRouter

from deployment.nginx import nginx_binary

ROOT = Path(__file__).resolve().parents[1]
COMMAND = str(ROOT / ".venv" / "bin" / "flux-klein-mcp")
#: Each client in its own environment (`make test-http` builds them): the SDK 1.x and LangChain's adapters need
#: mcp<2, the SDK 2.x `Client` is the pinned one of .venv-clients.
PYTHONS = {"sdk1": ROOT / ".venv-langchain/bin/python", "langchain": ROOT / ".venv-langchain/bin/python",
           "sdk2": ROOT / ".venv-clients/bin/python"}
SECRET = "s3cret-" + "Vb8nQ2xLk7Rw4Zp9" * 3
TOKEN = "t0k3n-" + "Qm7xK2pV9zL4wR8s" * 3


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [str(python) for python in PYTHONS.values() if not python.exists()]
    if nginx_binary() is None:
        missing.append("nginx (apt-get install nginx-light)")
    if missing:  # a deployment check that cannot run fails: it never passes by being skipped
        raise pytest.UsageError("make test-http needs: " + ", ".join(missing))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def provider() -> Iterator[tuple[FakeOpenRouter, dict[str, str]]]:
    fake = FakeOpenRouter()
    server = Loopback(fake)
    yield fake, {"OPENROUTER_API_KEY": TEST_KEY, "OPENROUTER_BASE_URL": f"{server.url}/api/v1"}
    server.close()


#: Run a test on both ledger backends (its servers share a SQLite file, or a PostgreSQL database).
BOTH_LEDGERS = pytest.mark.parametrize("ledger_location", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def ledger_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """FLUX_KLEIN_LEDGER for every server of a test: the one ledger the replicas share. SQLite (replicas on one
    machine) unless the test asks for both with `BOTH_LEDGERS`: PostgreSQL is what replicas on several machines
    share (`make test-http` starts a server for it)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield str(tmp_path / "state" / "ledger.sqlite3")
        return
    from tests.conftest import postgres_schema

    with postgres_schema() as url:
        yield url


@pytest.fixture
def replica_env(tmp_path: Path, provider: tuple[FakeOpenRouter, dict[str, str]],
                ledger_location: str) -> dict[str, str]:
    """What every server of a test runs with: the provider, one output folder, one ledger, one secret."""
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **provider[1],
            "FLUX_KLEIN_OUTPUT_DIR": str(tmp_path / "out"), "FLUX_KLEIN_LEDGER": ledger_location,
            "FLUX_KLEIN_HTTP_SECRET": SECRET}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Replica:
    url: str
    address: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)


@contextmanager
def replica(env: dict[str, str], cwd: Path, *, host: str = "127.0.0.1", nofile: int | None = None) -> Iterator[Replica]:
    """`flux-klein-mcp serve --http` (with its open-file limit lowered to `nofile`), once uvicorn is ready."""
    port = free_port()

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen([COMMAND, "serve", "--http", "--host", host, "--port", str(port)], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit)
    ready = threading.Event()
    served = Replica(f"http://{host}:{port}/mcp", f"{host}:{port}", proc)

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            served.lines.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(30) and proc.poll() is None, served.log
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def drive(client: str, plan: dict[str, Any], timeout: float = 300) -> list[dict[str, Any]]:
    """Run a client driver (deployment/drivers/<client>.py) in its own environment; what it saw, step by step."""
    done = subprocess.run([str(PYTHONS[client]), "-m", f"deployment.drivers.{client}", json.dumps(plan)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{client} failed:\n{done.stderr[-4000:]}"
    steps: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])["steps"]
    return steps
