"""The authorization server's metadata, found by the standard discovery (RFC 8414's
`/.well-known/oauth-authorization-server`, then OpenID Connect's `/.well-known/openid-configuration`, in the order
the MCP authorization spec gives), and its signing keys (the JWKS at its `jwks_uri`)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from mcp.client.auth.utils import build_oauth_authorization_server_metadata_discovery_urls

from ..config import Settings
from ..errors import ConfigError
from .settings import ISSUER, checked_url

#: Metadata and key sets are small; anything larger is not one.
MAX_BYTES = 512 * 1024
TIMEOUT_S = 10.0


class Unreachable(Exception):
    """The authorization server's metadata or keys cannot be had now (down, misconfigured, not an OAuth server)."""


async def metadata(http: httpx.AsyncClient, issuer: str) -> dict[str, Any]:
    """The authorization server's metadata: the first discovery URL that answers with metadata for `issuer`."""
    tried = []
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
        try:
            found = await get_json(http, url)
        except Unreachable as exc:
            tried.append(f"{url}: {exc}")
            continue
        if found.get("issuer") != issuer:  # RFC 8414 §3.3: metadata for another issuer is not this one's
            tried.append(f"{url}: it is the metadata of issuer {str(found.get('issuer'))[:200]!r}")
            continue
        if not isinstance(found.get("jwks_uri"), str):
            raise Unreachable(f"the authorization server's metadata ({url}) names no jwks_uri, so its tokens' "
                              "signatures cannot be checked")
        try:
            checked_url("its jwks_uri", found["jwks_uri"])
        except Exception as exc:
            raise Unreachable(str(exc)) from None
        return found
    raise Unreachable(f"no metadata for issuer {issuer} ({'; '.join(tried)}). Check {ISSUER}: it must be the "
                      "issuer exactly as the server's tokens name it (`iss`)")


async def key_set(http: httpx.AsyncClient, jwks_uri: str) -> list[dict[str, Any]]:
    """The keys of a JWKS document (RFC 7517 §5)."""
    found = await get_json(http, jwks_uri)
    keys = found.get("keys")
    if not isinstance(keys, list):
        raise Unreachable(f"{jwks_uri} is not a JWK set (no `keys` list)")
    return [key for key in keys if isinstance(key, dict)]


async def get_json(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A JSON object from `url`, read up to MAX_BYTES (no redirects: metadata says where everything is)."""
    try:
        async with http.stream("GET", url, headers={"accept": "application/json"}, timeout=TIMEOUT_S,
                               follow_redirects=False) as response:
            if response.status_code != 200:
                raise Unreachable(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BYTES:
                    raise Unreachable(f"more than {MAX_BYTES // 1024} KB")
    except httpx.HTTPError as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
    try:
        value = json.loads(body)
    except ValueError:
        raise Unreachable("not JSON") from None
    if not isinstance(value, dict):
        raise Unreachable("not a JSON object")
    return value


async def report(settings: Settings, http: httpx.AsyncClient) -> dict[str, Any] | None:
    """What `doctor` says about sign-in: the issuer, audience and scopes used, and whether the authorization server's
    metadata and keys can be fetched now; None when sign-in is not configured."""
    from .settings import oauth_settings, require_jose

    try:
        config = oauth_settings(settings)
        if config is None:
            return None
        require_jose()
    except ConfigError as exc:
        return {"status": "misconfigured", "detail": exc.raw}
    out: dict[str, Any] = {"issuer": config.issuer, "resource": config.resource, "audience": config.audience,
                           "scopes": list(config.scopes)}
    try:
        found = await metadata(http, config.issuer)
        keys = await key_set(http, found["jwks_uri"])
    except Unreachable as exc:
        return {**out, "status": "unreachable", "detail": str(exc)}
    signing = [key for key in keys if key.get("use", "sig") == "sig"]
    if not signing:
        return {**out, "status": "no keys", "detail": f"{found['jwks_uri']} publishes no signing key"}
    return {**out, "status": "ok", "jwks_uri": found["jwks_uri"],
            "detail": f"metadata and {len(signing)} signing key(s) fetched from {found['jwks_uri']}"}
