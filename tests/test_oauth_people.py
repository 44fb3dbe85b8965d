"""Each signed-in person alone (people.py and what reads it): a folder of their own whatever their subject looks
like, an accountant of their own (their daily budget, their ledger rows, and a cap everyone shares), sessions that
open only for them, and `spend --user` / `--by person`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from flux_klein_mcp import people
from flux_klein_mcp.errors import BudgetExceeded, InputError
from flux_klein_mcp.people import Person
from flux_klein_mcp.remote.sessions import Sessions
from flux_klein_mcp.runtime import Runtime
from flux_klein_mcp.spend import Accountant, Quote
from flux_klein_mcp.spend.report import ledger_report, render
from tests.ledger_helpers import KLEIN, open_at

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.example.com"
FOLDER = re.compile(r"[a-z0-9-]{1,24}-[0-9a-f]{32}")
ODD = ["alice", "Alice", "../alice", "a/b", "a\\b", "..", ".", "", "C:", "con", "é" * 40, "x" * 255, "a\x00b",
       "\ud800", " alice ", "-", "a" * 24 + "/../.."]


def test_every_subject_gets_a_safe_folder_of_its_own():
    folders = [Person(ISSUER, subject).folder for subject in ODD]
    assert all(FOLDER.fullmatch(folder) for folder in folders), folders
    assert len(set(folders)) == len(ODD)  # ("Alice" and "alice" too, on a file system that ignores case)
    assert len({folder.lower() for folder in folders}) == len(ODD)
    assert Person(ISSUER, "alice").folder != Person("https://other.example.com", "alice").folder


def test_the_ledger_names_a_person_by_issuer_and_subject():
    person = Person(ISSUER, "a#b")
    assert person.key == "https://idp.example.com#a#b" and people.subject_of(person.key) == "a#b"


async def test_the_runtime_gives_each_person_their_folder_and_accountant(make_settings, workdir):
    async with Runtime.open(make_settings(FLUX_KLEIN_DAILY_BUDGET_USD="1")) as runtime:
        anyone = runtime.store, runtime.spend
        alice = Person(ISSUER, "../alice")
        with people.signed_in(alice):
            store, spend = runtime.store, runtime.spend
            in_a_thread = await anyio.to_thread.run_sync(lambda: runtime.store)  # (workers inherit the person)
            folder = await runtime.in_worker(store.ready)
        with people.signed_in(Person(ISSUER, "bob")):
            assert runtime.store is not store and runtime.spend is not spend
        with people.signed_in(Person(ISSUER, "../alice")):
            assert runtime.store is store and runtime.spend is spend
    assert (runtime.store, runtime.spend) == anyone and people.current() is None
    assert in_a_thread is store and spend.person == alice.key and spend.daily_budget == 1.0
    assert folder == (workdir / "output" / "people" / alice.folder).resolve() and folder.is_dir()


def quote(images: int = 1) -> Quote:
    return Quote("openrouter", "OpenRouter", "m", "low", images, KLEIN, "price list")


def accountants(where: str, daily: float | None, everyone: float | None = None) -> dict[str, Accountant]:
    ledger = open_at(where)
    return {name: Accountant(lambda: ledger, None, daily, clock=lambda: datetime.now().astimezone(),
                             person=None if name == "anyone" else f"{ISSUER}#{name}", everyone_daily_budget=everyone)
            for name in ("alice", "bob", "anyone")}


def spend(accountant: Accountant, images: int = 1) -> None:
    from flux_klein_mcp.spend import Charge

    tab = accountant.reserve(quote(images))
    accountant.settle(tab, [Charge("openrouter", "m", "low", images, KLEIN * images, "provider")])


def test_the_daily_budget_is_each_persons_own(ledger_at):
    books = accountants(ledger_at, daily=2 * KLEIN)
    spend(books["alice"], 2)
    with pytest.raises(BudgetExceeded, match="by you today"):
        books["alice"].reserve(quote())
    spend(books["bob"])  # Alice's spend is not Bob's
    held = books["bob"].reserve(quote())  # in flight: Bob's own reservations count for Bob
    with pytest.raises(BudgetExceeded, match="by you today"):
        books["bob"].reserve(quote())
    books["bob"].release(held)
    usage = books["bob"].usage()
    assert usage["today"]["images"] == 1 and usage["budgets"]["today_left_usd"] == pytest.approx(KLEIN)
    assert usage["person"] == f"{ISSUER}#bob" and books["bob"].standing()["spent_today_usd"] == pytest.approx(KLEIN)
    assert "ledger" not in usage and "ledger" in books["anyone"].usage()
    assert books["anyone"].usage()["today"]["images"] == 3  # (the operator, nobody signed in, sees everything)
    books["anyone"].ledger.close()


def test_the_cap_everyone_shares_stops_everyone_and_tells_no_one_the_others_spend(ledger_at):
    books = accountants(ledger_at, daily=None, everyone=3 * KLEIN)
    spend(books["alice"], 2)
    held = books["alice"].reserve(quote())
    with pytest.raises(BudgetExceeded) as refused:
        books["bob"].reserve(quote())
    assert "FLUX_KLEIN_SERVER_DAILY_BUDGET_USD" in str(refused.value) and "0.028" not in str(refused.value)
    assert "0.042" in str(refused.value)  # (the cap itself is no secret)
    books["alice"].release(held)
    spend(books["bob"])
    assert books["bob"].usage()["budgets"] == {"session_usd": None, "session_left_usd": None, "daily_usd": None,
                                              "today_left_usd": None, "left_usd": None, "server_daily_usd": 0.042}
    with pytest.raises(BudgetExceeded, match="today by everyone using this server"):
        books["anyone"].reserve(quote())
    books["anyone"].ledger.close()


def test_spend_by_person_and_for_one_person(ledger_at):
    books = accountants(ledger_at, daily=None)
    spend(books["alice"], 2)
    spend(books["bob"])
    spend(books["anyone"])
    ledger = books["anyone"].ledger
    now = datetime.now(UTC).astimezone()
    everyone = ledger_report(ledger, now, 7, "person")
    assert [(row["person"], row["images"]) for row in everyone["rows"]] == [
        (f"{ISSUER}#alice", 2), (f"{ISSUER}#bob", 1), (None, 1)]
    assert "(nobody signed in)" in render(everyone)
    hers = ledger_report(ledger, now, 7, None, "alice")
    assert hers["person"] == f"{ISSUER}#alice" and hers["all_time"]["images"] == 2
    assert "Person: https://idp.example.com#alice" in render(hers)
    assert ledger_report(ledger, now, 7, None, f"{ISSUER}#bob")["today"]["images"] == 1
    nobody = ledger_report(ledger, now, 7, "day", "carol")
    assert nobody["all_time"]["images"] == 0 and nobody["person"] == "carol"
    twin = Accountant(lambda: ledger, None, None, clock=lambda: datetime.now().astimezone(),
                      person="https://other.example.com#alice")
    spend(twin)
    with pytest.raises(InputError, match="Several people have the subject 'alice'"):
        ledger_report(ledger, now, 7, None, "alice")
    ledger.close()


def test_a_session_opens_only_for_whoever_opened_it():
    sessions = Sessions(b"s" * 32)
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}
    mine = sessions.issue(init, "alice-digest") or ""
    anyones = sessions.issue(init) or ""
    assert sessions.open(mine, "alice-digest") is not None
    assert sessions.open(mine, "bob-digest") is None and sessions.open(mine) is None
    assert sessions.open(anyones) is not None and sessions.open(anyones, "alice-digest") is None


def test_the_person_seam_is_empty_outside_a_signed_in_request():
    assert people.current() is None
    with people.signed_in(Person(ISSUER, "alice")):
        assert people.current() == Person(ISSUER, "alice")
    assert people.current() is None


__all__ = ["Path"]


@pytest.mark.postgres
def test_a_postgres_ledger_made_before_the_person_index_gets_it(postgres_at):
    import psycopg

    first = open_at(postgres_at)
    first.total()  # (made with every table and index)
    first.close()
    with psycopg.connect(postgres_at, autocommit=True) as db:
        db.execute("DROP INDEX charges_by_person")
    ledger = open_at(postgres_at)
    ledger.total(person="x")
    ledger.close()
    with psycopg.connect(postgres_at, autocommit=True) as db:
        assert db.execute("SELECT to_regclass('charges_by_person')").fetchone() != (None,)


async def test_a_signed_in_persons_image_is_saved_in_their_folder_whichever_thread_writes_it(connect, workdir):
    # The disk threads that write an image do not carry the request's context: the person's folder is chosen
    # before the work is handed to them (an image written to the shared folder was refused as "a link swapped in").
    alice = Person(ISSUER, "alice")
    with people.signed_in(alice):  # (the in-memory server's tasks start inside it, as a signed-in request's do)
        async with connect() as client:
            result = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2})
    assert not result.is_error, result.content
    folder = (workdir / "output" / "people" / alice.folder).resolve()
    saved = sorted(p.name for p in folder.iterdir())
    assert len([name for name in saved if name.endswith(".png")]) == 2, saved
    assert not [p for p in (workdir / "output").iterdir() if p.is_file()]  # nothing in the shared folder
