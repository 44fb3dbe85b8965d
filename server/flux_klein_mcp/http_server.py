"""`flux-klein-mcp serve --http`: streamable HTTP on `/mcp`, stateless (any replica can answer any request).

Who may come in:
- Loopback by default. Binding any other address needs `FLUX_KLEIN_HTTP_TOKEN`: the server refuses to start
  without it, because anyone who can reach the port could spend the provider credits.
- With the token set, every request to `/mcp` must carry `Authorization: Bearer <token>` (else 401).
- Or people sign in (FLUX_KLEIN_OAUTH_ISSUER): every request carries an access token from the authorization server,
  and is served as its person (see oauth/). Either one lets the server listen beyond loopback.
- Host and Origin are checked against DNS rebinding: on loopback, only localhost names; elsewhere the hosts in
  `FLUX_KLEIN_HTTP_ALLOWED_HOSTS` when set (the bearer token is the guard otherwise).
- `GET /healthz` answers "ok" without a token, for load balancers; it reveals nothing else.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import UNFILLED, Settings
from .errors import ConfigError
from .oauth.settings import OAuthSettings, oauth_settings, require_jose
from .redact import counts_as_secret
from .remote.secret import check_secret, shared_secret

if TYPE_CHECKING:
    from .sdk import FluxServer

log = logging.getLogger("flux_klein_mcp.http")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PATH = "/mcp"
#: Seconds a SIGTERM'd server lets the calls in flight finish before cancelling them.
DRAIN_S = 5


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MIN_TOKEN_CHARS = 16
_MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_exposure(host: str, settings: Settings) -> OAuthSettings | None:
    """Refuse to listen beyond this machine without a token or sign-in, a token anyone could guess, and sign-in that
    is half set or contradicts itself; the sign-in settings when people sign in."""
    signin = oauth_settings(settings)
    if signin is not None:
        require_jose()
        return signin
    token = settings.http_token
    if token is not None and UNFILLED.fullmatch(token):  # guessable by anyone who reads the client's config
        raise ConfigError(
            f"FLUX_KLEIN_HTTP_TOKEN is {token}, a reference to a variable that was passed on unexpanded, not a "
            f"secret. Set it to a long random value (the output of: {_MAKE_TOKEN})."
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"FLUX_KLEIN_HTTP_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_CHARS} random ones, e.g. "
            f"the output of: {_MAKE_TOKEN}"
        )
    if token is not None and not counts_as_secret(token):  # (then it would not be kept out of logs and results)
        raise ConfigError(
            "FLUX_KLEIN_HTTP_TOKEN looks guessable (words, a repeated character, or too few letters and digits). Set "
            f"it to a long random value, e.g. the output of: {_MAKE_TOKEN}"
        )
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"Refusing to serve on {host} without FLUX_KLEIN_HTTP_TOKEN: anyone who can reach the port could use "
            f"your provider credits. Set FLUX_KLEIN_HTTP_TOKEN to a long random secret ({_MAKE_TOKEN}); clients "
            "then send 'Authorization: Bearer <token>'. Or have people sign in (FLUX_KLEIN_OAUTH_ISSUER, see "
            "docs/oauth.md), or serve on 127.0.0.1."
        )
    return None


def check_port_free(host: str, port: int) -> None:
    """Fail with a clear message, before start-up, when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on {host}:{port} ({exc.strerror or exc}). Choose another --port, or stop what is "
                "using it."
            ) from None


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
    public = urlsplit(settings.public_url).hostname if settings.oauth_issuer and settings.public_url else None
    if public and (names or is_loopback(host)):  # (behind a proxy on this machine, clients name the public host)
        names.append(_host_header(public))
    if is_loopback(host):
        names += ["127.0.0.1", "localhost", "[::1]", _host_header(host)]
    elif not names:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = list(dict.fromkeys(names))
    hosts = names + [f"{name}:*" for name in names if ":" not in name.strip("[]") or name.endswith("]")]
    origins = [f"{scheme}://{host_name}" for host_name in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


#: The MCP SDK refuses a larger request body over HTTP, whatever FLUX_KLEIN_MAX_INPUT_MB says.
MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE
TOO_LARGE = (
    f"The request is larger than the {MAX_BODY_BYTES // 1048576} MiB an MCP request may be over HTTP, so it was not "
    "read: an image sent as a data URL can be at most about 3 MB here. Send the image as an https:// URL, or put the "
    "file in a folder of FLUX_KLEIN_INPUT_DIRS on the server and pass its path."
)


class Gate:
    """ASGI middleware in front of `/mcp`: the bearer token when one is set (compared in constant time); 405 for
    GET, since a stateless server has no stream to offer there (a plain GET would hang forever); and a request
    body over the SDK's cap refused in our words (a JSON-RPC error naming the way around it), not as a bare 413."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(PATH):
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if self.expected is not None and not hmac.compare_digest(given, self.expected):
                await _json(401, "unauthorized", "Send 'Authorization: Bearer <FLUX_KLEIN_HTTP_TOKEN>'.",
                            {"WWW-Authenticate": 'Bearer realm="flux-klein-mcp"'})(scope, receive, send)
                return
            if scope.get("method") == "GET":
                await _json(405, "method not allowed", "This stateless MCP endpoint takes POST (JSON-RPC) only.",
                            {"Allow": "POST, DELETE"})(scope, receive, send)
                return
            if _declared_length(headers) > MAX_BODY_BYTES:  # (a body sent without a length gets the SDK's 413)
                await _too_large()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _declared_length(headers: dict[bytes, bytes]) -> int:
    try:
        return int(headers.get(b"content-length", b"0"))
    except ValueError:
        return 0


def _too_large() -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": TOO_LARGE}}
    return Response(json.dumps(body).encode(), status_code=413, media_type="application/json")


def _json(status: int, error: str, message: str, headers: dict[str, str]) -> Response:
    body = json.dumps({"error": error, "message": message}).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def http_app(server: FluxServer, host: str, settings: Settings) -> ASGIApp:
    """`/mcp` (the SDK's stateless streamable HTTP, remembering 2025-era clients: see remote/) and `/healthz`."""
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from .remote.asking import Answers
    from .remote.legacy import RememberingSessionManager
    from .remote.sessions import Sessions
    from .remote.shared import LedgerShared

    signin = check_exposure(host, settings)
    check_secret(settings)
    manager = RememberingSessionManager(
        server.lowlevel, sessions=Sessions(shared_secret(settings)),
        answers=Answers(LedgerShared(settings.ledger, settings.timezone)),
        security_settings=transport_security(host, settings))
    endpoint: ASGIApp = StreamableHTTPASGIApp(manager)
    routes = [Route("/healthz", endpoint=_healthz, methods=["GET"])]
    middleware: list[Middleware] = []
    if signin is not None:
        from .oauth.app import protect

        endpoint, metadata, middleware = protect(endpoint, signin)
        routes += metadata
    app = Starlette(routes=[Route(PATH, endpoint=endpoint), *routes], middleware=middleware,
                    lifespan=lambda _: manager.run())
    return Gate(app, settings.http_token)


def serve_http(server: FluxServer, settings: Settings, host: str, port: int) -> None:
    from .remote.limits import limits_for, run

    app = http_app(server, host, settings)
    limits = limits_for(settings.http_max_connections, settings.http_peer_connections, settings.http_read_timeout_s)
    signin = oauth_settings(settings)
    guard = ("bearer token required" if settings.http_token else "no token: loopback only") if signin is None else (
        f"sign-in with {signin.issuer}, tokens for {signin.audience}"
        + (f" with scopes {' '.join(signin.scopes)}" if signin.scopes else ""))
    log.info("Serving MCP over streamable HTTP at http://%s:%d%s (%s)", host, port, PATH, guard)
    log.info("At most %d connections (%s per client address); %g s to send a request's headers", limits.max_connections,
             limits.per_peer or "no cap", limits.read_timeout_s)
    if not is_loopback(host) and not settings.http_allowed_hosts:
        log.warning("The Host header is not checked: set FLUX_KLEIN_HTTP_ALLOWED_HOSTS to the names clients use")
    if settings.http_secret is None:
        log.info("FLUX_KLEIN_HTTP_SECRET is unset: this server made its own. Replicas behind one address need the "
                 "same one, or each rejects the sessions and approvals the others handed out")
    for noisy in ("mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # a line per stateless request otherwise
    # On SIGTERM uvicorn stops taking requests and, after DRAIN_S, cancels those in flight: each call's
    # cancellation rolls back what it saved, as for a client's cancel. sse-starlette would end every event stream
    # (the responses of the 2025-11-25 protocol) at the first signal instead, cutting calls already paid for.
    from sse_starlette.sse import AppStatus

    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    run(app, host, port, limits, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=DRAIN_S)
