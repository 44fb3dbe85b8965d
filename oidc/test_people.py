"""Two people on one server: each has their own folder, budget and spend, and reaches nothing of the other's —
not through the gallery, its cursors, resources/read, an input path or a 2025-era session id."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ledger_rows
from tests.mcp_wire import ACCEPT, APPROVE, ELICITATION, Legacy, Modern, call, result_of

from oidc.conftest import IdP, cli, people_folders

pytestmark = pytest.mark.anyio

#: One image costs 0.014 on the fake provider: a daily budget of 0.02 per person allows one.
BUDGET = "0.02"


class Person:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": "2025-11-25",
                   "authorization": f"Bearer {self.token}"}
        answer = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                            headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        return result_of(answer.text, 1)

    def tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.rpc("tools/call", {"name": name, "arguments": arguments})["result"]  # type: ignore[no-any-return]


def data(result: dict[str, Any]) -> dict[str, Any]:
    assert result["isError"] is False, result
    return json.loads(result["content"][0]["text"])  # type: ignore[no-any-return]


def text(result: dict[str, Any]) -> str:
    return " ".join(block.get("text", "") for block in result["content"])


async def test_two_people_each_see_only_their_own_and_one_budget_does_not_stop_the_other(
        workdir, openrouter, idp: IdP, signin_server):
    fake, env = openrouter
    with signin_server(FLUX_KLEIN_DAILY_BUDGET_USD=BUDGET, **env) as url:
        alice = Person(url, await idp.token("alice", url))
        bob = Person(url, await idp.token("../../bob/..", url))  # a subject shaped like a path
        alices = data(alice.tool("generate_image", {"prompt": "a fox"}))["images"][0]["path"]
        over = alice.tool("generate_image", {"prompt": "another fox"})
        bobs = data(bob.tool("generate_image", {"prompt": "a heron"}))["images"][0]["path"]
        gallery = {who: data(person.tool("recent_images", {"limit": 48})) for who, person in
                   (("alice", alice), ("bob", bob))}
        # Bob's page's cursor, and his files by path and URI, from Alice's side:
        cursor = f"{Path(bobs).stat().st_mtime_ns + 1}:{Path(bobs).name}"
        through_cursor = data(alice.tool("recent_images", {"cursor": cursor}))
        read = alice.rpc("resources/read", {"uri": Path(bobs).as_uri()})
        traversal = alice.rpc("resources/read", {"uri": Path(alices).parent.as_uri() + "/../" +
                                                 "/".join(Path(bobs).parts[-2:])})
        as_input = alice.tool("edit_image", {"prompt": "make it blue", "image": bobs})
        hide = alice.tool("hide_image", {"path": bobs})
        own_read = alice.rpc("resources/read", {"uri": Path(alices).as_uri()})
        usage = {who: data(person.tool("get_usage", {})) for who, person in (("alice", alice), ("bob", bob))}
    # Each has a folder of their own inside the output folder, whatever their subject looks like.
    folders = people_folders(workdir)
    assert len(folders) == 2 and all(re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{32}", f.name) for f in folders)
    assert Path(bobs).resolve().parent in folders and Path(alices).resolve().parent in folders
    assert Path(alices).parent != Path(bobs).parent and Path(bobs).exists()
    # Alice's budget stopped Alice, not Bob.
    assert over["isError"] and "Budget reached" in text(over) and "FLUX_KLEIN_DAILY_BUDGET_USD" in text(over)
    assert len(fake.completions) == 2
    # Each gallery holds only its owner's image, and a cursor naming Bob's file shows Alice nothing of his.
    assert [image["path"] for image in gallery["alice"]["images"]] == [alices]
    assert [image["path"] for image in gallery["bob"]["images"]] == [bobs]
    assert all(image["path"] != bobs for image in through_cursor["images"])
    # Bob's file is out of Alice's reach by every route.
    assert "error" in read and "error" in traversal, (read, traversal)
    assert "Only images in the output folder" in read["error"]["message"] and Path(alices).parent.name in read[
        "error"]["message"] and "Only images" in traversal["error"]["message"]
    assert as_input["isError"] and "is outside the folders input images may be read from" in text(as_input)
    assert hide["isError"] and "is elsewhere" in text(hide)
    assert "contents" in own_read["result"]
    # Each one's spend is their own.
    for who in ("alice", "bob"):
        assert usage[who]["today"]["images"] == 1 and usage[who]["today"]["spent_usd"] == pytest.approx(0.014)
        assert usage[who]["budgets"]["today_left_usd"] == pytest.approx(0.006)
    assert usage["bob"]["person"] == f"{idp.issuer}#../../bob/.."
    rows = ledger_rows(workdir / "ledger.sqlite3")
    assert sorted(row["person"] for row in rows) == [f"{idp.issuer}#../../bob/..", f"{idp.issuer}#alice"]
    # And so says the command line.
    everyone = json.loads(cli(workdir, "spend", "--json", "--by", "person").stdout)
    assert {row["person"]: row["images"] for row in everyone["rows"]} == {
        f"{idp.issuer}#alice": 1, f"{idp.issuer}#../../bob/..": 1}
    hers = json.loads(cli(workdir, "spend", "--json", "--user", "alice").stdout)
    assert hers["person"] == f"{idp.issuer}#alice" and hers["all_time"]["images"] == 1
    shown = cli(workdir, "spend", "--by", "person").stdout
    assert "alice" in shown and "../../bob/.." in shown


async def test_the_server_wide_cap_stops_everyone_without_telling_what_the_others_spent(
        workdir, openrouter, idp: IdP, signin_server):
    fake, env = openrouter
    with signin_server(FLUX_KLEIN_SERVER_DAILY_BUDGET_USD="0.03", **env) as url:
        alice = Person(url, await idp.token("alice", url))
        bob = Person(url, await idp.token("bob", url))
        data(alice.tool("generate_image", {"prompt": "a fox"}))
        data(alice.tool("generate_image", {"prompt": "a fox"}))
        refused = bob.tool("generate_image", {"prompt": "a heron"})
        usage = data(bob.tool("get_usage", {}))
    assert refused["isError"] and "FLUX_KLEIN_SERVER_DAILY_BUDGET_USD" in text(refused)
    assert "0.028" not in text(refused)  # (what Alice spent is hers)
    assert len(fake.completions) == 2
    assert usage["today"]["images"] == 0 and usage["budgets"]["server_daily_usd"] == 0.03


async def test_a_session_belongs_to_the_person_who_opened_it(workdir, openrouter, idp: IdP, signin_server):
    _, env = openrouter
    with signin_server(**env) as url, httpx.Client(timeout=60) as http:
        alice = Legacy(http, token=await idp.token("alice", url))
        assert alice.initialize(url).status_code == 200 and alice.session
        mallory = Legacy(http, token=await idp.token("mallory", url))
        mallory.session = alice.session  # Alice's session id, seen in a log or a proxy
        riding = mallory.post(url, call("generate_image", {"prompt": "on alice's session"}))
        own = alice.post(url, call("get_usage", {}))
    assert riding.status_code == 404
    assert own.status_code == 200 and result_of(own.text, 1)["result"]["isError"] is False
    assert ledger_rows(workdir / "ledger.sqlite3") == []


async def test_an_approval_round_belongs_to_the_person_it_was_asked_of(workdir, openrouter, idp: IdP,
                                                                       signin_server):
    """2026-07-28: Alice's sealed approval round, answered by Mallory, pays for nothing (the SDK binds the round to
    the token's principal, which sign-in gives it); answered by Alice, it makes her image."""
    fake, env = openrouter
    high = {"prompt": "a fox", "tier": "high"}
    with signin_server(**env) as url, httpx.Client(timeout=60) as http:
        alice = Modern(http, ELICITATION, token=await idp.token("alice", url))
        mallory = Modern(http, ELICITATION, token=await idp.token("mallory", url))
        asked = alice.post(url, call("generate_image", high, 1))["result"]
        assert asked["resultType"] == "input_required", asked
        answer = {"inputResponses": {key: APPROVE for key in asked["inputRequests"]},
                  "requestState": asked["requestState"]}
        stolen = mallory.post(url, call("generate_image", high, 2, **answer))
        made = alice.post(url, call("generate_image", high, 3, **answer))["result"]
    assert stolen["error"]["message"] == "Invalid or expired requestState"
    assert made["isError"] is False and len(fake.completions) == 1
    assert [row["person"] for row in ledger_rows(workdir / "ledger.sqlite3")] == [f"{idp.issuer}#alice"]
