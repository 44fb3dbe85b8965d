"""Input images: confined to allowed folders, only https URLs passed on, every local or data-URL image checked,
cleaned of metadata and downscaled before it is sent. A refusal sends nothing and saves nothing."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import anyio
import pytest
from PIL import Image

from tests.conftest import error_text, output_files, summary
from tests.fakes.core import png
from tests.fakes.openrouter import TEST_KEY

pytestmark = pytest.mark.anyio


def sent_image(fake, index: int = 1) -> Image.Image:
    url = fake.completions[0].json["messages"][0]["content"][index]["image_url"]["url"]
    head, data = url.split(",", 1)
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    image.info["sent_mime"] = head
    return image


async def edit(connect, image: str, **env):
    async with connect(**env) as client:
        return await client.call_tool("edit_image", {"prompt": "make it blue", "image": image})


def assert_refused(result, fake, workdir, *phrases):
    assert result.is_error
    text = error_text(result)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    assert TEST_KEY not in text
    assert fake.requests == [], "nothing may be sent for a refused input"
    assert output_files(workdir) == []
    return text


# --- where local files may come from -------------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "id_photo.png").write_bytes(png(10, 10))
    return folder


@pytest.mark.parametrize("form", ["absolute", "relative", "file-uri", "dotdot"])
async def test_a_file_outside_the_allowed_folders_is_refused(connect, fake, workdir, outside, form):
    target = outside / "id_photo.png"
    ref = {
        "absolute": str(target),
        "relative": os.path.relpath(target, workdir),
        "file-uri": target.as_uri(),
        "dotdot": f"{workdir}/../private/id_photo.png",
    }[form]
    text = assert_refused(await edit(connect, ref), fake, workdir, "outside the folders", "FLUX_KLEIN_INPUT_DIRS")
    assert str(workdir) in text  # names the allowed folders


async def test_a_symlink_inside_pointing_outside_is_refused(connect, fake, workdir, outside):
    (workdir / "innocent.png").symlink_to(outside / "id_photo.png")
    assert_refused(await edit(connect, "innocent.png"), fake, workdir, "outside the folders")


async def test_a_symlinked_folder_pointing_outside_is_refused(connect, fake, workdir, outside):
    (workdir / "linked").symlink_to(outside, target_is_directory=True)
    assert_refused(await edit(connect, "linked/id_photo.png"), fake, workdir, "outside the folders")


async def test_input_dirs_and_client_roots_extend_the_allowed_folders(connect, fake, workdir, outside, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "a.png").write_bytes(png(8, 8))
    summary(await edit(connect, str(extra / "a.png"), FLUX_KLEIN_INPUT_DIRS=f"{tmp_path / 'nope'}{os.pathsep}{extra}"))
    async with connect(roots=[outside]) as client:
        summary(await client.call_tool("edit_image", {"prompt": "x", "image": str(outside / "id_photo.png")}))
    assert len(fake.completions) == 2


async def test_roots_are_only_asked_of_clients_that_declare_them(connect, fake, workdir, outside):
    async with connect() as client:  # no roots capability: the outside folder stays closed
        result = await client.call_tool("edit_image", {"prompt": "x", "image": str(outside / "id_photo.png")})
    assert_refused(result, fake, workdir, "outside the folders")


async def test_the_output_folder_is_allowed_so_results_can_be_edited(connect, fake, workdir):
    async with connect() as client:
        first = summary(await client.call_tool("generate_image", {"prompt": "a fox"}))
        summary(await client.call_tool("edit_image", {"prompt": "blue", "image": first["images"][0]["path"]}))
    assert len(fake.completions) == 2


@pytest.mark.parametrize(
    ("ref", "phrase"),
    [
        ("http://example.com/a.png", "http:// URLs are not accepted"),
        ("ftp://example.com/a.png", "ftp:// URLs are not accepted"),
        ("s3://bucket/a.png", "s3:// URLs are not accepted"),
        ("file://otherhost/etc/a.png", "names another host"),
        ("missing.png", "does not exist"),
        (".", "is a folder"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png;base64,@@@", "base64 is not valid"),
        ("data:image/png,rawdata", "must look like data:image/png;base64"),
        ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "not a usable image"),
        # Found by the adversarial pass: each used to end in the generic "unexpected error ... try again".
        ("x/" * 3000 + "a.png", "the path is too long"),
        ("https://[::1/a.png", "not a valid https:// URL"),
        ("https://example.com:99999/a.png", "not a valid https:// URL"),
        ("https://exa mple.com/a.png", "not a valid https:// URL"),
        ("https:///a.png", "names no host"),
        ("file://[bad/a.png", "not a valid file:// URI"),
        ("~nobody-like-this-user/a.png", "unknown user"),
        ("https://ex\x7fample.com/a.png", "not a valid https:// URL"),
        ("https://xn--a.com/a.png", "its host is not valid"),
        ("https://[fe80::1%25eth0]/a.png", "not a public name"),
        # Found by the third adversarial pass: hosts no resolver takes.
        ("https://a..b/x.png", "an empty part"),
        ("https://" + "a" * 64 + ".com/x.png", "over 63 characters"),
        ("https://.example.com/x.png", "an empty part"),
    ],
)
async def test_bad_references_are_refused_before_any_request(connect, fake, workdir, ref, phrase):
    text = assert_refused(await edit(connect, ref), fake, workdir, phrase, "image")
    assert len(text) < 1500  # a reference of thousands of characters is quoted clipped


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
async def test_a_named_pipe_is_refused_without_blocking_and_not_called_missing(connect, fake, workdir):
    os.mkfifo(workdir / "pipe.png")  # opening it for reading the plain way would hang until a writer came
    with anyio.fail_after(10):
        text = assert_refused(await edit(connect, "pipe.png"), fake, workdir, "named pipe", "not an image file")
    assert "does not exist" not in text


async def test_https_urls_are_passed_on_untouched(connect, fake):
    url = "https://example.com/photos/cat.jpg?sig=abc&exp=1"
    summary(await edit(connect, url))
    assert fake.completions[0].json["messages"][0]["content"][1]["image_url"]["url"] == url


async def test_a_bad_compose_reference_is_named_by_its_position(connect, fake, workdir):
    (workdir / "a.png").write_bytes(png(8, 8))
    async with connect() as client:
        result = await client.call_tool("compose_images", {"prompt": "x", "images": ["a.png", "http://x.test/b.png"]})
    assert_refused(result, fake, workdir, "images[1]", "http://")


# --- what is checked and cleaned -----------------------------------------------------------------------------

async def test_an_image_over_the_size_cap_is_refused_without_being_read(connect, fake, workdir):
    (workdir / "big.png").write_bytes(png(8, 8) + b"\0" * (2 * 1024 * 1024))
    assert_refused(await edit(connect, "big.png", FLUX_KLEIN_MAX_INPUT_MB="1"), fake, workdir,
                   "the limit is 1 MB", "FLUX_KLEIN_MAX_INPUT_MB")


async def test_a_data_url_over_the_size_cap_is_refused(connect, fake, workdir):
    big = "data:image/png;base64," + base64.b64encode(b"\0" * (2 * 1024 * 1024)).decode()
    assert_refused(await edit(connect, big, FLUX_KLEIN_MAX_INPUT_MB="1"), fake, workdir, "the limit is 1 MB")


@pytest.mark.parametrize("size", [(20000, 20000), (9000, 8000)], ids=["400MP", "72MP"])
async def test_a_decompression_bomb_is_refused(connect, fake, workdir, size):
    buffer = io.BytesIO()
    Image.new("1", size).save(buffer, "PNG")  # hundreds of megapixels in a few dozen kilobytes
    assert len(buffer.getvalue()) < 1024 * 1024
    (workdir / "bomb.png").write_bytes(buffer.getvalue())
    assert_refused(await edit(connect, "bomb.png"), fake, workdir, "than the 67 MP limit")


async def test_exif_and_gps_are_stripped_and_orientation_applied(connect, fake, workdir):
    photo = Image.new("RGB", (60, 30), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 29.0)  # GPS latitude
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", exif=exif, comment=b"home address")
    (workdir / "photo.jpg").write_bytes(buffer.getvalue())
    summary(await edit(connect, "photo.jpg"))
    sent = sent_image(fake)
    assert sent.size == (30, 60)  # upright, as the viewer sees it
    assert not sent.getexif() and "exif" not in sent.info and "comment" not in sent.info
    raw = base64.b64decode(fake.completions[0].json["messages"][0]["content"][1]["image_url"]["url"].split(",")[1])
    assert b"PhoneMaker" not in raw and b"home address" not in raw


async def test_xmp_is_stripped_from_png(connect, fake, workdir):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>GPSLatitude 48.8566</x:xmpmeta>")
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buffer, "PNG", pnginfo=info)
    (workdir / "x.png").write_bytes(buffer.getvalue())
    summary(await edit(connect, "x.png"))
    raw = base64.b64decode(fake.completions[0].json["messages"][0]["content"][1]["image_url"]["url"].split(",")[1])
    assert b"GPSLatitude" not in raw and b"xmp" not in raw.lower()


async def test_large_images_are_downscaled_to_2048_on_the_long_side(connect, fake, workdir):
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 1024), "green").save(buffer, "JPEG")
    (workdir / "wide.jpg").write_bytes(buffer.getvalue())
    summary(await edit(connect, "wide.jpg"))
    assert sent_image(fake).size == (2048, 512)


@pytest.mark.parametrize(
    ("mode", "fmt", "save", "expected_mode", "expected_mime"),
    [
        ("RGBA", "PNG", {}, "RGBA", "image/png"),
        ("LA", "PNG", {}, "RGBA", "image/png"),
        ("P", "PNG", {"transparency": 0}, "RGBA", "image/png"),
        ("P", "GIF", {}, "RGB", "image/png"),
        ("CMYK", "JPEG", {}, "RGB", "image/jpeg"),
        ("I;16", "PNG", {}, "RGB", "image/png"),
        ("1", "PNG", {}, "RGB", "image/png"),
        ("RGB", "WEBP", {}, "RGB", "image/jpeg"),
    ],
)
async def test_odd_modes_are_converted_and_alpha_is_kept(connect, fake, workdir, mode, fmt, save, expected_mode,
                                                         expected_mime):
    buffer = io.BytesIO()
    Image.new(mode, (16, 16)).save(buffer, fmt, **save)
    (workdir / f"in.{fmt.lower()}").write_bytes(buffer.getvalue())
    summary(await edit(connect, f"in.{fmt.lower()}"))
    sent = sent_image(fake)
    assert sent.mode == expected_mode and sent.info["sent_mime"] == f"data:{expected_mime};base64"


async def test_a_data_url_is_cleaned_like_a_file(connect, fake, workdir):
    photo = Image.new("RGB", (3000, 100))
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", exif=exif)
    summary(await edit(connect, "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()))
    sent = sent_image(fake)
    assert sent.size == (2048, 68) and not sent.getexif()


@pytest.mark.parametrize("cwd", [Path("/"), Path.home()], ids=["root", "home"])
def test_a_working_directory_that_is_the_whole_disk_or_home_is_not_an_input_folder(cwd, tmp_path):
    from flux_klein_mcp.errors import InputError
    from flux_klein_mcp.inputs import InputPolicy, resolve_input

    picture = tmp_path / "holiday.png"
    picture.write_bytes(png(8, 8))
    policy = InputPolicy.build(cwd, [tmp_path / "output"], 1024 * 1024)
    with pytest.raises(InputError) as refused:
        resolve_input(str(picture), policy, "image")
    assert "whole disk or the home folder" in str(refused.value) and "FLUX_KLEIN_INPUT_DIRS" in str(refused.value)
    with_dirs = InputPolicy.build(cwd, [tmp_path], 1024 * 1024)  # an explicit folder still works
    assert resolve_input(str(picture), with_dirs, "image").mime_type == "image/png"


@pytest.mark.parametrize("ref", ["//fileserver/share/photo.png", "\\\\fileserver\\share\\photo.png",
                                 "file:////fileserver/share/photo.png"])
async def test_network_paths_are_refused_before_any_file_access(connect, fake, workdir, ref):
    result = await edit(connect, ref)
    assert_refused(result, fake, workdir, "image")
    assert "network path" in error_text(result) or "another host" in error_text(result)


async def test_a_webp_too_large_to_decode_in_bounded_memory_is_refused(connect, fake, workdir):
    big = io.BytesIO()
    Image.new("RGB", (4200, 4200), "teal").save(big, "WEBP", lossless=True)  # 17.6 MP in a few hundred bytes
    (workdir / "huge.webp").write_bytes(big.getvalue())
    assert_refused(await edit(connect, "huge.webp"), fake, workdir, "WebP images are accepted up to 16 MP",
                   "use PNG or JPEG")
