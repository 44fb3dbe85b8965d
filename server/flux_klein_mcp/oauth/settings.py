"""What sign-in is configured with, checked as a whole when `serve --http` starts (and by `doctor`): a half-set or
contradictory set-up refuses to start with one sentence naming the variable to fix."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Settings, quoted
from ..errors import ConfigError

ISSUER = "FLUX_KLEIN_OAUTH_ISSUER"
PUBLIC_URL = "FLUX_KLEIN_PUBLIC_URL"
AUDIENCE = "FLUX_KLEIN_OAUTH_AUDIENCE"
SCOPES = "FLUX_KLEIN_OAUTH_SCOPES"
#: Where the MCP endpoint is on this server (http_server.PATH); a public URL without it is its base.
MCP_PATH = "/mcp"
EXTRA = "pip install 'flux-klein-mcp[oauth]'"
#: A scope token (RFC 6749 §3.3).
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True)
class OAuthSettings:
    #: The authorization server's issuer identifier, exactly as its tokens' `iss` say it.
    issuer: str
    #: This server's MCP endpoint as clients reach it: the resource of its metadata (RFC 9728).
    resource: str
    #: What the tokens' `aud` must hold: the resource unless FLUX_KLEIN_OAUTH_AUDIENCE says otherwise.
    audience: str
    #: Scopes every token must carry.
    scopes: tuple[str, ...]


def oauth_settings(settings: Settings) -> OAuthSettings | None:
    """Sign-in as configured, or None when it is not; ConfigError for a set-up that is half there or contradicts
    itself."""
    given = {name: value for name, value in ((ISSUER, settings.oauth_issuer), (PUBLIC_URL, settings.public_url),
                                             (AUDIENCE, settings.oauth_audience), (SCOPES, settings.oauth_scopes))
             if value}
    if not given:
        return None
    if ISSUER not in given:
        named = " and ".join(given)
        raise ConfigError(f"{named} {'is' if len(given) == 1 else 'are'} set but {ISSUER} is not: sign-in needs the "
                          f"issuer URL of your authorization server. Set {ISSUER}, or unset {named}.")
    if PUBLIC_URL not in given:
        raise ConfigError(f"{ISSUER} is set but {PUBLIC_URL} is not: sign-in needs this server's URL as clients reach "
                          f"it (e.g. https://images.example.com/mcp), which tokens must be issued for. Set it.")
    if settings.http_token:
        raise ConfigError(f"Both {ISSUER} (sign-in) and FLUX_KLEIN_HTTP_TOKEN (one shared token) are set, and a "
                          "server takes one or the other: unset FLUX_KLEIN_HTTP_TOKEN to have people sign in.")
    issuer = checked_url(ISSUER, settings.oauth_issuer)
    resource = checked_url(PUBLIC_URL, settings.public_url)
    path = urlsplit(resource).path.rstrip("/")
    resource = resource.rstrip("/") if path.endswith(MCP_PATH) else resource.rstrip("/") + MCP_PATH
    scopes = tuple(settings.oauth_scopes.split())
    if bad := next((scope for scope in scopes if not _SCOPE.fullmatch(scope)), None):
        raise ConfigError(f"{SCOPES} holds {quoted(bad)}, which is not a scope (no quotes or backslashes); list "
                          "the scopes separated by spaces.")
    _no_shared_inputs(settings)
    return OAuthSettings(issuer, resource, settings.oauth_audience or resource, scopes)


def require_jose() -> None:
    """PyJWT with its cryptography, or a sentence naming the extra that installs them."""
    try:
        import jwt  # noqa: F401
        from jwt.algorithms import has_crypto
    except ImportError:
        raise ConfigError(f"Sign-in ({ISSUER}) checks tokens with PyJWT, which is not installed: {EXTRA}") from None
    if not has_crypto:
        raise ConfigError(f"Sign-in ({ISSUER}) checks token signatures with PyJWT's cryptography support, which is "
                          f"not installed: {EXTRA}")


def checked_url(name: str, value: str) -> str:
    """An https:// URL (http:// only on this machine's loopback, for trying it out), with no query or fragment."""
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        host, parts = "", urlsplit("")
    if parts.scheme not in ("https", "http") or not host or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{name}={quoted(value)} is not a URL sign-in can use: give an https:// URL with no query, "
                          "fragment or user name.")
    if parts.scheme == "http" and not _loopback(host):
        raise ConfigError(f"{name}={quoted(value)} is plain http:// to another machine: tokens and sign-in pages "
                          "must travel over https://. Use its https:// URL.")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_shared_inputs(settings: Settings) -> None:
    """With sign-in every person's images are their own; an input folder holding the output folder would let anyone
    send another person's images as inputs."""
    output = os.path.realpath(settings.output_dir)
    for folder in settings.input_dirs:
        real = os.path.realpath(folder)
        if output == real or output.startswith(real.rstrip(os.sep) + os.sep) or real.startswith(output + os.sep):
            raise ConfigError(f"FLUX_KLEIN_INPUT_DIRS holds {folder}, which holds, is or lies in the output folder: "
                              "with sign-in each person's images are theirs alone, and this would let anyone send "
                              "the others' as inputs. Take it out of FLUX_KLEIN_INPUT_DIRS.")
