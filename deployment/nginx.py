"""A real reverse proxy for the tests: Debian's nginx, on loopback, round-robin over the replicas, with the settings
docs/remote.md recommends for a public deployment (less TLS). `PROXY_SETTINGS` is that list: a test holds the
docs to it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

#: The directives docs/remote.md shows, in the order it shows them (the `server` and `location` parts).
PROXY_SETTINGS = [
    "client_header_timeout 10s;",
    "client_body_timeout 10s;",
    "keepalive_timeout 30s;",
    "send_timeout 60s;",
    "reset_timedout_connection on;",
    "client_max_body_size 5m;",
    "limit_conn flux_klein_peers 32;",
    "limit_conn_status 429;",
    "proxy_http_version 1.1;",
    'proxy_set_header Connection "";',
    "proxy_set_header Host $host;",
    "proxy_buffering off;",
    "proxy_read_timeout 900s;",
    "proxy_next_upstream error timeout;",
]


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


@dataclass
class Proxy:
    url: str
    access_log: Path

    def upstreams(self) -> list[tuple[str, str, str]]:
        """(upstream address, MCP method header, status) of each request it passed on, in order."""
        rows = []
        for line in self.access_log.read_text().splitlines():
            upstream, method, status = (line.split(" ") + ["", "", ""])[:3]
            rows.append((upstream, method, status))
        return rows


def config(folder: Path, port: int, upstreams: list[str]) -> str:
    servers = "\n".join(f"    server {address};" for address in upstreams)
    settings = "\n".join(f"    {line}" for line in PROXY_SETTINGS)
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log notice;
events {{ worker_connections 512; }}
http {{
  log_format flux '$upstream_addr $http_mcp_method $status';
  access_log {folder}/access.log flux;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  limit_conn_zone $binary_remote_addr zone=flux_klein_peers:10m;
  upstream flux_klein {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
{settings}
    location / {{
      proxy_pass http://flux_klein;
    }}
  }}
}}
"""


@contextmanager
def nginx(folder: Path, upstreams: list[str]) -> Iterator[Proxy]:
    """nginx in the foreground on a free loopback port; stopped on exit."""
    binary = nginx_binary()
    assert binary, "nginx is not installed: `apt-get install nginx-light` (.ci/run does)"
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(5):  # nginx cannot bind port 0: a port that was free a moment ago may have been taken
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        (folder / "nginx.conf").write_text(config(folder, port, upstreams))
        proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e",
                                 str(folder / "error.log")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if _ready(proc, port):
            break
        proc.kill()
        proc.wait()
    else:
        raise AssertionError("nginx did not start:\n" + (folder / "error.log").read_text()[-2000:])
    try:
        yield Proxy(f"http://127.0.0.1:{port}/mcp", folder / "access.log")
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(proc: subprocess.Popen[str], port: int) -> bool:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.05)
    return False
