"""The pieces `serve --http` replicas rely on, without a server: sealed session records, the shared state (single-use
claims, answers in transit) and the connection budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from flux_klein_mcp.remote.asking import Answers, question_key
from flux_klein_mcp.remote.limits import RESERVED_FDS, limits_for
from flux_klein_mcp.remote.sessions import MAX_CHARS, Sessions
from flux_klein_mcp.remote.shared import LedgerShared, SharedStateError
from flux_klein_mcp.spend import LedgerURL

SECRET = b"s" * 32
INIT = {"protocolVersion": "2025-06-18", "capabilities": {"elicitation": {}, "experimental": {"x": {"y": 1}}},
        "clientInfo": {"name": "mcp", "version": "0.1.0", "title": "ignored"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_id_carries_what_the_client_declared():
    record = Sessions(SECRET).open(Sessions(SECRET).issue(INIT) or "")
    assert record is not None
    assert record.protocol_version == "2025-06-18"
    assert record.client_info == {"name": "mcp", "version": "0.1.0"}
    assert record.capabilities == {"elicitation": {}}  # `experimental` is not carried
    connection = record.connection("2025-06-18")
    assert connection.client_params is not None and connection.client_params.client_info.name == "mcp"
    assert connection.client_capabilities is not None and connection.client_capabilities.elicitation is not None


def test_a_session_id_is_printable_ascii_as_the_header_requires():
    token = Sessions(SECRET).issue(INIT) or ""
    assert token and all(0x21 <= ord(c) <= 0x7E for c in token) and len(token) <= MAX_CHARS


@pytest.mark.parametrize("change", ["other-secret", "altered", "expired", "truncated", "garbage", "huge"])
def test_a_session_id_that_was_not_sealed_here_or_is_too_old_does_not_open(change):
    clock = Clock()
    token = Sessions(SECRET, clock=clock).issue(INIT) or ""
    opener = Sessions(b"t" * 32 if change == "other-secret" else SECRET, clock=clock)
    if change == "altered":
        token = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    elif change == "expired":
        clock.now += 8 * 24 * 3600
    elif change == "truncated":
        token = token[:-5]
    elif change == "garbage":
        token = "v1.not-a-token"
    elif change == "huge":
        token = "v1." + "A" * (MAX_CHARS + 1)
    assert opener.open(token) is None


@pytest.mark.parametrize("params", [None, "x", {}, {"clientInfo": {"name": 3}}, {"clientInfo": {"name": "a"}}])
def test_an_initialize_that_is_not_one_gets_no_session(params):
    assert Sessions(SECRET).issue(params) is None


def test_an_unknown_protocol_version_is_recorded_as_the_one_negotiated():
    record = Sessions(SECRET).open(Sessions(SECRET).issue({**INIT, "protocolVersion": "1999-01-01"}) or "")
    assert record is not None and record.protocol_version == "2025-11-25"


def test_a_record_too_large_for_a_header_is_not_issued():
    huge = {**INIT, "clientInfo": {"name": "x" * 10_000, "version": "1"}}
    assert Sessions(SECRET).issue(huge) is None


def shared_at(where: str) -> LedgerShared:
    """The replicas' shared state in the ledger `where` names (FLUX_KLEIN_LEDGER: a path, or a PostgreSQL URL)."""
    return LedgerShared(LedgerURL(where) if where.startswith("postgresql://") else Path(where))


CLAIM = """
import sys, time
from pathlib import Path
from flux_klein_mcp.remote.shared import LedgerShared
from flux_klein_mcp.spend import LedgerURL
where = sys.argv[1]
print(LedgerShared(LedgerURL(where) if where.startswith("postgresql://") else Path(where)).claim_once(
    "approval:abc", time.time() + 60))
"""


def test_a_claim_succeeds_once_across_processes(ledger_at):
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, ledger_at], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    outcomes = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(outcomes) == ["False"] * 5 + ["True"]


def test_an_expired_claim_can_be_made_again(ledger_at):
    shared = shared_at(ledger_at)
    assert shared.claim_once("k", 1.0)  # (expired long ago)
    assert shared.claim_once("k", 9e12)
    assert not shared.claim_once("k", 9e12)


def test_an_answer_is_taken_once(ledger_at):
    shared = shared_at(ledger_at)
    shared.post("q", "the answer", 9e12)
    assert shared.take("q") == "the answer"
    assert shared.take("q") is None
    shared.post("old", "stale", 1.0)
    assert shared.take("old") is None


def test_the_shared_state_is_in_the_ledger_itself_not_a_file_beside_it(tmp_path):
    shared_at(str(tmp_path / "state" / "ledger.sqlite3")).claim_once("k", 9e12)
    assert sorted(p.name for p in (tmp_path / "state").iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        "ledger.sqlite3"]


def test_unwritable_shared_state_refuses_in_our_words(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SharedStateError, match="could not read or write the state its replicas share"):
        shared_at(str(tmp_path / "file" / "ledger.sqlite3")).claim_once("k", 9e12)


@pytest.mark.anyio
async def test_an_answer_delivered_to_another_replica_reaches_the_asker(ledger_at):
    asking, other = Answers(shared_at(ledger_at)), Answers(shared_at(ledger_at))
    async with asking.expecting("key", "session-a") as waiting:
        await other.deliver("key", "session-b", {"id": "x", "result": {"action": "decline"}})  # another session's
        await other.deliver("key", "session-a", {"id": "x", "result": {"action": "accept"}})
        answer = await asking.wait("key", waiting, timeout_s=10)
    assert answer == {"id": "x", "result": {"action": "accept"}}


@pytest.mark.anyio
async def test_a_question_nobody_answers_gives_up(tmp_path):
    answers = Answers(shared_at(str(tmp_path / "ledger.sqlite3")))
    async with answers.expecting("key", "s") as waiting:
        with anyio.fail_after(5):
            assert await answers.wait("key", waiting, timeout_s=0.3) is None


@pytest.mark.parametrize(("message", "key"), [
    ({"jsonrpc": "2.0", "id": "flux-klein-q-" + "a" * 22, "result": {}}, "a" * 22),
    ({"jsonrpc": "2.0", "id": "flux-klein-q-" + "a" * 22, "error": {"code": 1, "message": "no"}}, "a" * 22),
    ({"jsonrpc": "2.0", "id": "flux-klein-q-" + "a" * 21, "result": {}}, None),
    ({"jsonrpc": "2.0", "id": 3, "result": {}}, None),
    ({"jsonrpc": "2.0", "id": "flux-klein-q-" + "a" * 22, "method": "x"}, None),
    ([{"id": "flux-klein-q-" + "a" * 22, "result": {}}], None),
])
def test_only_answers_to_our_own_questions_are_taken_aside(message, key):
    assert question_key(json.loads(json.dumps(message))) == key


def test_the_connection_cap_fits_the_open_file_limit():
    script = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
              "from flux_klein_mcp.remote.limits import limits_for; l = limits_for(None, 32, 10); "
              "print(l.max_connections, l.backlog)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    cap, backlog = map(int, done.stdout.split())
    assert cap + cap + backlog + RESERVED_FDS <= 256 and cap >= 32
    assert limits_for(50, 0, 1.0).max_connections == 50  # (this process: a limit well above)
