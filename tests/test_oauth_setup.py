"""Sign-in's set-up (oauth/settings.py, `serve --http`): what is half set or contradictory refuses to start in one
sentence naming the variable; the extra is named when PyJWT is missing; an authorization server that cannot be
reached is a 503, not a 401 and not a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from flux_klein_mcp.config import Settings
from flux_klein_mcp.errors import ConfigError
from flux_klein_mcp.oauth.settings import oauth_settings, require_jose
from tests.test_cli import BASE_ENV, COMMAND
from tests.test_http import free_port, http_server

ISSUER = "https://idp.example.com/realms/team"
PUBLIC = "https://images.example.com"


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(env, cwd=tmp_path)


def test_nothing_set_is_no_sign_in(tmp_path):
    assert oauth_settings(settings(tmp_path)) is None


@pytest.mark.parametrize(("env", "url"), [
    ({"FLUX_KLEIN_PUBLIC_URL": PUBLIC}, "https://images.example.com/mcp"),
    ({"FLUX_KLEIN_PUBLIC_URL": PUBLIC + "/"}, "https://images.example.com/mcp"),
    ({"FLUX_KLEIN_PUBLIC_URL": PUBLIC + "/mcp/"}, "https://images.example.com/mcp"),
    ({"FLUX_KLEIN_PUBLIC_URL": PUBLIC + "/tools"}, "https://images.example.com/tools/mcp"),
    ({"FLUX_KLEIN_PUBLIC_URL": "http://127.0.0.1:8000/mcp"}, "http://127.0.0.1:8000/mcp"),
])
def test_the_resource_is_the_public_urls_mcp_endpoint(tmp_path, env, url):
    found = oauth_settings(settings(tmp_path, FLUX_KLEIN_OAUTH_ISSUER=ISSUER, **env))
    assert found is not None and found.resource == found.audience == url and found.scopes == ()


def test_audience_and_scopes_are_taken_as_given(tmp_path):
    found = oauth_settings(settings(tmp_path, FLUX_KLEIN_OAUTH_ISSUER=ISSUER, FLUX_KLEIN_PUBLIC_URL=PUBLIC,
                                    FLUX_KLEIN_OAUTH_AUDIENCE="api://flux-klein",
                                    FLUX_KLEIN_OAUTH_SCOPES=" images:generate  images:read "))
    assert found is not None and found.audience == "api://flux-klein"
    assert found.scopes == ("images:generate", "images:read") and found.issuer == ISSUER


@pytest.mark.parametrize(("env", "said"), [
    ({"FLUX_KLEIN_PUBLIC_URL": PUBLIC}, "FLUX_KLEIN_PUBLIC_URL is set but FLUX_KLEIN_OAUTH_ISSUER is not"),
    ({"FLUX_KLEIN_OAUTH_SCOPES": "x", "FLUX_KLEIN_OAUTH_AUDIENCE": "y"},
     "FLUX_KLEIN_OAUTH_AUDIENCE and FLUX_KLEIN_OAUTH_SCOPES are set but FLUX_KLEIN_OAUTH_ISSUER is not"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER}, "FLUX_KLEIN_PUBLIC_URL is not"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER, "FLUX_KLEIN_PUBLIC_URL": PUBLIC, "FLUX_KLEIN_HTTP_TOKEN": "t" * 40},
     "unset FLUX_KLEIN_HTTP_TOKEN"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": "http://idp.example.com", "FLUX_KLEIN_PUBLIC_URL": PUBLIC}, "plain http://"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER, "FLUX_KLEIN_PUBLIC_URL": "images.example.com"}, "not a URL"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER + "?x=1", "FLUX_KLEIN_PUBLIC_URL": PUBLIC}, "no query"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER, "FLUX_KLEIN_PUBLIC_URL": PUBLIC + "#top"}, "fragment"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER, "FLUX_KLEIN_PUBLIC_URL": "https://images.example.com:x"}, "not a URL"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER, "FLUX_KLEIN_PUBLIC_URL": PUBLIC, "FLUX_KLEIN_OAUTH_SCOPES": 'a "b"'},
     "not a scope"),
])
def test_a_half_set_or_contradictory_set_up_is_one_sentence(tmp_path, env, said):
    with pytest.raises(ConfigError) as refused:
        oauth_settings(settings(tmp_path, **env))
    assert said in str(refused.value) and str(refused.value).count(". ") <= 2


@pytest.mark.parametrize("inputs", ["output", ".", "output/people", "output/people/x"])
def test_an_input_folder_reaching_into_the_output_folder_is_refused(tmp_path, inputs):
    (tmp_path / inputs).mkdir(parents=True, exist_ok=True)
    with pytest.raises(ConfigError, match="FLUX_KLEIN_INPUT_DIRS holds"):
        oauth_settings(settings(tmp_path, FLUX_KLEIN_OAUTH_ISSUER=ISSUER, FLUX_KLEIN_PUBLIC_URL=PUBLIC,
                                FLUX_KLEIN_INPUT_DIRS=str(tmp_path / inputs)))


def test_a_separate_input_folder_is_fine(tmp_path):
    assert oauth_settings(settings(tmp_path, FLUX_KLEIN_OAUTH_ISSUER=ISSUER, FLUX_KLEIN_PUBLIC_URL=PUBLIC,
                                   FLUX_KLEIN_INPUT_DIRS=str(tmp_path / "inputs")))


def test_without_pyjwt_the_extra_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "jwt", None)
    with pytest.raises(ConfigError, match=r"pip install 'flux-klein-mcp\[oauth\]'"):
        require_jose()


@pytest.mark.parametrize(("env", "said"), [
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER}, "FLUX_KLEIN_PUBLIC_URL is not"),
    ({"FLUX_KLEIN_OAUTH_ISSUER": ISSUER, "FLUX_KLEIN_PUBLIC_URL": PUBLIC, "FLUX_KLEIN_HTTP_TOKEN": "t" * 40},
     "unset FLUX_KLEIN_HTTP_TOKEN"),
])
def test_serve_http_refuses_to_start(tmp_path, env, said):
    done = subprocess.run([COMMAND, "serve", "--http", "--port", str(free_port())], cwd=tmp_path, timeout=60,
                          env={**BASE_ENV, **env}, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr


def test_sign_in_lets_the_server_listen_beyond_loopback_and_an_unreachable_provider_is_a_503(workdir):
    gone = f"http://127.0.0.1:{free_port()}"
    token = jwt.encode({"sub": "alice"}, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                       algorithm="RS256", headers={"kid": "k"})
    with http_server(workdir, "0.0.0.0", FLUX_KLEIN_OAUTH_ISSUER=gone, FLUX_KLEIN_PUBLIC_URL=PUBLIC,
                     FLUX_KLEIN_PROVIDER="sandbox") as url:
        answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                            headers={"authorization": f"Bearer {token}", "content-type": "application/json",
                                     "accept": "application/json, text/event-stream"})
        bare = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        health = httpx.get(url.replace("/mcp", "/healthz"))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert f"no metadata for issuer {gone}" in answer.json()["error_description"]
    assert bare.status_code == 401 and 'resource_metadata="https://images.example.com/.well-known/oauth-protected' \
        '-resource/mcp"' in bare.headers["www-authenticate"]
    assert health.text == "ok"


def test_with_the_static_token_nobody_signs_in_and_nothing_changes(workdir, openrouter):
    from tests.conftest import ledger_rows
    from tests.test_http import TOKEN

    fake, env = openrouter
    ledger = workdir / "ledger.sqlite3"
    with http_server(workdir, FLUX_KLEIN_HTTP_TOKEN=TOKEN, FLUX_KLEIN_LEDGER=str(ledger), **env) as url:
        answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "generate_image", "arguments": {"prompt": "a fox"}}}, timeout=60, headers={
            "authorization": f"Bearer {TOKEN}", "content-type": "application/json",
            "accept": "application/json, text/event-stream"})
        metadata = httpx.get(url.replace("/mcp", "/.well-known/oauth-protected-resource"))
    assert answer.status_code == 200 and len(fake.completions) == 1
    assert [p.name for p in (workdir / "output").iterdir() if p.suffix == ".png"] and not (
        workdir / "output" / "people").exists()
    assert [row["person"] for row in ledger_rows(ledger)] == [None]
    assert metadata.status_code == 404


def test_doctor_says_a_half_set_sign_in_stops_the_http_server(tmp_path):
    import json

    done = subprocess.run([COMMAND, "doctor", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**BASE_ENV, "FLUX_KLEIN_PROVIDER": "sandbox", "FLUX_KLEIN_OAUTH_ISSUER": ISSUER})
    report = json.loads(done.stdout)
    assert report["sign_in"]["status"] == "misconfigured" and "FLUX_KLEIN_PUBLIC_URL" in report["sign_in"]["detail"]
    assert any("does not start" in warning for warning in report["warnings"])
