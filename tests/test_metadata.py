"""A provider's image is saved with its pixels untouched but without text chunks, EXIF, XMP, comments or bytes
after its end (generation back ends write their parameters there, and a provider could write anything)."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin

from flux_klein_mcp.metadata import strip_metadata

SECRET = b"sk-or-v1-0123456789abcdef0123456789abcdef"


def encoded(fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(out, fmt, **options)
    return out.getvalue()


def tagged_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", SECRET.decode())
    info.add_itxt("XML:com.adobe.xmp", SECRET.decode(), zip=True)
    exif = Image.Exif()
    exif[0x010E] = SECRET.decode()
    return encoded("PNG", pnginfo=info, exif=exif) + b"trailing junk"


def tagged_jpeg(progressive: bool) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = SECRET.decode()
    return encoded("JPEG", exif=exif, comment=SECRET, progressive=progressive, icc_profile=b"\0" * 16) + b"junk"


def tagged_webp() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = SECRET.decode()
    return encoded("WEBP", exif=exif.tobytes(), xmp=SECRET)


@pytest.mark.parametrize(("fmt", "data"), [
    ("PNG", tagged_png()), ("JPEG", tagged_jpeg(False)), ("JPEG", tagged_jpeg(True)), ("WEBP", tagged_webp()),
], ids=["png", "jpeg", "progressive-jpeg", "webp"])
def test_metadata_and_trailing_bytes_go_and_the_pixels_stay(fmt, data):
    assert SECRET in data or fmt == "PNG"  # (PNG's iTXt is compressed; its tEXt is not)
    clean = strip_metadata(data, fmt)
    assert SECRET not in clean and b"junk" not in clean and len(clean) < len(data)
    with Image.open(io.BytesIO(data)) as before, Image.open(io.BytesIO(clean)) as after:
        assert after.format == fmt and after.size == before.size
        assert after.tobytes() == before.tobytes()
        assert not {"parameters", "exif", "xmp", "comment"} & set(after.info)


@pytest.mark.parametrize(("fmt", "data"), [("PNG", b"\x89PNG\r\n\x1a\nshort"), ("JPEG", b"\xff\xd8\xff\xe0"),
                                           ("WEBP", b"RIFF\x00\x00\x00\x00WEBP"), ("GIF", b"GIF89a...")])
def test_a_file_that_does_not_parse_as_expected_is_left_as_it_is(fmt, data):
    assert strip_metadata(data, fmt) == data
