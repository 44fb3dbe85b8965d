"""Every token the server must refuse, each with the status the MCP authorization spec gives (401 with the resource
metadata's URL, 403 insufficient_scope), and with nothing sent to the provider, nothing booked and no folder made.
The tokens come from the real provider where it can make them (another audience, a missing scope, a rotated key);
the rest are made from its real tokens, some with its own key (an expired one: it will not issue one), as an
attacker or a clock would make them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from tests.conftest import ledger_rows
from tests.mcp_wire import ACCEPT, call, result_of

from oidc.conftest import OTHER_SCOPE, SCOPE, IdP, new_key, people_folders

pytestmark = pytest.mark.anyio


def post(url: str, token: str | None, body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": "2025-11-25"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(url, json=body or call("generate_image", {"prompt": "a fox"}), headers=headers, timeout=60)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    pad = lambda text: text + "=" * (-len(text) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload))),
            signature)


async def refused_token(case: str, idp: IdP, url: str) -> str:
    """The token of one refusal case."""
    if case == "another audience":
        return await idp.token("alice", "http://127.0.0.1:1/mcp")
    if case == "missing scope":
        return await idp.token("alice", url, scope=OTHER_SCOPE)
    real = await idp.token("alice", url)
    header, claims, signature = parts(real)
    if case == "tampered signature":
        forged = b64(json.dumps({**claims, "sub": "bob"}).encode())
        return f"{real.split('.')[0]}.{forged}.{signature}"
    if case == "another issuer":
        return idp.forge({**claims, "iss": "http://127.0.0.1:1"})
    if case == "expired":  # (the provider's key, its claims, a lifetime over: beyond the clock skew allowed)
        return idp.forge({**claims, "iat": int(time.time()) - 420, "exp": int(time.time()) - 120})
    if case == "not valid yet":
        return idp.forge({**claims, "nbf": int(time.time()) + 600})
    if case == "alg none":
        return f"{b64(json.dumps({**header, 'alg': 'none'}).encode())}.{real.split('.')[1]}."
    if case == "HMAC with the public key":  # algorithm confusion: the published key used as a shared secret
        public = idp.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input = f"{b64(json.dumps({**header, 'alg': 'HS256'}).encode())}.{real.split('.')[1]}"
        return f"{signing_input}.{b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())}"
    if case == "an ID token":  # signed by the provider, for a client: not an access token for this server
        return idp.forge({**claims, "aud": claims["client_id"]}, headers={"typ": "JWT"})
    if case == "unknown key":
        other, _ = new_key("first")  # same kid, another key
        return idp.forge(claims, key=other)
    raise AssertionError(case)


CASES = {
    "another audience": "not issued for this server",
    "expired": "expired",
    "not valid yet": "not valid yet",
    "another issuer": "not issued by",
    "tampered signature": "signature does not verify",
    "alg none": "'none'",
    "HMAC with the public key": "'HS256'",
    "an ID token": "not issued for this server",
    "unknown key": "signature does not verify",
}


@pytest.mark.parametrize("case", [*CASES, "missing scope", "no token", "not a JWT"])
async def test_a_refused_token_spends_nothing_and_says_why(case: str, workdir, openrouter, idp: IdP, signin_server):
    fake, env = openrouter
    with signin_server(FLUX_KLEIN_OAUTH_SCOPES=SCOPE, **env) as url:
        token = None if case == "no token" else "not-a-jwt" if case == "not a JWT" else await refused_token(
            case, idp, url)
        answer = post(url, token)
    challenge = answer.headers.get("www-authenticate", "")
    metadata = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    if case == "missing scope":
        assert answer.status_code == 403 and 'error="insufficient_scope"' in challenge
        assert answer.json()["error_description"] == f"Required scope: {SCOPE}"
    else:
        assert answer.status_code == 401, answer.text
        assert challenge.startswith("Bearer ") and f'resource_metadata="{metadata}"' in challenge
        if case in CASES:
            assert CASES[case] in answer.json()["error_description"], answer.text
    assert fake.completions == [] and ledger_rows(workdir / "ledger.sqlite3") == []
    assert people_folders(workdir) == []


async def test_a_rotated_key_is_fetched_and_the_withdrawn_one_refused(workdir, openrouter, idp: IdP, signin_server):
    _, env = openrouter
    usage = call("get_usage", {})
    with signin_server(**env) as url:
        before = await idp.token("alice", url)
        assert post(url, before, usage).status_code == 200
        _, jwk = new_key("second")
        idp.rotate(jwk)
        after = await idp.token("alice", url)
        assert parts(after)[0]["kid"] == "second"
        accepted = post(url, after, usage)  # an unknown kid: the keys are fetched again
        withdrawn = post(url, before, usage)  # its key is gone from the provider
    assert accepted.status_code == 200 and result_of(accepted.text, 1)["result"]["isError"] is False
    assert withdrawn.status_code == 401
    assert "a key the authorization server does not publish" in withdrawn.json()["error_description"]


async def test_the_resource_metadata_names_the_provider_and_the_scopes(idp: IdP, signin_server):
    with signin_server(FLUX_KLEIN_OAUTH_SCOPES=f"{SCOPE} {OTHER_SCOPE}") as url:
        root = url.removesuffix("/mcp")
        found = [httpx.get(f"{root}{path}").json() for path in
                 ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")]
    for metadata in found:
        assert metadata["resource"] == url and metadata["authorization_servers"] == [idp.issuer]
        assert metadata["scopes_supported"] == [SCOPE, OTHER_SCOPE] and metadata["bearer_methods_supported"] == [
            "header"]


__all__ = ["refused_token"]
