"""Sign-in end to end: the official MCP SDK's OAuth client signs a person in at a real OpenID provider (dynamic
registration, authorization code with PKCE, the resource indicator) and calls the tools; the server finds the
provider from its issuer, checks each token against the provider's published keys, and serves each person alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl
from tests.conftest import ledger_rows, summary

from oidc.conftest import REDIRECT, IdP, people_folders, sign_in

pytestmark = pytest.mark.anyio


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def oauth_client(url: str, login: str, storage: Memory | None = None) -> tuple[Client, Memory, list[str]]:
    """The SDK's `Client` with its OAuth support, signing in as `login` when the server asks for it."""
    storage = storage or Memory()
    opened: list[str] = []
    codes: list[AuthorizationCodeResult] = []

    async def redirect(authorization_url: str) -> None:
        opened.append(authorization_url)
        codes.append(AuthorizationCodeResult.model_validate(await sign_in(authorization_url, login)))

    async def callback() -> AuthorizationCodeResult:
        return codes.pop()

    auth = OAuthClientProvider(
        url, OAuthClientMetadata(client_name="flux-klein-mcp tests", redirect_uris=[AnyUrl(REDIRECT)],
                                 grant_types=["authorization_code", "refresh_token"], response_types=["code"],
                                 token_endpoint_auth_method="none"),
        storage, redirect_handler=redirect, callback_handler=callback)
    http = httpx2.AsyncClient(auth=auth, timeout=60)
    return Client(streamable_http_client(url, http_client=http)), storage, opened


async def test_the_sdk_oauth_client_signs_in_at_the_provider_and_generates(workdir, openrouter, idp: IdP,
                                                                          signin_server):
    fake, env = openrouter
    with signin_server(**env) as url:
        bare = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"content-type": "application/json", "accept": "application/json, text/event-stream"})
        client, storage, opened = oauth_client(url, "alice")
        async with client as session:
            made = summary(await session.call_tool("generate_image", {"prompt": "a fox"}))
            usage = summary(await session.call_tool("get_usage", {}))
        metadata_url = bare.headers["www-authenticate"].split('resource_metadata="')[1].split('"')[0]
        metadata = httpx.get(metadata_url).json()
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Bearer ")
    assert metadata["resource"] == url and metadata["authorization_servers"] == [idp.issuer]
    assert len(opened) == 1 and "code_challenge_method=S256" in opened[0] and "resource=" in opened[0]
    assert storage.client is not None and storage.tokens is not None  # registered itself, holds its token
    image = Path(made["images"][0]["path"])
    assert image.parent in people_folders(workdir) and image.parent.name.startswith("alice-")
    assert len(fake.completions) == 1
    [charge] = ledger_rows(workdir / "ledger.sqlite3")
    assert charge["person"] == f"{idp.issuer}#alice"
    assert usage["person"] == f"{idp.issuer}#alice" and usage["today"]["images"] == 1
    assert "provider_credit" not in usage


def jsonrpc_call(token: str | None, name: str = "generate_image", arguments: dict[str, Any] | None = None) -> dict:
    return {"json": {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": name, "arguments": arguments or {"prompt": "a fox"}}},
            "headers": {"content-type": "application/json", "accept": "application/json, text/event-stream",
                        "mcp-protocol-version": "2025-11-25",
                        **({"authorization": f"Bearer {token}"} if token else {})}}


__all__ = ["json", "jsonrpc_call", "oauth_client"]
