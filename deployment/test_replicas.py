"""Two replicas behind a real reverse proxy (nginx, round-robin, the settings docs/remote.md recommends), sharing one
secret and one ledger: any replica continues what another began, an approval pays for exactly one call, and a daily
budget holds exactly across both."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from tests.conftest import rows_at
from tests.mcp_wire import APPROVE, ELICITATION, Modern, call

from deployment.conftest import BOTH_LEDGERS, ROOT, TOKEN, drive, replica
from deployment.nginx import PROXY_SETTINGS, Proxy, nginx

HIGH = {"prompt": "a lighthouse at dusk, final poster", "tier": "high"}


@contextmanager
def behind_nginx(env: dict[str, str], folder: Path) -> Iterator[Proxy]:
    env = {**env, "FLUX_KLEIN_HTTP_TOKEN": TOKEN, "FLUX_KLEIN_HTTP_PEER_CONNECTIONS": "0"}  # as docs/remote.md says
    with replica(env, folder) as first, replica(env, folder) as second, \
            nginx(folder / "nginx", [first.address, second.address]) as proxy:
        yield proxy


def charges(ledger: str) -> list[float]:
    """What the shared ledger booked, charge by charge (on either backend)."""
    return [row["usd"] for row in rows_at(ledger)]


def tool_calls(proxy: Proxy) -> list[str]:
    """The upstream each tools/call went to, in order (2026-07-28 clients name the method in a header)."""
    return [upstream for upstream, method, _ in proxy.upstreams() if method == "tools/call"]


@BOTH_LEDGERS
def test_a_modern_approval_asked_by_one_replica_is_answered_through_the_other_once(
        tmp_path, provider, replica_env, ledger_location):
    fake, _ = provider
    with behind_nginx(replica_env, tmp_path) as proxy:
        steps = drive("sdk2", {"mode": "auto", "answer": "accept", "target": {"url": proxy.url, "token": TOKEN},
                               "steps": [["call", "generate_image", HIGH]]})
        rounds = tool_calls(proxy)
    assert steps[0]["error"] is False and len(steps[0]["asked"]) == 1, steps
    assert len(rounds) == 2 and rounds[0] != rounds[1], rounds  # asked through one, answered through the other
    assert len(fake.completions) == 1 and charges(ledger_location) == [0.014]


@BOTH_LEDGERS
def test_a_replayed_answer_succeeds_once_and_is_never_charged_twice(tmp_path, provider, replica_env, ledger_location):
    fake, _ = provider
    with behind_nginx(replica_env, tmp_path) as proxy, httpx.Client(timeout=60) as http:
        client = Modern(http, ELICITATION, token=TOKEN)
        asked = client.post(proxy.url, call("generate_image", HIGH, 1))["result"]
        answer = {"inputResponses": {key: APPROVE for key in asked["inputRequests"]},
                  "requestState": asked["requestState"]}
        with ThreadPoolExecutor(6) as pool:  # the same answer, six times at once, through both replicas
            results = list(pool.map(lambda n: client.post(proxy.url, call("generate_image", HIGH, n, **answer)),
                                    range(2, 8)))
        spread = set(tool_calls(proxy)[1:])
    made = [r["result"] for r in results if not r["result"]["isError"]]
    refused = [r["result"]["content"][0]["text"] for r in results if r["result"]["isError"]]
    assert len(made) == 1 and len(refused) == 5, results
    assert all("This approval was already used" in text for text in refused)
    assert len(spread) == 2  # the copies reached both replicas
    assert len(fake.completions) == 1 and charges(ledger_location) == [0.014]


def test_a_2025_era_client_is_asked_and_answered_whichever_replica_each_request_reaches(
        tmp_path, provider, replica_env):
    """The SDK 1.x client initialises on one replica, calls on either, and its answers to the question (a POST of
    their own) land on either: round-robin sends consecutive requests to alternate replicas."""
    fake, _ = provider
    with behind_nginx(replica_env, tmp_path) as proxy:
        steps = drive("sdk1", {"answer": "accept", "target": {"url": proxy.url, "token": TOKEN},
                               "steps": [["call", "generate_image", {**HIGH, "seed": n}] for n in range(3)]
                               + [["call", "generate_image", {"prompt": "a draft"}]]})
        served = {upstream for upstream, _, status in proxy.upstreams() if status in ("200", "202")}
    assert [(step["error"], len(step["asked"])) for step in steps] == [(False, 1)] * 3 + [(False, 0)], steps
    assert "resource_link" not in steps[-1]["kinds"]  # still known as the anonymous SDK client
    assert len(served) == 2 and len(fake.completions) == 4


@BOTH_LEDGERS
def test_a_daily_budget_holds_exactly_across_both_replicas(tmp_path, provider, replica_env, ledger_location):
    """12 low-tier calls at once, spread over both replicas, against a daily budget that pays for 5 images."""
    fake, _ = provider
    env = {**replica_env, "FLUX_KLEIN_DAILY_BUDGET_USD": "0.07"}
    with behind_nginx(env, tmp_path) as proxy, httpx.Client(timeout=60) as http:
        client = Modern(http, token=TOKEN)
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(
                lambda n: client.post(proxy.url, call("generate_image", {"prompt": f"draft {n}"}, n))["result"],
                range(12)))
        spread = set(tool_calls(proxy))
    made = [r for r in results if not r["isError"]]
    refused = [r["content"][0]["text"] for r in results if r["isError"]]
    assert len(made) == 5 and len(refused) == 7, refused
    assert all("FLUX_KLEIN_DAILY_BUDGET_USD" in text for text in refused), refused
    assert len(spread) == 2
    assert len(fake.completions) == 5 and round(sum(charges(ledger_location)), 6) == 0.07


def test_the_docs_show_the_proxy_settings_tested_here():
    doc = (ROOT / "docs" / "remote.md").read_text()
    block = re.search(r"```nginx\n(.*?)```", doc, re.S)
    assert block, "docs/remote.md shows no nginx configuration"
    shown = [line.strip() for line in block.group(1).splitlines()]
    missing = [setting for setting in PROXY_SETTINGS if setting not in shown]
    assert not missing, f"docs/remote.md lacks what the tests run nginx with: {missing}"
