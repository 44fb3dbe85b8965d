"""`serve --http` remembers what 2025-era clients said at `initialize` (a sealed session id any replica opens), asks
them mid-call on the call's own stream, and lets any replica continue any approval, once. Raw HTTP, so that a
test can choose which server each request reaches (real clients are driven in deployment/, `make test-http`)."""

from __future__ import annotations

import httpx
import pytest
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID

from tests.conftest import output_files
from tests.mcp_wire import APPROVE, ELICITATION, Legacy, Modern, call, result_of
from tests.test_http import LIST_TOOLS, http_server

pytestmark = pytest.mark.anyio

SECRET = "a-shared-secret-" + "Hk3vT9qW2mZ7pL5x" * 2
HIGH = {"prompt": "a fox", "tier": "high"}


def kinds(message: dict) -> list[str]:
    return [block["type"] for block in message["result"]["content"]]


def test_an_anonymous_2025_client_is_remembered_after_initialize(workdir, openrouter):
    """The issue's repro: initialise as the SDK's anonymous `mcp/0.1.0` declaring elicitation, then call with
    MCP-Protocol-Version: 2025-06-18. Forgotten, it got a file:// resource_link and no approval question."""
    fake, env = openrouter
    with http_server(workdir, **env) as url, httpx.Client(timeout=30) as http:
        client = Legacy(http)
        assert client.initialize(url, capabilities=ELICITATION).status_code == 200 and client.session
        low = result_of(client.post(url, call("generate_image", {"prompt": "a fox"}, 1)).text, 1)
        with client.stream(url, call("generate_image", HIGH, 2)) as stream:
            question = next(stream)
            assert question["method"] == "elicitation/create", question
            assert "Approve this spend?" in question["params"]["message"]
            assert client.post(url, {"jsonrpc": "2.0", "id": question["id"], "result": APPROVE}).status_code == 202
            high = next(message for message in stream if message.get("id") == 2)
        listed = result_of(client.post(url, LIST_TOOLS).text, 1)
    assert "resource_link" not in kinds(low) and kinds(low).count("image") == 1
    assert high["result"]["isError"] is False, high
    assert len(fake.completions) == 2
    assert "recent_images" not in {tool["name"] for tool in listed["result"]["tools"]}


def test_a_2025_client_that_names_itself_and_declares_the_view_gets_links_and_the_view_tool(workdir, openrouter):
    fake, env = openrouter
    view = {"extensions": {EXTENSION_ID: {"mimeTypes": [APP_MIME_TYPE]}}}
    with http_server(workdir, **env) as url, httpx.Client(timeout=30) as http:
        client = Legacy(http, version="2025-11-25")
        client.initialize(url, name="some-ide", version="1.2", capabilities=view)
        made = result_of(client.post(url, call("generate_image", {"prompt": "a fox"}, 1)).text, 1)
        listed = result_of(client.post(url, LIST_TOOLS).text, 1)
        recent = result_of(client.post(url, call("recent_images", {"limit": 1}, 3)).text, 3)
        refused = result_of(client.post(url, call("generate_image", HIGH, 4)).text, 4)  # no elicitation declared
    assert kinds(made).count("resource_link") == 1
    assert "recent_images" in {tool["name"] for tool in listed["result"]["tools"]}
    assert recent["result"]["isError"] is False and kinds(recent) == ["text", "image"]
    assert refused["result"]["isError"] and "declares no elicitation" in refused["result"]["content"][0]["text"]
    assert len(fake.completions) == 1


def test_initialising_again_while_sending_the_old_session_id_starts_a_new_session(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env) as url, httpx.Client(timeout=30) as http:
        client = Legacy(http)
        client.initialize(url)
        old = client.session
        again = client.initialize(url, name="renamed", capabilities=ELICITATION, old_session=True)
        listed = client.post(url, LIST_TOOLS)
    assert again.status_code == 200 and client.session not in (None, old)
    assert listed.status_code == 200


def test_the_person_declining_spends_nothing(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env) as url, httpx.Client(timeout=30) as http:
        client = Legacy(http)
        client.initialize(url, capabilities=ELICITATION)
        with client.stream(url, call("generate_image", HIGH, 2)) as stream:
            question = next(stream)
            client.post(url, {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "decline"}})
            declined = next(message for message in stream if message.get("id") == 2)
    assert declined["result"]["isError"] and "declined the high-tier spend" in declined["result"]["content"][0]["text"]
    assert fake.requests == [] and output_files(workdir) == []


def test_a_client_that_answers_the_question_with_an_error_is_told_in_our_words(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env) as url, httpx.Client(timeout=30) as http:
        client = Legacy(http)
        client.initialize(url, capabilities=ELICITATION)
        with client.stream(url, call("generate_image", HIGH, 2)) as stream:
            question = next(stream)
            client.post(url, {"jsonrpc": "2.0", "id": question["id"],
                              "error": {"code": -32601, "message": "Method not found"}})
            failed = next(message for message in stream if message.get("id") == 2)
    text = failed["result"]["content"][0]["text"]
    assert failed["result"]["isError"] and "could not ask the person" in text and "Method not found" in text
    assert fake.requests == []


def test_an_answer_is_taken_only_from_the_session_that_was_asked(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env) as url, httpx.Client(timeout=30) as http:
        asked, stranger = Legacy(http), Legacy(http)
        asked.initialize(url, capabilities=ELICITATION)
        stranger.initialize(url, capabilities=ELICITATION)
        with asked.stream(url, call("generate_image", HIGH, 2)) as stream:
            question = next(stream)
            decline = {"jsonrpc": "2.0", "id": question["id"], "result": {"action": "decline"}}
            assert stranger.post(url, decline).status_code == 202  # accepted on the wire, and ignored
            asked.post(url, {"jsonrpc": "2.0", "id": question["id"], "result": APPROVE})
            answered = next(message for message in stream if message.get("id") == 2)
    assert answered["result"]["isError"] is False and len(fake.completions) == 1


def test_any_replica_opens_a_session_and_takes_an_answer_for_another(workdir, openrouter):
    """Two servers sharing the secret and the ledger: initialised on one, a call on the other knows the client,
    and the answer to a question the first one asked can be POSTed to the second."""
    fake, env = openrouter
    shared = {**env, "FLUX_KLEIN_HTTP_SECRET": SECRET}
    with http_server(workdir, **shared) as first, http_server(workdir, **shared) as second, \
            httpx.Client(timeout=30) as http:
        client = Legacy(http)
        client.initialize(first, capabilities=ELICITATION)
        low = result_of(client.post(second, call("generate_image", {"prompt": "a fox"}, 1)).text, 1)
        with client.stream(first, call("generate_image", HIGH, 2)) as stream:
            question = next(stream)
            assert client.post(second, {"jsonrpc": "2.0", "id": question["id"], "result": APPROVE}).status_code == 202
            high = next(message for message in stream if message.get("id") == 2)
    assert "resource_link" not in kinds(low)
    assert high["result"]["isError"] is False and len(fake.completions) == 2


def test_a_session_sealed_under_another_secret_is_refused_in_our_words(workdir, openrouter):
    fake, env = openrouter
    with http_server(workdir, **env, FLUX_KLEIN_HTTP_SECRET=SECRET) as first, \
            http_server(workdir, **env, FLUX_KLEIN_HTTP_SECRET="another-secret-" + "r" * 32) as second, \
            httpx.Client(timeout=30) as http:
        client = Legacy(http)
        client.initialize(first)
        elsewhere = client.post(second, LIST_TOOLS)
        client.session = client.session[:-4] + "AAAA"  # altered
        altered = client.post(first, LIST_TOOLS)
    assert elsewhere.status_code == altered.status_code == 404
    assert "initialize a new session" in elsewhere.json()["error"]["message"]
    assert "FLUX_KLEIN_HTTP_SECRET" in elsewhere.json()["error"]["message"]
    assert SECRET not in elsewhere.text


def test_a_modern_approval_continues_on_another_replica_and_pays_for_one_call(workdir, openrouter):
    """2026-07-28: the question comes back as an input round with a sealed requestState; answered on the other
    server it succeeds, and replaying that answer (to either server) spends nothing."""
    fake, env = openrouter
    shared = {**env, "FLUX_KLEIN_HTTP_SECRET": SECRET}
    with http_server(workdir, **shared) as first, http_server(workdir, **shared) as second, \
            httpx.Client(timeout=30) as http:
        client = Modern(http, ELICITATION)
        asked = client.post(first, call("generate_image", HIGH, 1))["result"]
        assert asked["resultType"] == "input_required", asked
        answer = {"inputResponses": {key: APPROVE for key in asked["inputRequests"]},
                  "requestState": asked["requestState"]}
        made = client.post(second, call("generate_image", HIGH, 2, **answer))["result"]
        replays = [client.post(server, call("generate_image", HIGH, 3, **answer))["result"]
                   for server in (first, second)]
    assert made["isError"] is False, made
    for replay in replays:
        assert replay["isError"] and "This approval was already used" in replay["content"][0]["text"]
    assert len(fake.completions) == 1


def test_without_a_shared_secret_another_replica_cannot_continue_an_approval(workdir, openrouter):
    """Why replicas need FLUX_KLEIN_HTTP_SECRET: each made its own, and rejects the other's rounds."""
    fake, env = openrouter
    with http_server(workdir, **env) as first, http_server(workdir, **env) as second, httpx.Client(timeout=30) as http:
        client = Modern(http, ELICITATION)
        asked = client.post(first, call("generate_image", HIGH, 1))["result"]
        answer = {"inputResponses": {key: APPROVE for key in asked["inputRequests"]},
                  "requestState": asked["requestState"]}
        refused = client.post(second, call("generate_image", HIGH, 2, **answer))
    assert refused["error"]["message"] == "Invalid or expired requestState"
    assert fake.requests == []
