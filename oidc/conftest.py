"""Sign-in against a real OpenID provider: panva's `oidc-provider` (provider.mjs, pinned in package-lock.json) on
loopback, with `serve --http` processes that accept its tokens. Run with `make test-oauth`, which installs it.

Fixtures: `idp` (the provider: its issuer, its signing keys, and ways to get tokens from it as a person would, or
to forge one with its own key), and `signin_server(...)`, a server configured to accept its tokens. `sign_in`
fills in the provider's sign-in and consent pages over HTTP, as a person's browser would.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from tests.conftest import openrouter, workdir  # noqa: F401 (fixtures)
from tests.test_http import free_port, http_server

HERE = Path(__file__).resolve().parent
NODE = HERE / "node_modules" / ".bin" / "node"
PROVIDER = HERE / "provider.mjs"
#: Scopes the provider grants for this server; the server requires SCOPE when a test says so.
SCOPE, OTHER_SCOPE = "images", "elsewhere"
REDIRECT = "http://127.0.0.1:9/callback"


def pytest_sessionstart(session: pytest.Session) -> None:
    # A sign-in test that cannot run fails: it never passes by being skipped.
    if not NODE.exists() or not (HERE / "node_modules" / "oidc-provider").is_dir():
        raise pytest.UsageError(f"the sign-in tests need the OpenID provider installed in {HERE}: run make test-oauth "
                                "(it runs npm ci there)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_key(kid: str) -> tuple[Any, dict[str, Any]]:
    """An RSA signing key and its private JWK, as the provider is configured with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key))
    return key, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


async def sign_in(authorization_url: str, login: str) -> dict[str, str]:
    """Do what a person does in the browser the client opens: sign in as `login`, consent; the parameters the
    provider redirects back with (code, state, iss)."""
    async with httpx.AsyncClient(timeout=30) as browser:
        response = await browser.get(authorization_url)
        for _ in range(12):
            if response.is_redirect:
                location = response.url.join(response.headers["location"])
                if str(location).startswith(REDIRECT):
                    assert "code" in location.params, str(location)
                    return dict(location.params)
                response = await browser.get(location)
                continue
            assert response.status_code == 200, response.text[:500]
            action = re.search(r'action="([^"]+)"', response.text)
            prompt = re.search(r'name="prompt" value="(\w+)"', response.text)
            assert action and prompt, response.text[:500]
            form = {"prompt": prompt[1]} | ({"login": login, "password": "any"} if prompt[1] == "login" else {})
            response = await browser.post(response.url.join(html.unescape(action[1])), data=form)
    raise AssertionError("the provider's pages never redirected back")


@dataclass
class IdP:
    issuer: str
    key: Any
    jwk: dict[str, Any]
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return httpx.get(f"{self.issuer}/.well-known/openid-configuration").json()  # type: ignore[no-any-return]

    async def token(self, login: str, resource: str, scope: str = SCOPE) -> str:
        """An access token for `resource`, got as a client does: registration, authorization code with PKCE,
        the person signing in and consenting, then the code exchanged."""
        meta = self.metadata()
        async with httpx.AsyncClient(timeout=30) as http:
            registered = await http.post(meta["registration_endpoint"], json={
                "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"], "response_types": ["code"]})
            client_id = registered.json()["client_id"]
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            url = httpx.URL(meta["authorization_endpoint"], params={
                "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
                "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource, "state": "s"})
            code = (await sign_in(str(url), login))["code"]
            answer = await http.post(meta["token_endpoint"], data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client_id,
                "code_verifier": verifier, "resource": resource})
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]  # type: ignore[no-any-return]

    def forge(self, claims: dict[str, Any], key: Any = None, algorithm: str = "RS256",
              headers: dict[str, Any] | None = None) -> str:
        """A token signed with the provider's own key (or `key`), with whatever claims a test needs."""
        return jwt.encode(claims, key or self.key, algorithm=algorithm,
                          headers={"kid": self.jwk["kid"], "typ": "at+jwt", **(headers or {})})

    def rotate(self, jwk: dict[str, Any]) -> None:
        """The operator rotates the signing key: the old one is gone from the JWKS."""
        assert httpx.post(f"{self.issuer}/test/keys", json={"keys": [jwk]}).status_code == 200


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdP]:
    key, jwk = new_key("first")
    config = tmp_path / "idp.json"
    config.write_text(json.dumps({"keys": [jwk], "scopes": [SCOPE, OTHER_SCOPE]}))
    process = subprocess.Popen([str(NODE), str(PROVIDER), str(config)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    assert first.startswith("ISSUER "), first + process.stderr.read()
    found = IdP(first.split()[1], key, jwk, process)

    def watch() -> None:
        assert process.stderr is not None
        found.log.extend(process.stderr)

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield found
    finally:
        process.terminate()
        process.wait(10)
    assert not [line for line in found.log if "server_error" in line], "".join(found.log)


@pytest.fixture
def signin_server(workdir: Path, idp: IdP):  # noqa: F811
    """`with signin_server(**env) as url`: `serve --http` accepting `idp`'s tokens issued for `url`."""

    @contextmanager
    def start(**env: str) -> Iterator[str]:
        port = free_port()
        settings = {"FLUX_KLEIN_OAUTH_ISSUER": idp.issuer, "FLUX_KLEIN_PUBLIC_URL": f"http://127.0.0.1:{port}/mcp",
                    "FLUX_KLEIN_LEDGER": str(workdir / "ledger.sqlite3"), **env}
        with http_server(workdir, port=port, **settings) as url:
            yield url

    return start


def people_folders(where: Path) -> list[Path]:
    folder = where / "output" / "people"
    return sorted(folder.iterdir()) if folder.exists() else []


def cli(where: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    from tests.test_cli import BASE_ENV, COMMAND

    return subprocess.run([COMMAND, *args], cwd=where, capture_output=True, text=True, timeout=60,
                          env={**BASE_ENV, "FLUX_KLEIN_LEDGER": str(where / "ledger.sqlite3"), **env})


__all__ = ["IdP", "cli", "idp", "new_key", "people_folders", "sign_in", "signin_server"]
