"""The secret replicas share: it seals the session ids of 2025-era clients and the `requestState` of 2026-07-28
approval rounds, so that any replica can read what another one handed out.

Without FLUX_KLEIN_HTTP_SECRET this process makes a random one for itself: right for one server, while replicas
behind one address would each reject what the others sealed (a client would see its session or approval refused).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets

from mcp.server.request_state import RequestStateSecurity

from ..config import UNFILLED, Settings
from ..errors import ConfigError

log = logging.getLogger("flux_klein_mcp.http")

VARIABLE = "FLUX_KLEIN_HTTP_SECRET"
MIN_CHARS = 32
_MAKE = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def check_secret(settings: Settings) -> None:
    """Refuse a secret anyone could guess: too short, or a reference a client passed on unexpanded."""
    value = settings.http_secret
    if value is None:
        return
    if UNFILLED.fullmatch(value):
        raise ConfigError(f"{VARIABLE} is {value}, a reference to a variable that was passed on unexpanded, not a "
                          f"secret. Set it to a long random value (the output of: {_MAKE}), the same on every replica.")
    if len(value) < MIN_CHARS:
        raise ConfigError(f"{VARIABLE} is {len(value)} characters; use at least {MIN_CHARS} random ones (the output "
                          f"of: {_MAKE}), the same on every replica.")


def shared_secret(settings: Settings) -> bytes:
    """FLUX_KLEIN_HTTP_SECRET, or this process's own random secret (made once)."""
    if settings.http_secret is not None and len(settings.http_secret) >= MIN_CHARS:
        return settings.http_secret.encode()
    return _own_secret()


@functools.cache
def _own_secret() -> bytes:
    return secrets.token_bytes(32)


def derived(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose only, so that a token sealed for one use is never accepted for another."""
    return hmac.new(secret, f"flux-klein-mcp/{purpose}".encode(), hashlib.sha256).digest()


def request_state_security(settings: Settings) -> RequestStateSecurity:
    """How 2026-07-28 approval rounds are sealed: under the shared secret, so every replica opens them."""
    return RequestStateSecurity(keys=[derived(shared_secret(settings), "request-state")])
