"""Text the server did not write, on its way out: a sidecar (a file anyone with access to the output folder can
write), a provider's reply, a folder's name. Every field a gallery entry takes from a sidecar is bounded and only
what the tools take is replayed; a lone surrogate (valid JSON, `"\\ud800"`; not UTF-8) never reaches a transport,
which would stop the stdio server; names mean ASCII digits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp.types import CallToolResult, ResourceLink, TextContent

from flux_klein_mcp import gallery, store
from flux_klein_mcp.rules import MAX_PROMPT_CHARS
from flux_klein_mcp.sdk import sendable
from tests.conftest import error_text
from tests.fakes.core import png
from tests.fakes.openrouter import error, success_with
from tests.test_attack_view import APPS, RawStdio
from tests.test_gallery import SANDBOX, make, page, refused

pytestmark = pytest.mark.anyio


def on_the_wire(result: CallToolResult) -> bytes:
    return result.model_dump_json(by_alias=True, exclude_none=True).encode()  # what the transports do


# --- a sidecar's fields on a gallery page --------------------------------------------------------------------------

def folder_with(tmp_path: Path, sidecar: dict[str, Any], inputs: int = 0) -> Path:
    image = tmp_path / "20260101-120000-kite.png"
    image.write_bytes(png(64, 64))
    sources = []
    (tmp_path / "inputs").mkdir()  # (inside the output folder, not on the page)
    for i in range(inputs):
        source = tmp_path / "inputs" / f"20250101-120000-input-{i}.png"
        source.write_bytes(png(16, 16))
        sources.append({"source": str(source)})
    image.with_suffix(".json").write_text(json.dumps({**sidecar, **({"inputs": sources} if inputs else {})}))
    return image


def entry(folder: Path, budget: int = gallery.PAGE_BYTES) -> dict[str, Any]:
    found = gallery.page(folder, folder, gallery.Query(limit=1), gallery.Thumbnails(), budget=budget)
    return found.images[0].entry


def test_every_text_a_sidecar_gives_is_bounded(tmp_path):
    long = "x" * 200_000  # (four of them: a sidecar under the 1 MiB it is read up to)
    got = entry(folder_with(tmp_path, {field: long for field in gallery.TEXT_LIMITS}).parent)
    assert {field: len(got[field]) for field in gallery.TEXT_LIMITS} == gallery.TEXT_LIMITS


@pytest.mark.parametrize(("sidecar", "inputs", "args"), [
    ({"operation": "generate", "prompt": "p", "aspect_ratio": "4:5"}, 0, {"prompt": "p", "aspect_ratio": "4:5"}),
    ({"operation": "generate", "prompt": "p", "aspect_ratio": "4:5" + " " * 100}, 0, {"prompt": "p"}),
    ({"operation": "generate", "prompt": "p", "aspect_ratio": ["4:5"]}, 0, {"prompt": "p"}),
    ({"operation": "generate", "prompt": "p" * MAX_PROMPT_CHARS}, 0, {"prompt": "p" * MAX_PROMPT_CHARS}),
    ({"operation": "generate", "prompt": "p" * (MAX_PROMPT_CHARS + 1)}, 0, None),  # cut short, it is another prompt
    ({"operation": "compose", "prompt": "p"}, 4, "images"),
    ({"operation": "compose", "prompt": "p"}, 5, None),  # more than compose_images takes
])
def test_only_what_the_tools_take_is_replayed(tmp_path, sidecar, inputs, args):
    got = entry(folder_with(tmp_path, sidecar, inputs).parent)["args"]
    if args == "images":
        assert got is not None and len(got["images"]) == inputs
    else:
        assert got == args


def test_an_input_path_longer_than_any_file_the_tools_read_is_not_replayed(tmp_path):
    image = folder_with(tmp_path, {"operation": "edit", "prompt": "p"}, inputs=1)
    data = json.loads(image.with_suffix(".json").read_text())
    assert entry(tmp_path)["args"] == {"prompt": "p", "image": data["inputs"][0]["source"]}
    data["inputs"][0]["source"] = str(tmp_path) + "/." * 3000 + "/" + Path(data["inputs"][0]["source"]).name
    image.with_suffix(".json").write_text(json.dumps(data))
    assert entry(tmp_path)["args"] is None


def test_a_first_entry_over_the_budget_is_sent_described_by_its_file(tmp_path):
    """A page always shows its first image; one whose sidecar texts would not fit goes without them."""
    image = folder_with(tmp_path, {"operation": "generate", "prompt": '"\\' * 2000, "picked": True, "seed": 3})
    budget = 30_000
    found = gallery.page(tmp_path, tmp_path, gallery.Query(limit=1), gallery.Thumbnails(), budget=budget)
    (first,) = found.images
    assert first.entry["path"] == str(image) and first.entry["picked"] is True and first.entry["width"] == 64
    assert first.entry["prompt"] is None and first.entry["args"] is None
    assert gallery._ENVELOPE_BYTES + gallery._wire_size(first.entry, first.thumbnail) <= budget


def test_sidecar_text_is_made_well_formed_where_it_is_read(tmp_path):
    folder_with(tmp_path, {"operation": "generate", "prompt": "a kite \ud800", "model": "m\udfff",
                           "\udc80key": "v", "aspect_ratio": "1:1"})
    got = entry(tmp_path)
    assert got["prompt"] == "a kite \ufffd" and got["model"] == "m\ufffd"
    assert got["args"] == {"prompt": "a kite \ufffd", "aspect_ratio": "1:1"}
    json.dumps(got, ensure_ascii=False).encode()


# --- one exit for tool results -------------------------------------------------------------------------------------

def test_sendable_mends_every_string_and_copies_nothing_that_needs_nothing():
    clean = CallToolResult(content=[TextContent(text="fine"), ResourceLink(uri="file:///x.png", name="x")],
                           structured_content={"a": ["b", {"c": "d"}]})
    assert sendable(clean) is clean
    broken = CallToolResult(content=[TextContent(text="a \ud800"), ResourceLink(uri="file:///x.png", name="x\udcff")],
                            structured_content={"k\ud800": ["b", {"c": "\udfff"}]})
    mended = sendable(broken)
    assert [getattr(b, "text", None) or b.name for b in mended.content] == ["a \ufffd", "x\ufffd"]
    assert mended.structured_content == {"k\ufffd": ["b", {"c": "\ufffd"}]}
    assert sendable("a \ud83d\ude00") == "a \U0001f600"  # a pair, held as two halves, is joined


async def test_a_providers_lone_surrogate_is_saved_and_sent_not_an_unusable_paid_reply(connect, fake, workdir):
    """The model name in a reply once carried "\\ud800": the sidecar's writer refused it after the image was paid
    for, and the call said the reply could not be understood."""
    def mutate(body: dict[str, Any]) -> None:
        body["model"] += "\ud800"
        body["choices"][0]["message"]["content"] = "a note \udfff"

    fake.then(success_with(mutate))
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a kite"})
    assert not result.is_error, error_text(result)
    on_the_wire(result)
    (sidecar,) = (workdir / "output").glob("*.json")
    assert json.loads(sidecar.read_text())["model"].endswith("\ufffd")


async def test_a_providers_error_with_a_lone_surrogate_reaches_the_client_in_words(connect, fake):
    fake.then(error(400, "bad \ud800 request"))
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a kite"})
    assert result.is_error and "bad \ufffd request" in error_text(result)
    on_the_wire(result)


def test_an_output_folder_whose_name_is_not_utf8_does_not_stop_the_stdio_server(tmp_path):
    """A folder named in Latin-1 on a UTF-8 system (b"caf\\xe9"): Python holds its name with a lone surrogate, and
    every result names the folder."""
    workdir = tmp_path / os.fsdecode(b"caf\xe9")
    workdir.mkdir()
    server = RawStdio(workdir)
    try:
        init = server.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": APPS,
                                             "clientInfo": {"name": "t", "version": "1"}})
        assert init is not None and "result" in init
        server.send({"method": "notifications/initialized"})
        made = server.request("tools/call", {"name": "generate_image", "arguments": {"prompt": "a kite"}})
        gallery_page = server.request("tools/call", {"name": "recent_images", "arguments": {}})
        after = server.request("tools/list", {})
    finally:
        stderr = server.close()
    assert made is not None and gallery_page is not None and after is not None, stderr[-700:]
    assert made["result"].get("isError") is not True, stderr[-3000:]
    assert "/caf\ufffd/output/" in json.loads(made["result"]["content"][0]["text"])["images"][0]["path"]
    assert "\\udce9" not in made["result"]["content"][0]["text"]  # (not even escaped: some parsers refuse it)
    link = next(b for b in made["result"]["content"] if b["type"] == "resource_link")
    assert "/caf%E9/output/" in link["uri"]  # the URI, percent-encoded, still names the file exactly
    assert json.loads(gallery_page["result"]["content"][0]["text"])["total"] == 1


# --- names and cursors mean ASCII digits ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["٢٠٢٦٠١٠١-١٢٠٠٠٠-kite.png", "20260101-120000-kite_٢.png",
                                  "20260101-120000-kite.png\n", "２0260101-120000-kite.json"])
def test_saved_names_are_ascii_digits_only(name):
    assert store.SAVED_NAME.match(name) is None


@pytest.mark.parametrize("cursor", ["١٢٣:20260101-120000-kite.png", "123:20260101-120000-kite.png\n"])
async def test_a_cursor_in_other_digits_is_refused(connect, cursor):
    async with connect(**SANDBOX) as client:
        await make(client, "a kite")
        assert (await page(client))["total"] == 1
        text = await refused(client, "recent_images", cursor=cursor)
    assert "cursor is not one this server gave" in text
