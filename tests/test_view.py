"""The MCP Apps view, server side: the tools that name it, the resource a host loads, the app-only strip tool, and
results that stay exactly as they were for clients without the view. (The view itself runs in a real browser in
browser/, `make test-view`.)"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from pathlib import Path

import anyio
import pytest
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.types import ImageContent, TextContent
from PIL import Image

from flux_klein_mcp import gallery, images
from flux_klein_mcp.view import VIEW_URI, view_html
from tests.conftest import summary

pytestmark = pytest.mark.anyio
IMAGE_TOOLS = {"generate_image", "edit_image", "compose_images"}
VIEW_HTML = Path(images.__file__).with_name("view.html")


async def test_the_image_tools_name_the_view_and_the_server_declares_the_extension(connect):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})
    for name in IMAGE_TOOLS:
        assert tools[name].meta == {"ui": {"resourceUri": VIEW_URI}}, name
    assert tools["get_usage"].meta is None


async def test_the_view_is_served_as_an_mcp_app_small_and_self_contained(connect):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        read = await client.read_resource(VIEW_URI)
    assert listed[VIEW_URI].mime_type == APP_MIME_TYPE
    content = read.contents[0]
    assert content.mime_type == APP_MIME_TYPE and content.text == view_html()
    assert '"16:9":[1344,768]' in content.text and "ASPECT_SIZES" in VIEW_HTML.read_text()
    # What it loads, declared: hosts derive the frame's CSP from it, and one that is told nothing may allow no image.
    assert content.meta == {"ui": {"csp": {"resourceDomains": ["data:"]}, "permissions": {"clipboardWrite": {}},
                                   "prefersBorder": True}}
    html = content.text
    assert len(html.encode()) <= 400 * 1024
    # Hosts' CSP allows no network: nothing may be fetched from anywhere (no URL at all in the file).
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html)
    assert not re.search(r"<(link|iframe|object|embed)\b|\bsrc=\"(?!data:)|fetch\(|XMLHttpRequest|WebSocket|import\(",
                         html)
    assert "localStorage" not in html  # the sandboxed frame has an opaque origin: storage throws


APP_ONLY_TOOLS = {"recent_images", "pick_image", "hide_image", "restore_image", "final_price"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # the initialize handshake, and the stateless 2026 protocol
async def test_the_strip_tool_is_listed_only_to_clients_that_show_the_view(connect, mode):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", mode=mode) as plain:
        assert {t.name for t in (await plain.list_tools()).tools} == IMAGE_TOOLS | {"get_usage"}
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True, mode=mode) as host:
        tools = {t.name: t for t in (await host.list_tools()).tools}
    assert set(tools) == IMAGE_TOOLS | {"get_usage"} | APP_ONLY_TOOLS
    for name in APP_ONLY_TOOLS:  # none names the view: hosts would list it as an app of its own
        assert tools[name].meta == {"ui": {"visibility": ["app"]}}, name
    # App-only, and no resourceUri: a host would list a tool that names a view as an app of its own.
    assert tools["recent_images"].meta == {"ui": {"visibility": ["app"]}}
    assert tools["recent_images"].annotations.read_only_hint is True
    assert IMAGE_TOOLS <= set(tools)


async def test_results_are_the_same_for_hosts_with_and_without_the_view(connect):
    shapes = []
    for apps in (False, True):
        async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=apps) as client:
            result = await client.call_tool("generate_image", {"prompt": "a lighthouse", "n": 2, "seed": 3})
        assert not result.is_error
        shapes.append(([type(b).__name__ for b in result.content], sorted(summary(result))))
    assert shapes[0] == shapes[1] and shapes[0][0] == ["TextContent", *["ImageContent"] * 2, *["ResourceLink"] * 2]
    assert result.structured_content is None  # Claude Code drops a tool's images when it is present


async def recent(client, **args):
    result = await client.call_tool("recent_images", args)
    assert not result.is_error, result.content
    data = json.loads(result.content[0].text)
    thumbs = [b for b in result.content if isinstance(b, ImageContent)]
    assert len(thumbs) == len(data["images"])
    return data, thumbs


async def test_recent_images_newest_first_with_what_it_takes_to_make_them_again(connect, workdir):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        empty, _ = await recent(client)
        first = summary(await client.call_tool("generate_image", {"prompt": "a red kite", "seed": 5,
                                                                  "aspect_ratio": "16:9"}))
        source = first["images"][0]["path"]
        edited = summary(await client.call_tool("edit_image", {"prompt": "make it blue", "image": source}))
        composed = summary(await client.call_tool("compose_images", {"prompt": "both", "images": [source, source]}))
        data, thumbs = await recent(client)
        two, _ = await recent(client, limit=2)
    assert empty["images"] == []
    assert [i["path"] for i in data["images"]] == [composed["images"][0]["path"], edited["images"][0]["path"], source]
    assert [i["path"] for i in two["images"]] == [i["path"] for i in data["images"][:2]]
    kite = data["images"][2]
    assert kite["prompt"] == "a red kite" and kite["seed"] == 5 and kite["operation"] == "generate"
    assert (kite["width"], kite["height"], kite["provider"], kite["tier"]) == (1344, 768, "sandbox", "low")
    assert kite["uri"] == Path(source).as_uri() and kite["bytes"] == Path(source).stat().st_size
    assert kite["args"] == {"prompt": "a red kite", "aspect_ratio": "16:9"}
    assert data["images"][1]["args"] == {"prompt": "make it blue", "image": source}
    assert data["images"][0]["args"] == {"prompt": "both", "images": [source, source]}
    for thumb in thumbs:
        assert thumb.mime_type == "image/jpeg"
        with Image.open(io.BytesIO(base64.b64decode(thumb.data))) as small:
            assert max(small.size) <= gallery.THUMBNAIL_PX


async def test_recent_images_skips_what_it_cannot_show_or_did_not_make(connect, workdir):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        made = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2}))
        folder = Path(made["images"][0]["path"]).parent
        good, damaged = (Path(i["path"]) for i in made["images"])
        damaged.write_bytes(damaged.read_bytes()[:200])  # truncated
        shutil.copy(good, folder / "holiday-photo.png")  # not a name the tools write
        outside = workdir.parent / "elsewhere.png"
        shutil.copy(good, outside)
        os.symlink(outside, folder / "20260101-000000-linked.png")  # our naming, but a link out of the folder
        (folder / "20260101-000001-no-sidecar.png").write_bytes(good.read_bytes())
        good.with_suffix(".json").write_text("{not json")
        data, thumbs = await recent(client)
    paths = [i["path"] for i in data["images"]]
    assert str(good) in paths and str(damaged) not in paths
    assert not any("holiday" in p or "linked" in p for p in paths)
    bare = next(i for i in data["images"] if "no-sidecar" in i["path"])
    assert bare["prompt"] is None and bare["args"] is None and bare["operation"] is None
    assert next(i for i in data["images"] if i["path"] == str(good))["args"] is None  # its sidecar is unreadable
    assert len(thumbs) == len(paths) == 2


async def test_recent_images_decodes_each_file_once_until_it_changes(connect, monkeypatch):
    decoded = []
    inspect = images.inspect
    monkeypatch.setattr(images, "inspect", lambda data, *a: decoded.append(len(data)) or inspect(data, *a))
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        made = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        decoded.clear()  # the call itself decodes its image for its own thumbnail
        await recent(client)
        await recent(client)
        assert len(decoded) == 1
        path = Path(made["images"][0]["path"])
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        await recent(client)
    assert len(decoded) == 2


# --- found by the fourth adversarial pass -----------------------------------------------------------------------

async def test_recent_images_is_refused_to_clients_without_the_view(connect):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as plain:
        result = await plain.call_tool("recent_images", {"limit": 5})
    text = " ".join(b.text for b in result.content if isinstance(b, TextContent))
    assert result.is_error and "image view (MCP Apps) only" in text
    assert not any(isinstance(b, ImageContent) for b in result.content)


async def test_hostile_sidecars_neither_hang_nor_break_the_strip(connect, workdir):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        made = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 4, "seed": 1}))
        fifo, deep, infinite, huge_seed = (Path(i["path"]) for i in made["images"])
        fifo.with_suffix(".json").unlink()
        os.mkfifo(fifo.with_suffix(".json"))  # read the plain way, it would block a worker for ever
        deep.with_suffix(".json").write_text("[" * 100_000 + "]" * 100_000)
        infinite.with_suffix(".json").write_text('{"prompt": "x", "cost_usd": Infinity, "seed": 3}')
        huge_seed.with_suffix(".json").write_text('{"prompt": "x", "cost_usd": 1e400, "seed": ' + "9" * 30 + "}")
        with anyio.fail_after(30):
            data, thumbs = await recent(client)
    by_path = {i["path"]: i for i in data["images"]}
    assert len(by_path) == len(thumbs) == 4
    assert by_path[str(fifo)]["prompt"] is None and by_path[str(deep)]["prompt"] is None
    assert by_path[str(infinite)]["cost_usd"] is None and by_path[str(infinite)]["seed"] == 3
    assert by_path[str(huge_seed)]["cost_usd"] is None and by_path[str(huge_seed)]["seed"] is None


async def test_a_sidecar_cannot_make_a_click_send_a_file_from_outside_the_output_folder(connect, workdir):
    private = workdir / "private"
    private.mkdir()
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        made = summary(await client.call_tool("generate_image", {"prompt": "a cute cat", "n": 3}))
        outside, url, inside = (Path(i["path"]) for i in made["images"])
        shutil.copy(outside, private / "passport.png")
        for image, source in ((outside, str(private / "passport.png")), (url, "https://example.com/x.png"),
                              (inside, str(inside))):
            image.with_suffix(".json").write_text(json.dumps(
                {"prompt": "a cute cat", "operation": "edit", "inputs": [{"source": source}]}))
        data, _ = await recent(client)
    args = {i["path"]: i["args"] for i in data["images"]}
    assert args[str(outside)] is None and args[str(url)] is None  # nothing a click could send unseen
    assert args[str(inside)] == {"prompt": "a cute cat", "image": str(inside)}


async def test_a_replaced_image_is_shown_anew_and_a_broken_one_is_decoded_once(connect, monkeypatch):
    decoded = []
    inspect = images.inspect
    monkeypatch.setattr(images, "inspect", lambda data, *a: decoded.append(len(data)) or inspect(data, *a))
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        made = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2, "seed": 1}))
        one, two = (Path(i["path"]) for i in made["images"])
        before, _ = await recent(client)
        # Same size and modification time, other pixels (a copy put in place by rename: a new inode).
        stat = one.stat()
        swap = one.with_name(".swap")
        Image.new("RGB", Image.open(one).size, "white").save(swap, "PNG")
        swap.write_bytes(swap.read_bytes().ljust(stat.st_size, b"\0")[: stat.st_size])
        os.utime(swap, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        os.replace(swap, one)
        two.write_bytes(two.read_bytes()[:300])  # broken: skipped, and not decoded on every refresh
        decoded.clear()
        after, _ = await recent(client)
        await recent(client)
    assert decoded.count(300) == 1
    assert decoded.count(stat.st_size) == 1  # the replacement was decoded, not served from the cache
    assert [i["path"] for i in after["images"]] == [str(one)]
    assert len(before["images"]) == 2


async def test_resources_read_serves_jpeg_names_and_refuses_huge_files(connect, workdir, monkeypatch):
    from flux_klein_mcp import store

    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        made = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        folder = Path(made["images"][0]["path"]).parent
        jpeg = folder / "20261121-120000-a-fox.jpeg"
        Image.new("RGB", (8, 8), "red").save(jpeg, "JPEG")
        read = await client.read_resource(jpeg.as_uri())
        assert read.contents[0].mime_type == "image/jpeg"
        monkeypatch.setattr(store, "MAX_READ_BYTES", 100)
        with pytest.raises(Exception, match="open the file by its path"):
            await client.read_resource(Path(made["images"][0]["path"]).as_uri())


@pytest.mark.parametrize("limit", [0, 49, True, -1])
async def test_recent_images_limit_out_of_range_is_refused_in_our_words(connect, limit):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox", apps=True) as client:
        result = await client.call_tool("recent_images", {"limit": limit})
    text = " ".join(b.text for b in result.content if isinstance(b, TextContent))
    assert result.is_error and "limit" in text and "pydantic" not in text


def test_the_view_ships_in_the_package():
    import tomllib

    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "view.html" in data["tool"]["setuptools"]["package-data"]["flux_klein_mcp"]
