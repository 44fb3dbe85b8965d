"""The view's gallery, server side: pages of the output folder under 1 MB, filtered by prompt text and by pick;
pick (kept in the sidecar), hide (into the hidden folder) and restore, confined to the output folder. The paths
these app-only tools take come from a page a host frames: every test below that passes a path is an attack on
that confinement or a check that nothing is lost. (The gallery in a browser: browser/, `make test-view`.)"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp.types import ImageContent

from flux_klein_mcp import store
from tests.conftest import error_text, summary
from tests.test_store import no_hard_links  # noqa: F401  (a fixture)

pytestmark = pytest.mark.anyio
SANDBOX = {"FLUX_KLEIN_PROVIDER": "sandbox", "apps": True}


async def page(client: Any, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("recent_images", args)
    assert not result.is_error, error_text(result)
    data = json.loads(result.content[0].text)
    assert len([b for b in result.content if isinstance(b, ImageContent)]) == len(data["images"])
    # At worst: a transport that spells every character outside ASCII as \uXXXX.
    data["wire_bytes"] = len(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True)))
    return data


async def make(client: Any, prompt: str, n: int = 1, **args: Any) -> list[Path]:
    made = summary(await client.call_tool("generate_image", {"prompt": prompt, "n": n, **args}))
    return [Path(i["path"]) for i in made["images"]]


async def act(client: Any, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, error_text(result)
    return dict(json.loads(result.content[0].text))


async def refused(client: Any, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result.content
    return error_text(result)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (links as where they point), to show that a refusal changed nothing."""
    return {str(p.relative_to(folder)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_symlink() or p.is_file()}


# --- pages -------------------------------------------------------------------------------------------------------

async def test_pages_go_back_newest_first_without_loss_or_repeat_even_as_new_images_arrive(connect):
    async with connect(**SANDBOX) as client:
        made = []
        for i in range(7):
            made += await make(client, f"tile {i}", n=4)
        first = await page(client, limit=12)
        arrived = await make(client, "arrived meanwhile")
        second = await page(client, limit=12, cursor=first["next"])
        third = await page(client, limit=12, cursor=second["next"])
        fresh = await page(client, limit=1)
    shown = [i["path"] for p in (first, second, third) for i in p["images"]]
    assert len(shown) == len(set(shown)) == 28 and set(shown) == {str(p) for p in made}
    assert [len(p["images"]) for p in (first, second, third)] == [12, 12, 4]
    assert first["total"] == 28 and second["total"] == 29  # the total counts what arrived
    assert third["next"] is None
    times = [Path(p).stat().st_mtime_ns for p in shown]
    assert times == sorted(times, reverse=True)  # newest first, across pages
    assert fresh["images"][0]["path"] == str(arrived[0])


async def test_a_page_stays_under_1_mb_whatever_the_prompts(connect):
    """48 long prompts once made one answer 4.5 MB; hosts refuse a tool result over 1 MB."""
    async with connect(**SANDBOX) as client:
        made = []
        for i in range(12):
            made += await make(client, f"long {i}", n=4)
        hostile = 'é"\\<\u2028' * 800  # 4000 characters that each grow when escaped, twice
        for path in made:
            sidecar = path.with_suffix(".json")
            data = json.loads(sidecar.read_text())
            data["prompt"] = hostile
            data["model"] = data["provider"] = data["timestamp"] = hostile
            sidecar.write_text(json.dumps(data))
        pages = [await page(client, limit=48)]
        while pages[-1]["next"]:
            pages.append(await page(client, limit=48, cursor=pages[-1]["next"]))
    assert len(pages) > 1
    assert all(p["wire_bytes"] < 1_000_000 for p in pages), [p["wire_bytes"] for p in pages]
    assert sorted(i["path"] for p in pages for i in p["images"]) == sorted(map(str, made))
    assert pages[0]["images"][0]["prompt"] == hostile  # cut into pages, never cut short


async def test_the_filter_finds_every_word_in_the_prompt_on_every_page(connect):
    async with connect(**SANDBOX) as client:
        cats = await make(client, "a ginger CAT on a red sofa", n=3)
        await make(client, "a red bus", n=2)
        await make(client, "a black cat in the snow")
        both = await page(client, query="cat red", limit=2)
        rest = await page(client, query="cat red", limit=2, cursor=both["next"])
        everything = await page(client, query="  ")
        none = await page(client, query="giraffe")
        digits = await page(client, query="2026")  # in every file name, in no prompt
    assert sorted(i["path"] for i in both["images"] + rest["images"]) == sorted(map(str, cats))
    assert both["total"] == 3 and rest["next"] is None
    assert everything["total"] == 6 and none["images"] == [] and none["total"] == 0 and digits["total"] == 0


async def test_a_pick_is_kept_in_the_sidecar_and_survives_a_restart(connect, workdir):
    async with connect(**SANDBOX) as client:
        one, two, three = await make(client, "a lighthouse", n=3, seed=4)
        await act(client, "pick_image", path=str(two))
        await act(client, "pick_image", path=str(three))
        await act(client, "pick_image", path=str(three), picked=False)
        picked = await page(client, picked=True)
    sidecar = json.loads(two.with_suffix(".json").read_text())
    assert sidecar["picked"] is True and sidecar["prompt"] == "a lighthouse" and sidecar["seed"] == 5
    assert "picked" not in json.loads(three.with_suffix(".json").read_text())
    assert [i["path"] for i in picked["images"]] == [str(two)] and picked["total"] == 1
    async with connect(**SANDBOX) as again:  # a new server on the same folder
        everything = await page(again)
    assert {i["path"]: i["picked"] for i in everything["images"]} == {str(one): False, str(two): True,
                                                                      str(three): False}


async def test_picking_an_image_without_a_sidecar_gives_it_one(connect):
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        image.with_suffix(".json").unlink()
        await act(client, "pick_image", path=str(image))
    assert json.loads(image.with_suffix(".json").read_text()) == {"picked": True}


# --- hide and restore ----------------------------------------------------------------------------------------------

async def test_hide_moves_the_image_and_its_sidecar_away_and_restore_brings_them_back(connect):
    async with connect(**SANDBOX) as client:
        keep, drop = await make(client, "a fox", n=2)
        content = drop.read_bytes(), drop.with_suffix(".json").read_bytes()
        hidden = Path((await act(client, "hide_image", path=str(drop)))["hidden_path"])
        moved = hidden.read_bytes(), hidden.with_suffix(".json").read_bytes(), drop.exists()
        visible = await page(client)
        listed = await page(client, hidden=True)
        back = Path((await act(client, "restore_image", path=str(hidden)))["path"])
        after = await page(client)
    assert hidden == drop.parent / ".hidden" / drop.name
    assert moved == (*content, False)
    assert [i["path"] for i in visible["images"]] == [str(keep)]
    assert [i["path"] for i in listed["images"]] == [str(hidden)] and listed["hidden"] is True
    assert back == drop and (drop.read_bytes(), drop.with_suffix(".json").read_bytes()) == content
    assert not hidden.exists() and not hidden.with_suffix(".json").exists()
    assert {i["path"] for i in after["images"]} == {str(keep), str(drop)}


async def test_hide_and_restore_never_write_over_a_file_of_the_same_name(connect):
    async with connect(**SANDBOX) as client:
        (first,) = await make(client, "a boat", filename="boat")
        hidden = Path((await act(client, "hide_image", path=str(first)))["hidden_path"])
        # The same name is made again in the output folder (the old one left it free), and hidden too.
        (second,) = await make(client, "another boat", filename="boat")
        if second.name != first.name:  # (a second passed: give it the same name by hand)
            os.rename(second, first)
            os.rename(second.with_suffix(".json"), first.with_suffix(".json"))
            second = first
        theirs = hidden.read_bytes()
        hidden_again = Path((await act(client, "hide_image", path=str(second)))["hidden_path"])
        assert hidden_again != hidden and hidden.read_bytes() == theirs
        assert hidden_again.name == f"{first.stem}_2{first.suffix}"
        (third,) = await make(client, "a third boat")
        os.rename(third, first)  # now the output folder holds the first name again: restore must not take it
        os.rename(third.with_suffix(".json"), first.with_suffix(".json"))
        mine = first.read_bytes()
        back = Path((await act(client, "restore_image", path=str(hidden)))["path"])
    assert back != first and first.read_bytes() == mine and back.read_bytes() == theirs
    assert store.SAVED_NAME.match(back.name) and store.SAVED_NAME.match(hidden_again.name)


async def test_the_sweep_never_enters_the_hidden_folder(connect):
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        hidden = Path((await act(client, "hide_image", path=str(image)))["hidden_path"])
    folder = image.parent
    # What the sweep removes at the top level: a dead process's temporary file and reserved sidecar.
    dead = f".tmp-{store._HOST}-999999999-0123456789abcdef"
    (hidden.parent / dead).write_bytes(b"x")
    reserved = hidden.parent / "20260101-000000-x.json"
    reserved.write_bytes(b"reserved " + store._HOST.encode() + b" 999999999\n")
    before = snapshot(hidden.parent)
    store.sweep(folder, now=10**12)
    assert snapshot(hidden.parent) == before


# --- attacks on the confinement ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool", ["pick_image", "hide_image"])
async def test_paths_outside_the_output_folder_are_refused_and_nothing_changes(connect, workdir, tool):
    outside = workdir / "private"
    outside.mkdir()
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a cute cat")
        folder = image.parent
        victim = outside / image.name
        victim.write_bytes(image.read_bytes())
        (outside / image.with_suffix(".json").name).write_text('{"prompt": "theirs"}')
        os.symlink(victim, folder / "20260101-000000-linked.png")
        os.symlink(outside, folder / "20260101-000000-dir.png")
        (folder / "holiday.png").write_bytes(b"not ours")
        before, theirs = snapshot(folder), snapshot(outside)
        attempts = [str(victim), f"{folder}/../private/{image.name}", f"{folder}/../{folder.name}/../private/"
                    f"{image.name}", str(folder / "20260101-000000-linked.png"),
                    str(folder / "20260101-000000-dir.png"),
                    str(folder / "holiday.png"), image.name, f"output/{image.name}", str(image) + "\x00.png",
                    str(image.with_suffix(".json")), str(folder), "", "/" * 5000, image.as_uri()]
        for attempt in attempts:
            text = await refused(client, tool, path=attempt)
            assert "path" in text and "Traceback" not in text
    assert snapshot(folder) == before and snapshot(outside) == theirs


async def test_restore_takes_only_a_hidden_image(connect, workdir):
    async with connect(**SANDBOX) as client:
        keep, drop = await make(client, "a fox", n=2)
        await act(client, "hide_image", path=str(drop))
        before = snapshot(keep.parent)
        for attempt in (str(keep), str(keep.parent / ".hidden" / ".." / keep.name), str(drop)):
            await refused(client, "restore_image", path=attempt)
        assert "hidden" in await refused(client, "hide_image", path=str(keep.parent / ".hidden" / drop.name))
    assert snapshot(keep.parent) == before


async def test_a_hidden_folder_that_is_a_link_elsewhere_is_refused(connect, workdir):
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        os.symlink(elsewhere, image.parent / ".hidden")
        text = await refused(client, "hide_image", path=str(image))
        listing = await refused(client, "recent_images", hidden=True)
    assert "not a folder" in text and "not a folder" in listing
    assert image.exists() and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("kind", ["link", "corrupt", "fifo", "array"])
async def test_a_pick_never_replaces_a_sidecar_it_cannot_read(connect, workdir, kind):
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        sidecar = image.with_suffix(".json")
        target = workdir / "someone-elses.json"
        target.write_text('{"theirs": true}')
        sidecar.unlink()
        if kind == "link":
            os.symlink(target, sidecar)
        elif kind == "fifo":
            os.mkfifo(sidecar)  # read the plain way, it would hang the worker
        else:
            sidecar.write_text("{half" if kind == "corrupt" else "[1, 2]")
        before = snapshot(image.parent)
        text = await refused(client, "pick_image", path=str(image))
    assert "pick was not kept" in text
    assert snapshot(image.parent) == before and target.read_text() == '{"theirs": true}'


async def test_a_sidecar_that_is_a_hard_link_is_replaced_not_written_through(connect, workdir):
    async with connect(**SANDBOX) as client:
        (image,) = await make(client, "a kite")
        sidecar = image.with_suffix(".json")
        theirs = workdir / "theirs.json"
        os.link(sidecar, theirs)
        original = theirs.read_bytes()
        await act(client, "pick_image", path=str(image))
    assert theirs.read_bytes() == original and json.loads(sidecar.read_text())["picked"] is True


@pytest.mark.parametrize("cursor", ["nonsense", "1:../../etc/passwd", "12:" + "a" * 300, "-1:20260101-000000-x.png"])
async def test_a_cursor_the_server_did_not_give_is_refused_in_our_words(connect, cursor):
    async with connect(**SANDBOX) as client:
        text = await refused(client, "recent_images", cursor=cursor)
    assert "cursor" in text and "pydantic" not in text


@pytest.mark.parametrize("tool", ["pick_image", "hide_image", "restore_image", "final_price"])
async def test_the_gallery_tools_are_refused_to_clients_without_the_view(connect, tool):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as plain:
        result = await plain.call_tool(tool, {"path": "/x.png"} if tool != "final_price" else {})
    assert result.is_error and "image view (MCP Apps) only" in error_text(result)


# --- the price of a final ----------------------------------------------------------------------------------------

async def test_final_price_quotes_the_high_tier_and_says_what_a_press_does(connect):
    async def elicit(context: Any, params: Any) -> Any:
        raise AssertionError("nothing is asked for a quote")

    async with connect(apps=True, elicit=elicit) as asks, connect(apps=True) as cannot, \
            connect(apps=True, FLUX_KLEIN_HIGH_TIER="deny") as off, connect(**SANDBOX) as sandbox:
        quoted = await act(asks, "final_price")
        refusing = await act(cannot, "final_price")
        denied = await act(off, "final_price")
        free = await act(sandbox, "final_price")
    assert quoted["price_usd"] == 0.04 and quoted["provider"] == "openrouter" and quoted["available"] is True
    assert "approve $0.040 before anything is spent" in quoted["note"]
    assert "cannot ask" in refusing["note"] and "FLUX_KLEIN_HIGH_TIER=allow" in refusing["note"]
    assert denied["available"] is False and "deny" in denied["note"]
    assert free["price_usd"] == 0 and "Free" in free["note"]


async def test_over_stateless_http_the_view_is_served_but_the_model_is_not_listed_its_tools(workdir):
    """A client on a protocol before 2026-07-28 declares the view once, at an initialize a stateless server does not
    remember (the MCP Inspector's web app does this): its view's calls are served, its tool list stays without the
    app-only tools."""
    import httpx

    from tests.test_http import LIST_TOOLS, MCP_HEADERS, http_server

    def rpc(url: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = httpx.post(url, headers=MCP_HEADERS, timeout=30,
                           json={"jsonrpc": "2.0", "id": 2, "method": method, "params": params})
        body = reply.text
        return dict(json.loads(body[body.index("{"):body.rindex("}") + 1]))

    with http_server(workdir, FLUX_KLEIN_PROVIDER="sandbox") as url:
        listed = httpx.post(url, headers=MCP_HEADERS, json=LIST_TOOLS, timeout=30).text
        rpc(url, "tools/call", {"name": "generate_image", "arguments": {"prompt": "a fox"}})
        gallery = rpc(url, "tools/call", {"name": "recent_images", "arguments": {}})
    assert "generate_image" in listed and "recent_images" not in listed and "hide_image" not in listed
    assert gallery["result"].get("isError") is not True
    assert json.loads(gallery["result"]["content"][0]["text"])["total"] == 1


@pytest.mark.usefixtures("no_hard_links")
def test_without_hard_links_hide_and_restore_still_move_whole_and_never_overwrite(tmp_path):
    """FAT/exFAT and some network shares have no hard links: store.move reserves each name, then renames."""
    from flux_klein_mcp import curate

    image = tmp_path / "20260101-000000-kite.png"
    image.write_bytes(b"mine")
    image.with_suffix(".json").write_text('{"prompt": "a kite"}')
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / image.name).write_bytes(b"theirs")  # the name is taken in the hidden folder
    hidden = curate.hide(tmp_path, str(image))
    assert hidden.name == "20260101-000000-kite_2.png" and hidden.read_bytes() == b"mine"
    assert json.loads(hidden.with_suffix(".json").read_text()) == {"prompt": "a kite"}
    assert (tmp_path / ".hidden" / image.name).read_bytes() == b"theirs" and not image.exists()
    image.write_bytes(b"new")  # and taken again in the output folder
    back = curate.restore(tmp_path, str(hidden))
    assert back.read_bytes() == b"mine" and image.read_bytes() == b"new" and back != image
    assert {p.name for p in tmp_path.iterdir()} == {".hidden", image.name, back.name, back.with_suffix(".json").name}
