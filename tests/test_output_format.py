"""`output_format`: sent to each provider exactly as its API documents it, or refused before anything is sent; what
is saved (file, sidecar) and shown (the thumbnail), on the tools and the command line."""

from __future__ import annotations

import base64
import io
import json

import pytest
from mcp.types import ImageContent
from PIL import Image

from tests.conftest import error_text, output_files, summary
from tests.fakes.core import Answer, Incoming
from tests.fakes.images_api import SPECS, FakeImagesAPI
from tests.fakes.openrouter import FakeOpenRouter
from tests.test_cli import cli

pytestmark = pytest.mark.anyio

EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
PILLOW = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def gateway(name: str) -> FakeImagesAPI:
    return FakeImagesAPI(SPECS[name])


def thumbnail(result) -> Image.Image:
    block = next(b for b in result.content if isinstance(b, ImageContent))
    assert block.mime_type == "image/jpeg"
    return Image.open(io.BytesIO(base64.b64decode(block.data)))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize(("name", "field", "spelling"), [
    ("empiriolabs", "format", {"png": "png", "jpeg": "jpg", "webp": "webp"}),  # its docs: webp|png|jpg
    ("openai-compatible", "output_format", {"png": None, "jpeg": "jpeg", "webp": "webp"}),  # OpenAI's field
])
async def test_the_format_is_sent_as_each_api_documents_it_and_saved_as_it_came(connect, workdir, name, field,
                                                                                spelling, fmt):
    fake = gateway(name)
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "output_format": fmt})
    data = summary(result)
    sent = fake.generations[0].json
    assert sent.get(field) == spelling[fmt]  # PNG, the default, is never a new field for an endpoint
    image = data["images"][0]
    path = workdir / "output" / image["path"].rsplit("/", 1)[1]
    assert path.suffix == EXTENSIONS[fmt] and image["format"] == EXTENSIONS[fmt][1:]
    assert Image.open(path).format == PILLOW[fmt]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["output_format"] == fmt and sidecar["format"] == EXTENSIONS[fmt][1:]
    shown = thumbnail(result)
    assert shown.format == "JPEG" and max(shown.size) <= 512
    assert "notes" not in data or not any("although" in note for note in data["notes"])


@pytest.mark.parametrize("name", ["openrouter", "aigateway", "fluxrouter"])
@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
async def test_a_provider_whose_api_takes_no_format_refuses_it_before_any_request(connect, fake, workdir, name,
                                                                                   fmt):
    provider = fake if name == "openrouter" else gateway(name)
    edit = ("edit_image", {"image": "data:image/png;base64," + base64.b64encode(_png()).decode()})
    async with connect(provider) as client:
        for tool, args in (("generate_image", {}), *([edit] if name == "openrouter" else [])):
            result = await client.call_tool(tool, {"prompt": "a fox", "output_format": fmt, **args})
            assert result.is_error
            text = error_text(result)
            assert f"output_format={fmt!r} is not offered by" in text and "Nothing was sent" in text
            assert "provider='empiriolabs'" in text and "provider='openai-compatible'" in text
    assert provider.requests == [] and output_files(workdir) == []


async def test_png_sends_exactly_what_it_sent_before_the_choice_existed(connect, fake):
    async with connect() as client:
        summary(await client.call_tool("generate_image", {"prompt": "a fox", "output_format": "png"}))
    assert set(fake.completions[0].json) == {"model", "messages"}


async def test_an_endpoint_that_refuses_the_field_is_reported_in_its_words(connect, workdir):
    fake = gateway("openai-compatible")
    fake.then(lambda incoming: Answer.json(400, {"error": {
        "message": "Unrecognized request argument supplied: output_format", "type": "invalid_request_error",
        "param": "output_format", "code": None}}))
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "output_format": "webp"})
    assert result.is_error and "Unrecognized request argument supplied: output_format" in error_text(result)
    assert output_files(workdir) == []


async def test_an_endpoint_that_ignores_the_format_is_saved_as_it_came_and_the_result_says_so(connect, workdir):
    fake = gateway("openai-compatible")

    def ignore_format(incoming: Incoming) -> Answer:
        body = {k: v for k, v in incoming.json.items() if k != "output_format"}
        return fake.images_answer(body, fake.render(body))

    fake.then(ignore_format)
    async with connect(fake) as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "output_format": "jpeg"}))
    assert data["images"][0]["format"] == "png" and data["images"][0]["path"].endswith(".png")
    assert any("returned PNG although output_format 'jpeg' was asked for" in note for note in data["notes"])


def test_the_strict_fakes_refuse_what_the_real_apis_refuse():
    generic, empirio = gateway("openai-compatible"), gateway("empiriolabs")
    base = {"prompt": "a fox", "response_format": "b64_json"}
    assert generic.check({**base, "model": generic.spec.model, "output_format": "jpg"}).status == 400
    assert empirio.check({**base, "model": empirio.spec.model, "format": "jpeg"}).status == 400
    assert empirio.check({**base, "model": empirio.spec.model, "output_format": "png"}).status == 400
    for name in ("aigateway", "fluxrouter"):
        other = gateway(name)
        assert other.check({"model": other.spec.model, "prompt": "a fox", "output_format": "png"}).status == 400
    # EmpirioLabs answers WebP when no format is sent (its documented default): ours always says which.
    assert Image.open(io.BytesIO(empirio.render({"model": empirio.spec.model, "prompt": "x"})[0])).format == "WEBP"


async def test_a_jpeg_reply_makes_the_thumbnail_from_its_own_pixels(connect, workdir):
    fake = gateway("empiriolabs")
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "output_format": "jpeg",
                                                           "aspect_ratio": "16:9"})
    shown = thumbnail(result)
    assert shown.size == (512, 293)  # decoded at half scale (1344x768 -> 672x384), then brought to 512
    assert all(abs(a - b) <= 6 for a, b in zip(shown.getpixel((100, 100)), (30, 90, 160), strict=True))


async def test_a_truncated_jpeg_reply_is_refused_and_nothing_is_kept(connect, workdir):
    fake = gateway("openai-compatible")

    def truncated(incoming: Incoming) -> Answer:
        body = incoming.json
        image = fake.render(body)[0]
        return fake.images_answer(body, [image[: len(image) - 200]])

    fake.then(truncated)
    async with connect(fake) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "output_format": "jpeg"})
    assert result.is_error and "not a usable image" in error_text(result)
    assert output_files(workdir) == []  # no temporary file either


async def test_the_sandbox_makes_the_format_asked_and_says_what_a_real_call_needs(connect, workdir):
    async with connect(FLUX_KLEIN_PROVIDER="sandbox") as client:
        data = summary(await client.call_tool("generate_image", {"prompt": "a fox", "n": 2, "output_format": "webp"}))
    assert [image["format"] for image in data["images"]] == ["webp", "webp"]
    notes = [note for note in data["notes"] if "returns PNG only" in note]
    assert len(notes) == 1 and "provider='empiriolabs'" in notes[0]


async def test_a_format_outside_the_list_is_refused_with_the_nearest_one(connect, fake):
    async with connect() as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox", "output_format": "jpg"})
    assert result.is_error and "output_format must be one of: png, jpeg, webp" in error_text(result)
    assert "Did you mean 'jpeg'?" in error_text(result)
    assert fake.requests == []


def test_the_command_line_takes_the_format_and_refuses_it_where_the_provider_cannot(workdir):
    done = cli(["generate", "a fox", "--provider", "sandbox", "--output-format", "JPG"], workdir)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["images"][0]["format"] == "jpg" and data["images"][0]["path"].endswith(".jpg")
    refused = cli(["generate", "a fox", "--provider", "openrouter", "--output-format", "webp"], workdir,
                  OPENROUTER_API_KEY=FakeOpenRouter().key)
    assert refused.returncode == 2 and "--output-format webp" in refused.stderr
    assert "--provider empiriolabs" in refused.stderr and "Nothing was sent" in refused.stderr
    wrong = cli(["generate", "a fox", "--output-format", "gif"], workdir)
    assert wrong.returncode == 2 and "invalid choice: 'gif'" in wrong.stderr and "png, jpeg, webp" in wrong.stderr


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(out, "PNG")
    return out.getvalue()



@pytest.mark.parametrize(("size", "decoded"), [((2048, 2048), (512, 512)), ((1344, 768), (672, 384)),
                                               ((400, 300), (400, 300))])
def test_a_jpeg_is_decoded_at_the_thumbnails_scale_and_still_checked_whole(monkeypatch, size, decoded):
    from flux_klein_mcp import images

    held: list[int] = []
    real_hold = images.MEMORY.hold

    def hold(amount: int):
        held.append(amount)
        return real_hold(amount)

    monkeypatch.setattr(images.MEMORY, "hold", hold)
    out = io.BytesIO()
    Image.new("RGB", size, (30, 90, 160)).save(out, "JPEG", quality=90)
    info, thumb = images.inspect(out.getvalue(), 512)
    assert (info.width, info.height) == size  # what the file is, not what was decoded
    assert held[0] <= images.decoded_bytes(*decoded, "RGBA") + decoded[0] * decoded[1] + 2 * images._BAND_BYTES
    assert max(Image.open(io.BytesIO(thumb)).size) == min(512, max(size))
    with pytest.raises(images.NotAnImage, match="truncated"):
        images.inspect(out.getvalue()[:-300], 512)
