"""The three tools through the SDK's in-memory client, against the strict fake OpenRouter."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent
from PIL import Image

from tests.conftest import output_files, summary
from tests.fakes.core import png
from tests.fakes.openrouter import FLUX, SEEDREAM, prompt_of

pytestmark = pytest.mark.anyio


def blocks(result: CallToolResult, kind: type) -> list:
    return [b for b in result.content if isinstance(b, kind)]


async def test_tools_are_listed_with_titles_annotations_and_the_skill_rules(connect):
    async with connect() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"generate_image", "edit_image", "compose_images", "get_usage"}
    usage = tools.pop("get_usage")
    assert usage.title and usage.annotations.read_only_hint is True and usage.input_schema.get("properties") == {}
    for tool in tools.values():
        assert tool.title
        assert tool.annotations.read_only_hint is False
        assert tool.annotations.destructive_hint is False
        assert tool.annotations.open_world_hint is True
        assert tool.output_schema is None
        text = tool.description
        assert 'tier="low"' in text and "explicitly asks for a final" in text
        assert "402" in text and "do not switch tier" in text and "https://openrouter.ai/settings/credits" in text
        assert "budget is reached: STOP" in text and "The person approves each high-tier call" in text
        assert "consent" not in tool.input_schema["properties"]  # filled by the server, never by the model
        for pair in ("logo, icon, avatar, square post 1:1", "phone story, reel, wallpaper 9:16",
                     "presentation hero, video thumbnail, desktop 16:9", "poster, book cover, Pinterest 2:3",
                     "blog header, landscape photo 3:2"):
            assert pair in text
        props = tool.input_schema["properties"]
        assert all(prop.get("description") for prop in props.values())
        assert props["tier"]["enum"] == ["low", "high"] and props["tier"]["default"] == "low"
    assert "not a pixel overlay" in tools["compose_images"].description
    assert tools["generate_image"].input_schema["properties"]["n"]["maximum"] == 4
    assert tools["compose_images"].input_schema["properties"]["images"]["minItems"] == 2


async def test_generate_returns_json_then_thumbnail_then_resource_link(connect, fake, workdir):
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a red fox in snow", "aspect_ratio": "16:9"})
    data = summary(result)
    assert [type(b) for b in result.content] == [TextContent, ImageContent, ResourceLink]
    assert result.structured_content is None
    image = data["images"][0]
    path = Path(image["path"])
    assert path.is_absolute() and path.parent == workdir / "output"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (image["width"], image["height"], image["format"]) == (1344, 768, "png")
    assert image["bytes"] == path.stat().st_size and image["uri"] == path.as_uri()
    assert data["model"] == FLUX and data["provider"] == "openrouter" and data["tier"] == "low"
    assert data["cost_usd"] == 0.014
    assert data["prompt_sent"] == "a red fox in snow, aspect ratio 16:9"
    thumb = blocks(result, ImageContent)[0]
    assert thumb.mime_type == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(thumb.data))) as small:
        assert small.format == "JPEG" and max(small.size) == 512
    link = blocks(result, ResourceLink)[0]
    assert (link.uri, link.mime_type, link.size) == (path.as_uri(), "image/png", image["bytes"])
    assert len(fake.completions) == 1


async def test_the_file_holds_exactly_the_bytes_the_provider_sent(connect, fake):
    async with connect() as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    reply = json.loads(fake.success(fake.completions[0].json).body)
    sent = base64.b64decode(reply["choices"][0]["message"]["images"][0]["image_url"]["url"].split(",", 1)[1])
    assert Path(data["images"][0]["path"]).read_bytes() == sent


async def test_sidecar_records_the_call(connect, fake):
    async with connect() as client:
        data = summary(await client.call_tool(
            "generate_image", {"prompt": "a fox", "aspect_ratio": "2:3", "seed": 42, "filename": "Fox Poster"}))
    image = data["images"][0]
    assert Path(image["path"]).name.endswith("-fox-poster.png")
    sidecar = json.loads(Path(image["sidecar"]).read_text())
    assert sidecar["prompt"] == "a fox" and sidecar["prompt_sent"] == "a fox, aspect ratio 2:3"
    assert (sidecar["model"], sidecar["provider"], sidecar["tier"]) == (FLUX, "openrouter", "low")
    assert (sidecar["seed"], sidecar["aspect_ratio"], sidecar["inputs"]) == (42, "2:3", [])
    assert sidecar["cost_usd"] == 0.014 and sidecar["cost_source"] == "provider"
    assert sidecar["generation_id"] == "gen-1" and sidecar["timestamp"]
    assert fake.completions[0].json["seed"] == 42


async def test_cost_falls_back_to_the_price_table_without_usage_cost(connect, fake):
    fake.cost = None
    async with connect() as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
    assert data["cost_usd"] == 0.014
    assert json.loads(Path(data["images"][0]["sidecar"]).read_text())["cost_source"] == "price list"


async def test_n_images_are_parallel_requests_with_consecutive_seeds(connect, fake, workdir):
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "n": 4, "seed": 100})
    data = summary(result)
    assert sorted(r.json["seed"] for r in fake.completions) == [100, 101, 102, 103]
    assert [i["seed"] for i in data["images"]] == [100, 101, 102, 103]
    names = [Path(i["path"]).name for i in data["images"]]
    assert [n.rsplit("-", 1)[1] for n in names] == ["1.png", "2.png", "3.png", "4.png"]
    assert len(blocks(result, ImageContent)) == 4 and len(blocks(result, ResourceLink)) == 4
    assert data["cost_usd"] == 0.056
    assert len(output_files(workdir)) == 8  # 4 images + 4 sidecars


async def test_n_requests_overlap_rather_than_queue(connect, fake):
    import threading

    arrived = threading.Barrier(4, timeout=5)

    def wait_for_all(incoming):
        arrived.wait()  # only returns once all four requests are in flight at the same time
        return fake.respond(incoming)

    fake.then(*[wait_for_all] * 4)
    async with connect(loopback=True) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 4}))
    assert len(data["images"]) == 4


async def test_result_stays_under_one_mebibyte_with_four_big_thumbnails(connect, fake):
    noisy = Image.effect_noise((1024, 1024), 120).convert("RGB")  # incompressible: worst case for JPEG
    out = io.BytesIO()
    noisy.save(out, "PNG")
    big = out.getvalue()

    def noisy_image(incoming):
        answer = fake.respond(incoming)
        body = json.loads(answer.body)
        body["choices"][0]["message"]["images"][0]["image_url"]["url"] = (
            "data:image/png;base64," + base64.b64encode(big).decode())
        answer.body = json.dumps(body).encode()
        return answer

    fake.then(*[noisy_image] * 4)
    async with connect(FLUX_KLEIN_THUMBNAIL_PX="1024") as client:
        result = await client.call_tool("generate_image", {"prompt": "static", "n": 4})
    assert len(result.model_dump_json(by_alias=True)) < 1_048_576
    assert len(blocks(result, ImageContent)) == 4


async def test_thumbnail_px_zero_returns_no_thumbnails(connect):
    async with connect(FLUX_KLEIN_THUMBNAIL_PX="0") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert [type(b) for b in result.content] == [TextContent, ResourceLink]


async def test_thumbnail_px_sets_the_long_side(connect):
    async with connect(FLUX_KLEIN_THUMBNAIL_PX="200") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "aspect_ratio": "9:16"})
    with Image.open(io.BytesIO(base64.b64decode(blocks(result, ImageContent)[0].data))) as small:
        assert small.size == (114, 200)


async def test_a_small_thumbnail_px_is_never_exceeded(connect):
    async with connect(FLUX_KLEIN_THUMBNAIL_PX="64") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "aspect_ratio": "16:9"})
    with Image.open(io.BytesIO(base64.b64decode(blocks(result, ImageContent)[0].data))) as small:
        assert max(small.size) == 64


async def test_high_tier_uses_seedream_with_modalities_and_image_config(connect, fake):
    async with connect(FLUX_KLEIN_HIGH_TIER="allow") as client:  # the person's standing consent
        data = summary(await client.call_tool("generate_image",
                                              {"prompt": "final hero", "aspect_ratio": "21:9", "tier": "high"}))
    sent = fake.completions[0].json
    assert sent["model"] == SEEDREAM and sent["modalities"] == ["image"]
    assert sent["image_config"] == {"aspect_ratio": "21:9"} and prompt_of(sent) == "final hero"
    assert (data["tier"], data["images"][0]["width"]) == ("high", 1536)


async def test_edit_sends_the_local_file_as_a_data_url_after_the_text(connect, fake, workdir):
    (workdir / "photo.jpg").write_bytes(_jpeg(64, 48))
    async with connect() as client:
        data = summary(await client.call_tool(
            "edit_image", {"prompt": "make the sky purple", "image": "photo.jpg", "aspect_ratio": "4:3"}))
    content = fake.completions[0].json["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "make the sky purple, aspect ratio 4:3"}
    assert len(content) == 2 and content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    sidecar = json.loads(Path(data["images"][0]["sidecar"]).read_text())
    assert sidecar["inputs"][0]["source"] == str(workdir / "photo.jpg")


async def test_an_edit_keeps_its_input_shape_unless_told_otherwise(connect, fake, workdir):
    (workdir / "portrait.png").write_bytes(png(90, 120))  # 3:4
    async with connect() as client:
        kept = summary(await client.call_tool("edit_image", {"prompt": "add a hat", "image": "portrait.png"}))
        chosen = summary(await client.call_tool("edit_image", {"prompt": "add a hat", "image": "portrait.png",
                                                              "aspect_ratio": "16:9"}))
    assert kept["aspect_ratio"] == "3:4" and kept["prompt_sent"] == "add a hat, aspect ratio 3:4"
    assert (kept["images"][0]["width"], kept["images"][0]["height"]) == (864, 1184)
    assert any("taken from the input image (90x120)" in note for note in kept["notes"])
    assert chosen["aspect_ratio"] == "16:9" and "notes" not in chosen


async def test_compose_sends_every_reference_in_order(connect, fake, workdir):
    (workdir / "a.png").write_bytes(png(40, 40, (255, 0, 0)))
    refs = [
        "a.png",
        (workdir / "a.png").as_uri(),
        "https://example.com/jacket.webp",
        "data:image/png;base64," + base64.b64encode(png(8, 8)).decode(),
    ]
    async with connect() as client:
        summary(await client.call_tool("compose_images", {"prompt": "the person from image 1", "images": refs}))
    parts = fake.completions[0].json["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url", "image_url", "image_url"]
    assert parts[3]["image_url"]["url"] == "https://example.com/jacket.webp"
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in (parts[1], parts[2], parts[4]))


async def test_progress_is_reported_as_each_image_finishes(connect):
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(done, total, message):
        seen.append((done, total, message))

    async with connect() as client:
        await client.call_tool("generate_image", {"prompt": "a fox", "n": 3}, progress_callback=progress)
    assert [done for done, _, _ in seen] == [0, 1, 2, 3]
    assert all(total == 3 for _, total, _ in seen)
    assert all(message for _, _, message in seen)


async def test_sandbox_needs_no_key_and_records_what_it_would_send(connect, fake, workdir):
    async with connect(OPENROUTER_API_KEY="", FLUX_KLEIN_PROVIDER="sandbox") as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "aspect_ratio": "9:16", "seed": 5})
    data = summary(result)
    assert fake.requests == []
    assert (data["provider"], data["cost_usd"], data["would_cost_usd"]) == ("sandbox", 0, 0.014)
    image = data["images"][0]
    assert (image["width"], image["height"]) == (768, 1344)
    sidecar = json.loads(Path(image["sidecar"]).read_text())
    assert sidecar["would_send"] == {"model": FLUX, "seed": 5,
                                     "messages": [{"role": "user", "content": "a fox, aspect ratio 9:16"}]}
    assert sidecar["cost_usd"] == 0 and sidecar["would_cost_usd"] == 0.014


async def test_sandbox_is_deterministic_for_a_seed(connect):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as client:
        first = summary(await client.call_tool("generate_image", {"prompt": "a fox", "seed": 9}))
        second = summary(await client.call_tool("generate_image", {"prompt": "a fox", "seed": 9}))
        other = summary(await client.call_tool("generate_image", {"prompt": "a fox", "seed": 10}))
    read = lambda d: Path(d["images"][0]["path"]).read_bytes()  # noqa: E731
    assert read(first) == read(second) != read(other)
    assert first["images"][0]["path"] != second["images"][0]["path"]  # never overwritten


async def test_sandbox_edit_abbreviates_data_urls_in_would_send(connect, workdir):
    (workdir / "in.png").write_bytes(png(32, 32))
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as client:
        data = summary(await client.call_tool("edit_image", {"prompt": "blue", "image": "in.png"}))
    sent = json.loads(Path(data["images"][0]["sidecar"]).read_text())["would_send"]
    url = sent["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,<") and url.endswith(" bytes>")


async def test_a_client_can_read_the_linked_file_but_nothing_outside_the_output_folder(connect, workdir):
    (workdir / "secret.png").write_bytes(png(4, 4))
    async with connect() as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        read = await client.read_resource(data["images"][0]["uri"])
        assert base64.b64decode(read.contents[0].blob) == Path(data["images"][0]["path"]).read_bytes()
        assert read.contents[0].mime_type == "image/png"
        with pytest.raises(Exception, match="output folder"):
            await client.read_resource((workdir / "secret.png").as_uri())


def _jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


@pytest.mark.parametrize(("client", "mode", "linked"), [
    (("claude-code", "2.1.0"), "auto", True),
    (("mcp", "0.1.0"), "auto", False),  # the SDK's default: what LangChain's adapters send
    (("fastmcp", "4.2.1"), "auto", False),
    (("mcp", "0.1.0"), "always", True),
    (("claude-code", "2.1.0"), "never", False),
])
async def test_resource_links_go_to_clients_that_use_them(fake, make_settings, client, mode, linked):
    from mcp import Client
    from mcp.types import Implementation

    from flux_klein_mcp.server import create_server
    from tests.conftest import provider_env
    from tests.fakes.core import mock_transport

    server = create_server(make_settings(**provider_env(fake), FLUX_KLEIN_RESOURCE_LINKS=mode),
                           transport=mock_transport(fake))
    async with Client(server, client_info=Implementation(name=client[0], version=client[1])) as session:
        result = await session.call_tool("generate_image", {"prompt": "a fox"})
    data = summary(result)
    assert bool(blocks(result, ResourceLink)) is linked
    assert Path(data["images"][0]["path"]).is_file() and data["images"][0]["uri"].startswith("file://")


async def test_the_tool_list_stays_within_its_token_budget(connect):
    """Every conversation pays for the tool list: this cap only ever comes down (today about 14.2 k characters of
    what the model reads; `_meta`, the view's address, is for the host and not counted)."""
    async with connect() as client:
        tools = (await client.list_tools()).tools
    assert sum(len(json.dumps(t.model_dump(exclude_none=True, by_alias=True, exclude={"meta"}))) for t in tools) \
        <= 14_300


async def test_each_tools_aspect_ratio_says_what_omitting_it_does(connect):
    async with connect() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    said = {name: tools[name].input_schema["properties"]["aspect_ratio"]["description"] for name in
            ("generate_image", "edit_image", "compose_images")}
    assert "Omit for 1:1 (1024x1024)" in said["generate_image"]
    assert "Omit to keep the input image's shape" in said["edit_image"] and "1:1" not in said["edit_image"][-60:]
    assert "Omit to let the model choose" in said["compose_images"]
    assert "n images get seed" in tools["generate_image"].input_schema["properties"]["seed"]["description"]
    assert "n images" not in tools["edit_image"].input_schema["properties"]["seed"]["description"]
