"""`flux-klein-mcp serve --http`: streamable HTTP on `/mcp`, stateless (any replica can answer any request).

Who may come in:
- Loopback by default. Binding any other address needs `FLUX_KLEIN_HTTP_TOKEN`: the server refuses to start
  without it, because anyone who can reach the port could spend the provider credits.
- With the token set, every request to `/mcp` must carry `Authorization: Bearer <token>` (else 401).
- Host and Origin are checked against DNS rebinding: on loopback, only localhost names; elsewhere the hosts in
  `FLUX_KLEIN_HTTP_ALLOWED_HOSTS` when set (the bearer token is the guard otherwise).
- `GET /healthz` answers "ok" without a token, for load balancers; it reveals nothing else.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import Settings
from .errors import ConfigError
from .pipeline import Runtime

log = logging.getLogger("flux_klein_mcp.http")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PATH = "/mcp"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(host) and not settings.http_token:
        raise ConfigError(
            f"Refusing to serve on {host} without FLUX_KLEIN_HTTP_TOKEN: anyone who can reach the port could use "
            "your provider credits. Set FLUX_KLEIN_HTTP_TOKEN to a long random secret (clients then send "
            "'Authorization: Bearer <token>'), or serve on 127.0.0.1."
        )


def _host_header(host: str) -> str:
    """How a Host header names this address (IPv6 in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def transport_security(host: str, settings: Settings) -> TransportSecuritySettings:
    """Host/Origin checks against DNS rebinding.

    On loopback: the localhost names and the bound address (any loopback address, not only the three the SDK
    knows), plus FLUX_KLEIN_HTTP_ALLOWED_HOSTS. Elsewhere: FLUX_KLEIN_HTTP_ALLOWED_HOSTS when set; otherwise
    no Host check, and the bearer token (required there) is the guard.
    """
    names = list(settings.http_allowed_hosts)
    if is_loopback(host):
        names += ["127.0.0.1", "localhost", "[::1]", _host_header(host)]
    elif not names:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = list(dict.fromkeys(names))
    hosts = names + [f"{name}:*" for name in names if ":" not in name.strip("[]") or name.endswith("]")]
    origins = [f"{scheme}://{host_name}" for host_name in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


class BearerToken:
    """ASGI middleware: `/mcp` requires `Authorization: Bearer <token>` (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PATH):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error": "unauthorized",
                                   "message": "Send 'Authorization: Bearer <FLUX_KLEIN_HTTP_TOKEN>'."}).encode()
                response = Response(body, status_code=401, media_type="application/json",
                                    headers={"WWW-Authenticate": 'Bearer realm="flux-klein-mcp"'})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def http_app(server: MCPServer[Runtime], host: str, settings: Settings) -> ASGIApp:
    check_exposure(host, settings)

    server.custom_route("/healthz", methods=["GET"])(_healthz)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=PATH,
        stateless_http=True,
        transport_security=transport_security(host, settings),
        host=host,
    )
    return BearerToken(app, settings.http_token) if settings.http_token else app


def serve_http(server: MCPServer[Runtime], settings: Settings, host: str, port: int) -> None:
    import uvicorn

    app = http_app(server, host, settings)
    guard = "bearer token required" if settings.http_token else "no token (loopback only)"
    log.info("Serving MCP over streamable HTTP at http://%s:%d%s (%s)", host, port, PATH, guard)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
