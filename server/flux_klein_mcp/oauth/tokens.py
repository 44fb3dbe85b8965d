"""Checking an access token: a JWT signed by the authorization server (RFC 9068), checked by PyJWT against the
server's published keys, for its issuer, this server's audience, its expiry and not-before time; the scopes it
carries are read for the SDK's scope check (403 `insufficient_scope`).

Only asymmetric signatures are accepted, with the algorithm the key itself is for: a token "signed" with `none`,
or with HMAC using the public key as its secret (algorithm confusion), never reaches a key. Keys are fetched on
first use and kept; a token naming a key that is not among them (the server rotated its keys) fetches them again,
at most once per `REFETCH_S`, so a stream of made-up key ids cannot make this server hammer the authorization
server; and the keys are fetched again after `MAX_AGE_S` anyway, so a key the server withdrew stops being
accepted.
"""

from __future__ import annotations

import logging
import math
import time
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import jwt
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthenticationError

from .discovery import Unreachable
from .settings import OAuthSettings

log = logging.getLogger("flux_klein_mcp.http")

#: The algorithms an authorization server signs access tokens with (RFC 7518 §3.1 and RFC 8037), asymmetric only.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Header `typ`s of access tokens: RFC 9068's, and the plain JWT most providers still send. An ID token, a logout
#: token or a DPoP proof is something else (and would be refused for its audience anyway).
ACCESS_TOKEN_TYPES = ("jwt", "at+jwt", "application/at+jwt")
#: Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
LEEWAY_S = 30
REFETCH_S = 30.0
MAX_AGE_S = 3600.0
#: How long a first fetch that failed is answered for without asking the authorization server again.
DOWN_S = 5.0
#: No access token is this long; a longer one is not parsed at all.
MAX_TOKEN_CHARS = 16 * 1024
#: A subject longer than OpenID's 255 ASCII characters, or with control characters, names nobody we can file.
MAX_SUBJECT_CHARS = 255


class Refused(Exception):
    """Why a token is not accepted (said to the client in the 401's error_description)."""


class Unavailable(AuthenticationError):
    """The authorization server's keys cannot be had now: no token can be checked (503, not the client's fault)."""


class Keys:
    """The authorization server's signing keys by key id, fetched by `fetch` (see the module's docstring)."""

    def __init__(self, fetch: Callable[[], Awaitable[list[dict[str, Any]]]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._keys: list[dict[str, Any]] | None = None
        self._fetched = -math.inf
        self._refetched = -math.inf  # the last fetch an unknown key id caused
        #: When fetching first failed, and why: requests meanwhile are answered at once, not by fetching again.
        self._failed: tuple[float, str] = (-math.inf, "")
        self._lock = anyio.Lock()

    async def find(self, kid: str | None, alg: str) -> jwt.PyJWK:
        stale = self._keys is None or self._clock() - self._fetched > MAX_AGE_S
        if stale:
            await self._refresh(self._fetched)
        key = self._match(kid, alg)
        if key is None and not stale and self._clock() - self._refetched >= REFETCH_S:
            self._refetched = self._clock()
            await self._refresh(self._fetched)
            key = self._match(kid, alg)
        if key is None:
            raise Refused(f"it is signed with a key the authorization server does not publish (kid {str(kid)[:64]!r}"
                          f", {alg})")
        return key

    async def _refresh(self, seen: float) -> None:
        async with self._lock:
            if self._fetched != seen:  # another request fetched them while this one waited
                return
            failed_at, why = self._failed
            if self._keys is None and self._clock() - failed_at < DOWN_S:  # (a provider that is down is not asked
                raise Unavailable(why)                                      # again by every request)
            try:
                found = await self._fetch()
            except Unreachable as exc:
                if self._keys is None:
                    self._failed = (self._clock(), f"the authorization server's keys cannot be fetched: {exc}")
                    raise Unavailable(self._failed[1]) from None
                log.warning("Could not fetch the authorization server's keys again (%s); the ones fetched before "
                            "are used meanwhile", exc)
                self._fetched = self._clock() - MAX_AGE_S + REFETCH_S  # (tried again in REFETCH_S)
                return
            self._keys, self._fetched = _usable(found), self._clock()

    def _match(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The key `kid` names, made for `alg` (which must be the key's own `alg` when it states one, and fit its
        type); without a kid, the only key there is for `alg`."""
        fitting = []
        for jwk in self._keys or []:
            if (kid is not None and jwk.get("kid") != kid) or jwk.get("alg", alg) != alg:
                continue
            try:
                fitting.append(jwt.PyJWK(jwk, algorithm=alg))
            except (jwt.PyJWTError, ValueError, TypeError, KeyError):  # (an RSA key for an EC algorithm, a curve
                continue                                                   # that does not fit, a damaged key)
        return fitting[0] if len(fitting) == 1 else None


def _usable(jwks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The public signing keys of a JWK set."""
    # (encryption keys are not for signatures; a private or secret key published by mistake is not used either:
    # an HMAC secret anyone can read would let anyone sign)
    return [jwk for jwk in jwks if jwk.get("use", "sig") == "sig" and "d" not in jwk and jwk.get("kty") != "oct"]


class TokenChecker:
    """The SDK's `TokenVerifier` for one authorization server's JWT access tokens. `verify_token` raises `Refused`
    (saying why) rather than returning None, for the 401 to say it; `Unavailable` when no key can be had."""

    def __init__(self, config: OAuthSettings, keys: Keys, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.keys = keys
        self._clock = clock

    async def verify_token(self, token: str) -> AccessToken | None:
        if len(token) > MAX_TOKEN_CHARS:
            raise Refused("it is too long to be an access token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused("it is not a signed JWT (this server takes JWT access tokens)") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Refused(f"it is signed with {str(alg)[:20]!r}, which this server does not accept (only "
                          "asymmetric signatures from the authorization server's published keys)")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES):
            raise Refused(f"it is a {str(typ)[:40]!r}, not an access token")
        kid = header.get("kid")
        key = await self.keys.find(kid if isinstance(kid, str) else None, alg)
        claims = self._decode(token, key, alg)
        subject = claims.get("sub")
        if (not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_CHARS
                or any(unicodedata.category(c) in ("Cc", "Cs") for c in subject)):
            raise Refused("its subject (sub) is empty, too long or holds control characters")
        return AccessToken(token=token, client_id=_text(claims.get("client_id") or claims.get("azp")),
                           scopes=scopes_of(claims), expires_at=int(claims["exp"]), resource=self.config.audience,
                           subject=subject, claims={"iss": claims["iss"]})

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        config = self.config
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=config.audience, issuer=config.issuer,
                              leeway=LEEWAY_S, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Refused("it has expired: get a new one") from None
        except jwt.ImmatureSignatureError:
            raise Refused("it is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Refused(f"it was not issued for this server (its audience is not {config.audience})") from None
        except jwt.InvalidIssuerError:
            raise Refused(f"it was not issued by {config.issuer}") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Refused(f"it has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise Refused("its signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Refused(f"it is not a valid access token ({type(exc).__name__})") from None


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """A token's scopes: `scope` (RFC 9068, space-separated), or `scp` (Entra ID and Okta: a string or a list)."""
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list):
            return [item for item in value if isinstance(item, str)]
    return []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
