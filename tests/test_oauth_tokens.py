"""Checking access tokens (oauth/tokens.py) against keys made here: each algorithm the server takes, each way a
token is refused, and how the keys are fetched: once, again for an unknown key id at most once per REFETCH_S,
again after MAX_AGE_S, once for many requests at a time, and kept when the authorization server is briefly down."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from flux_klein_mcp.oauth.discovery import Unreachable
from flux_klein_mcp.oauth.settings import OAuthSettings
from flux_klein_mcp.oauth.tokens import (
    DOWN_S,
    MAX_AGE_S,
    REFETCH_S,
    Keys,
    Refused,
    TokenChecker,
    Unavailable,
    scopes_of,
)

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.example.com/realms/team"
RESOURCE = "https://images.example.com/mcp"
CONFIG = OAuthSettings(ISSUER, RESOURCE, RESOURCE, ())


def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    maker = {rsa.RSAPrivateKey: RSAAlgorithm, ec.EllipticCurvePrivateKey: ECAlgorithm,
             ed25519.Ed25519PrivateKey: OKPAlgorithm}
    kind = next(algorithm for cls, algorithm in maker.items() if isinstance(key, cls))
    return {**json.loads(kind.to_jwk(key.public_key())), "kid": kid, **extra}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": RESOURCE, "sub": "alice", "exp": now + 300, "iat": now, "scope": "images",
            "client_id": "c1", **changes}


class Provider:
    """The authorization server's key set, and how often it was fetched."""

    def __init__(self, *jwks: dict[str, Any]) -> None:
        self.jwks = list(jwks)
        self.fetches = 0
        self.down = False

    async def fetch(self) -> list[dict[str, Any]]:
        self.fetches += 1
        await anyio.sleep(0)
        if self.down:
            raise Unreachable("connection refused")
        return list(self.jwks)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def checker(provider: Provider, clock: Clock | None = None, config: OAuthSettings = CONFIG) -> TokenChecker:
    return TokenChecker(config, Keys(provider.fetch, clock or Clock()))


@pytest.mark.parametrize(("make", "alg"), [(rsa_key, "RS256"), (rsa_key, "PS256"),
                                           (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
                                           (ed25519.Ed25519PrivateKey.generate, "EdDSA")])
async def test_a_valid_token_names_its_person_and_scopes(make, alg):
    key = make()
    token = jwt.encode(claims(scp=["ignored"]), key, algorithm=alg, headers={"kid": "k", "typ": "at+jwt"})
    found = await checker(Provider(public_jwk(key, "k"))).verify_token(token)
    assert found is not None and found.subject == "alice" and found.claims == {"iss": ISSUER}
    assert found.scopes == ["images"] and found.client_id == "c1" and found.resource == RESOURCE


async def test_a_key_states_its_algorithm_and_a_token_cannot_choose_another():
    key = rsa_key()
    token = jwt.encode(claims(), key, algorithm="PS256", headers={"kid": "k"})
    with pytest.raises(Refused, match="does not publish"):
        await checker(Provider(public_jwk(key, "k", alg="RS256"))).verify_token(token)


async def test_a_secret_published_by_mistake_is_never_a_key():
    """An HMAC key in the JWKS (`oct`) would let anyone who reads the JWKS sign tokens."""
    secret = "s" * 32
    token = jwt.encode(claims(), secret, algorithm="HS256", headers={"kid": "k"})
    jwks = {"kty": "oct", "k": "c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M", "kid": "k"}
    with pytest.raises(Refused, match="'HS256'"):
        await checker(Provider(jwks)).verify_token(token)


@pytest.mark.parametrize(("change", "why"), [
    ({"aud": "https://other.example.com/mcp"}, "not issued for this server"),
    ({"aud": ["https://other.example.com/mcp", "x"]}, "not issued for this server"),
    ({"iss": "https://idp.example.com/realms/other"}, "not issued by"),
    ({"exp": -60}, "expired"),  # (seconds from now, when the test runs)
    ({"nbf": 120}, "not valid yet"),
    ({"sub": ""}, "subject"),
    ({"sub": "a\x00b"}, "subject"),
    ({"sub": "x" * 256}, "subject"),
    ({"sub": None}, "no sub claim"),
    ({"exp": None}, "no exp claim"),
])
async def test_a_token_is_refused_for_what_is_wrong_with_it(change, why):
    key = rsa_key()
    now = int(time.time())
    change = {k: now + v if k in ("exp", "nbf") and v is not None else v for k, v in change.items()}
    body = {k: v for k, v in claims(**change).items() if v is not None}
    token = jwt.encode(body, key, algorithm="RS256", headers={"kid": "k"})
    with pytest.raises(Refused, match=why):
        await checker(Provider(public_jwk(key, "k"))).verify_token(token)


async def test_an_audience_list_holding_this_server_is_accepted_and_a_chosen_audience_is_checked():
    key = rsa_key()
    listed = jwt.encode(claims(aud=["account", RESOURCE]), key, algorithm="RS256", headers={"kid": "k"})
    assert await checker(Provider(public_jwk(key, "k"))).verify_token(listed)
    entra = OAuthSettings(ISSUER, RESOURCE, "api://flux-klein", ())
    token = jwt.encode(claims(aud="api://flux-klein"), key, algorithm="RS256", headers={"kid": "k"})
    assert await checker(Provider(public_jwk(key, "k")), config=entra).verify_token(token)
    with pytest.raises(Refused):
        await checker(Provider(public_jwk(key, "k")), config=entra).verify_token(listed)


@pytest.mark.parametrize("typ", ["dpop+jwt", "logout+jwt", "JOSE", 3])
async def test_what_says_it_is_not_an_access_token_is_refused(typ):
    key = rsa_key()
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k", "typ": typ})
    with pytest.raises(Refused, match="not an access token"):
        await checker(Provider(public_jwk(key, "k"))).verify_token(token)


async def test_without_a_kid_only_a_single_fitting_key_is_used():
    first, second = rsa_key(), rsa_key()
    token = jwt.encode(claims(), first, algorithm="RS256")
    assert await checker(Provider(public_jwk(first, "a"))).verify_token(token)
    with pytest.raises(Refused):
        await checker(Provider(public_jwk(first, "a"), public_jwk(second, "b"))).verify_token(token)


@pytest.mark.parametrize("token", ["", "x" * 20_000, "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
async def test_garbage_is_refused_without_fetching_keys(token):
    provider = Provider()
    with pytest.raises(Refused):
        await checker(provider).verify_token(token)
    assert provider.fetches == 0


async def test_unknown_key_ids_fetch_the_keys_again_at_most_once_per_window():
    key, clock = rsa_key(), Clock()
    provider = Provider(public_jwk(key, "k"))
    check = checker(provider, clock)
    assert await check.verify_token(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k"}))
    for n in range(50):  # a stream of made-up key ids
        with pytest.raises(Refused, match="does not publish"):
            await check.verify_token(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": f"made-up-{n}"}))
    assert provider.fetches == 2
    rotated = rsa_key()
    provider.jwks = [public_jwk(rotated, "k2")]
    fresh = jwt.encode(claims(), rotated, algorithm="RS256", headers={"kid": "k2"})
    with pytest.raises(Refused):  # still inside the window
        await check.verify_token(fresh)
    clock.now += REFETCH_S
    assert await check.verify_token(fresh) and provider.fetches == 3
    with pytest.raises(Refused):  # the withdrawn key
        await check.verify_token(jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k"}))


async def test_keys_are_fetched_again_after_their_maximum_age():
    key, clock = rsa_key(), Clock()
    provider = Provider(public_jwk(key, "k"))
    check = checker(provider, clock)
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k"})
    await check.verify_token(token)
    clock.now += MAX_AGE_S + 1
    provider.jwks = []  # the key was withdrawn
    with pytest.raises(Refused):
        await check.verify_token(token)
    assert provider.fetches == 2


async def test_many_requests_at_once_fetch_the_keys_once():
    key = rsa_key()
    provider = Provider(public_jwk(key, "k"))
    check = checker(provider)
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k"})
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(check.verify_token, token)
    assert provider.fetches == 1


async def test_an_unreachable_provider_is_unavailable_at_first_and_its_old_keys_serve_meanwhile():
    key, clock = rsa_key(), Clock()
    provider = Provider(public_jwk(key, "k"))
    provider.down = True
    check = checker(provider, clock)
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k"})
    for _ in range(10):
        with pytest.raises(Unavailable, match="connection refused"):
            await check.verify_token(token)
    assert provider.fetches == 1  # (not asked again by every request while it is down)
    provider.down = False
    clock.now += DOWN_S
    assert await check.verify_token(token)
    clock.now += MAX_AGE_S + 1
    provider.down = True
    assert await check.verify_token(token)  # kept, and tried again later
    fetches = provider.fetches
    assert await check.verify_token(token) and provider.fetches == fetches


async def test_a_damaged_key_in_the_set_is_passed_over():
    key = rsa_key()
    token = jwt.encode(claims(), key, algorithm="RS256", headers={"kid": "k"})
    damaged = [{"kty": "RSA", "kid": "k", "n": 3}, {"kty": "EC", "kid": "k", "crv": "P-256"}, {"kid": "k"}]
    assert await checker(Provider(*damaged, public_jwk(key, "k"))).verify_token(token)
    with pytest.raises(Refused):
        await checker(Provider(*damaged)).verify_token(token)


@pytest.mark.parametrize(("found", "scopes"), [({"scope": "a b"}, ["a", "b"]), ({"scp": "a b"}, ["a", "b"]),
                                               ({"scp": ["a", 3, "b"]}, ["a", "b"]), ({}, [])])
def test_scopes_are_read_from_scope_or_scp(found, scopes):
    assert scopes_of(found) == scopes
