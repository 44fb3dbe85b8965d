"""`serve --http` as an OAuth 2.1 resource server (the MCP authorization spec), wired from the SDK's parts:

- `/.well-known/oauth-protected-resource` (RFC 9728; also under the endpoint's path, where the spec has clients look
  first) names the authorization server and the scopes;
- every `/mcp` request needs a valid access token: without one, 401 with `WWW-Authenticate: Bearer
  resource_metadata=...` (and why the token was refused); with one that lacks a scope, 403 `insufficient_scope`;
  503 when the authorization server's keys cannot be had, since then no token can be checked;
- the request is then served as the token's person (`people.signed_in`), and the SDK's own context knows the token
  (approval rounds are bound to it).
"""

from __future__ import annotations

import re
from typing import Any, cast

import httpx
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl
from starlette.authentication import AuthCredentials, AuthenticationError, BaseUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import people
from . import discovery
from .settings import OAuthSettings
from .tokens import Keys, Refused, TokenChecker

#: Where a refused token's reason waits for the 401 (in the ASGI scope).
_REFUSAL = "flux_klein_refusal"
#: An RFC 6750 error_description is a quoted string of printable ASCII without `"` and `\`.
_UNQUOTABLE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
RETRY_S = 30


class _Backend(BearerAuthBackend):
    """The SDK's bearer backend, keeping why a token was refused."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        try:
            return await super().authenticate(conn)  # type: ignore[no-any-return]
        except Refused as exc:
            conn.scope[_REFUSAL] = str(exc)
            return None


class SignedIn(RequireAuthMiddleware):
    """The SDK's guard (401, 403 `insufficient_scope`), saying why a token was refused, and serving what it lets in
    as the token's person."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            with people.signed_in(person_of(user)):
                await super().__call__(scope, receive, send)
            return
        reason = scope.get(_REFUSAL)
        description = (f"The access token was refused: {reason}." if reason else
                       "Sign in: this server needs 'Authorization: Bearer <access token>' from its authorization "
                       "server (see the resource metadata).")
        await self._send_auth_error(send, 401, "invalid_token", _UNQUOTABLE.sub("?", description))


def person_of(user: AuthenticatedUser) -> people.Person:
    token = user.access_token
    return people.Person(str((token.claims or {})["iss"]), str(token.subject))


def protect(endpoint: ASGIApp, config: OAuthSettings) -> tuple[ASGIApp, list[Route], list[Middleware]]:
    """The MCP endpoint behind sign-in, the resource metadata's routes, and the middleware that checks tokens."""
    checker = TokenChecker(config, Keys(lambda: signing_keys(config.issuer)))
    resource = AnyHttpUrl(config.resource)
    scopes = list(config.scopes)
    # (the issuer as a string: the metadata model keeps it exactly as given, which clients compare it to; an
    # AnyHttpUrl would gain a trailing slash)
    routes = create_protected_resource_routes(resource, [cast(AnyHttpUrl, config.issuer)], scopes or None,
                                              resource_name="flux-klein-mcp")
    handler = routes[0].endpoint
    # Also at the root and under this server's own path: a proxy may serve the endpoint under another path.
    for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
        if path not in {route.path for route in routes}:
            routes.append(Route(path, endpoint=handler, methods=["GET", "OPTIONS"]))
    middleware = [Middleware(AuthenticationMiddleware, backend=_Backend(checker), on_error=_unavailable),
                  Middleware(AuthContextMiddleware)]
    return SignedIn(endpoint, scopes, build_resource_metadata_url(resource)), routes, middleware


async def signing_keys(issuer: str) -> list[dict[str, Any]]:
    """The authorization server's keys, by way of its metadata (fetched again with them: a JWKS may move)."""
    async with httpx.AsyncClient() as http:
        found = await discovery.metadata(http, issuer)
        return await discovery.key_set(http, found["jwks_uri"])


def _unavailable(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    return JSONResponse({"error": "temporarily_unavailable",
                         "error_description": f"Access tokens cannot be checked now: {exc}. Try again shortly."},
                        status_code=503, headers={"Retry-After": str(RETRY_S)})
