"""`doctor` with sign-in configured: it fetches the provider's metadata and keys, and says which issuer, audience
and scopes the server uses; a provider it cannot reach is a warning naming the consequence."""

from __future__ import annotations

import json

from tests.test_http import free_port

from oidc.conftest import SCOPE, IdP, cli

SANDBOX = {"FLUX_KLEIN_PROVIDER": "sandbox"}


def test_doctor_checks_the_provider_and_names_issuer_and_audience(workdir, idp: IdP):
    env = {**SANDBOX, "FLUX_KLEIN_OAUTH_ISSUER": idp.issuer, "FLUX_KLEIN_PUBLIC_URL": "https://images.example.com",
           "FLUX_KLEIN_OAUTH_SCOPES": SCOPE}
    report = json.loads(cli(workdir, "doctor", "--json", **env).stdout)
    shown = cli(workdir, "doctor", **env).stdout
    sign_in = report["sign_in"]
    assert sign_in["status"] == "ok" and sign_in["issuer"] == idp.issuer
    assert sign_in["audience"] == sign_in["resource"] == "https://images.example.com/mcp"
    assert sign_in["jwks_uri"] == idp.metadata()["jwks_uri"] and sign_in["scopes"] == [SCOPE]
    assert f"Sign-in:        issuer {idp.issuer}, audience https://images.example.com/mcp, scopes: {SCOPE}" in shown
    assert report["warnings"] == []


def test_doctor_warns_when_the_provider_cannot_be_reached(workdir):
    gone = f"http://127.0.0.1:{free_port()}"
    env = {**SANDBOX, "FLUX_KLEIN_OAUTH_ISSUER": gone, "FLUX_KLEIN_PUBLIC_URL": "https://images.example.com/mcp",
           "FLUX_KLEIN_OAUTH_AUDIENCE": "api://flux-klein"}
    report = json.loads(cli(workdir, "doctor", "--json", **env).stdout)
    assert report["sign_in"]["status"] == "unreachable" and report["sign_in"]["audience"] == "api://flux-klein"
    assert f"no metadata for issuer {gone}" in report["sign_in"]["detail"]
    assert any("answers every request 503" in warning for warning in report["warnings"])
