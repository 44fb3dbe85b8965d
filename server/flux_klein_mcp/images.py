"""Pillow work: recognise and check image bytes, make thumbnails, clean input images before they are sent.

Everything here is synchronous and CPU-bound; async callers run it in a worker thread.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

# Formats we accept and write, by Pillow format name: (MIME type, file extension).
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
}

# A decompression bomb declares a huge canvas in a tiny file: refuse anything above this before decoding.
MAX_PIXELS = 64 * 1024 * 1024
MAX_INPUT_SIDE = 2048


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?;base64,(?P<data>.*)$", re.S | re.I)


def split_data_url(text: str) -> tuple[str, str] | None:
    """(MIME type, base64 payload) of a `data:...;base64,` URL, or None when it is not one."""
    match = _DATA_URL.match(text)
    return None if match is None else ((match["mime"] or "").lower(), match["data"])


class NotAnImage(ValueError):
    """The bytes are not an image we can decode (the message says why)."""


@dataclass(frozen=True)
class ImageInfo:
    format: str
    mime_type: str
    extension: str
    width: int
    height: int


def inspect(data: bytes) -> ImageInfo:
    """Decode the bytes fully (a truncated file fails here) and describe them."""
    with _open(data) as image:
        return _info(image)


def _open(data: bytes) -> Image.Image:
    if not data:
        raise NotAnImage("the data is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise NotAnImage(f"{image.format or 'this'} images are not supported (use PNG, JPEG, WebP or GIF)")
            if image.width * image.height > MAX_PIXELS:
                size = f"{image.width}x{image.height}"
                raise NotAnImage(f"the image is {size} pixels, more than the {MAX_PIXELS // 1_000_000} MP limit")
            image.load()
    except NotAnImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NotAnImage(_reason(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise NotAnImage(f"the image data is damaged or truncated ({exc})") from exc
    return image


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "the data is not a recognisable image"
    return f"the image declares more pixels than the {MAX_PIXELS // 1_000_000} MP limit (a decompression bomb?)"


def _info(image: Image.Image) -> ImageInfo:
    fmt = image.format or "PNG"
    mime, ext = FORMATS[fmt]
    return ImageInfo(fmt, mime, ext, image.width, image.height)


def thumbnail_jpeg(data: bytes, max_px: int, quality: int = 80) -> bytes:
    """A JPEG whose long side is at most `max_px`, for the model to look at; alpha is laid on white."""
    with _open(data) as image:
        small = _flatten(image.convert("RGBA") if _has_alpha(image) else image.convert("RGB"))
        small.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=quality, optimize=True)
        return out.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


@dataclass(frozen=True)
class PreparedInput:
    data: bytes
    mime_type: str
    width: int
    height: int
    original: ImageInfo


def prepare_input(data: bytes, max_side: int = MAX_INPUT_SIDE) -> PreparedInput:
    """Clean an input image before it leaves the machine.

    Re-encoding drops EXIF, GPS and XMP (photos carry home addresses); the EXIF orientation is applied first
    so the picture is not sent sideways. The long side is brought down to `max_side`. Alpha is kept (PNG);
    lossless sources stay PNG, photos become high-quality JPEG. CMYK, palette and 16-bit modes are converted.
    """
    with _open(data) as image:
        original = _info(image)
        upright = ImageOps.exif_transpose(image) or image
        alpha = _has_alpha(upright)
        clean = _normalise_mode(upright, alpha)
        if max(clean.size) > max_side:
            clean.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if alpha or original.format in ("PNG", "GIF"):
            clean.save(out, "PNG", optimize=False)
            mime = "image/png"
        else:
            clean.save(out, "JPEG", quality=92)
            mime = "image/jpeg"
        return PreparedInput(out.getvalue(), mime, clean.width, clean.height, original)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def _normalise_mode(image: Image.Image, alpha: bool) -> Image.Image:
    """A fresh RGB or RGBA copy (so no metadata travels with it), whatever the source mode."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits (a plain convert would clip everything above 255 to white).
        image = image.convert("I").point(lambda v: v / 257).convert("L")
    if image.mode == "CMYK":
        image = image.convert("RGB")
    converted = image.convert("RGBA" if alpha else "RGB")
    fresh = Image.new(converted.mode, converted.size)
    fresh.paste(converted)
    return fresh
