"""Pillow work: recognise and check image bytes, make thumbnails, clean input images before they are sent.

Everything here is synchronous and CPU-bound; async callers run it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .store import FORMATS

# A decompression bomb declares a huge canvas in a tiny file: refuse anything above this before decoding.
MAX_PIXELS = 64 * 1024 * 1024
#: Pillow decodes a WebP whole, into a buffer and then the image: a larger one would cost several times its size.
MAX_WEBP_PIXELS = 16 * 1024 * 1024
MAX_INPUT_SIDE = 2048


_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[^,;]*)*?;base64,(?P<data>.*)$", re.S | re.I)


_WHITESPACE = re.compile(r"\s+")


def b64decode(text: str) -> bytes:
    """Strict base64, with whitespace (line breaks some encoders insert) removed only when the strict decode fails:
    stripping a clean multi-megabyte payload first would cost more than the decode itself."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(_WHITESPACE.sub("", text), validate=True)


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


def identify(data: bytes) -> ImageInfo:
    """What the bytes are, from their header: checked as `inspect` checks them, but with no pixel decoded."""
    with _open(data, decode=False) as image:
        return _info(image)


def inspect(data: bytes, thumbnail_px: int = 0, quality: int = 80) -> tuple[ImageInfo, bytes | None]:
    """Decode the bytes fully (a truncated file fails here) and describe them; with `thumbnail_px`, also make the
    JPEG thumbnail the model sees, from the same decoded pixels (one decode per image, as it is saved).

    A JPEG is decoded straight at the scale the thumbnail needs (1/2, 1/4 or 1/8: the decoder skips the rest of
    each block's detail), which still reads every byte of it: a damaged one fails as surely, in a tenth of the time.
    """
    with _open(data, decode=False) as image:
        info = _info(image)
        if thumbnail_px > 0 and image.format == "JPEG" and max(image.size) > thumbnail_px:
            scale = thumbnail_px / max(image.size)  # the thumbnail's own shape: the decoder keeps both sides above it
            image.draft(image.mode, (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        with MEMORY.hold(_working_bytes(image, shrinking=thumbnail_px > 0)):
            _load(image)
            return info, (_thumbnail(image, thumbnail_px, quality) if thumbnail_px > 0 else None)


def _open(data: bytes, *, decode: bool = True) -> Image.Image:
    """The image in `data`, checked against the formats and the pixel limit before any pixel is decoded; decoded
    too unless `decode` is False (then call `_load` once the memory for it is held)."""
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
            if image.format == "WEBP" and image.width * image.height > MAX_WEBP_PIXELS:
                raise NotAnImage(f"WebP images are accepted up to {MAX_WEBP_PIXELS // 1_000_000} MP (this one is "
                                 f"{image.width}x{image.height}): they cannot be decoded at a reduced scale; use PNG "
                                 "or JPEG for images that large")
    except NotAnImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise NotAnImage(_reason(exc)) from exc
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise NotAnImage(f"the image data is damaged or truncated ({exc})") from exc
    if decode:
        _load(image)
    return image


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise NotAnImage(f"the image data is damaged or truncated ({exc})") from exc


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
        return _thumbnail(image, max_px, quality)


def _thumbnail(image: Image.Image, max_px: int, quality: int) -> bytes:
    """Shrink `image` (reducing first: a full LANCZOS pass over a megapixel costs ten times more and shows nowhere
    at this size), then lay any alpha on white and encode a JPEG."""
    alpha = _has_alpha(image)
    small = _shrink(image, max_px, alpha, reducing_gap=1.0)
    wanted = "RGBA" if alpha else "RGB"
    small = small if small.mode == wanted else small.convert(wanted)  # (a conversion is a copy, even to itself)
    small = _flatten(small) if alpha else small
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


# EXIF orientation -> the transpose that makes the picture upright (what `ImageOps.exif_transpose` applies).
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Modes Pillow cannot resize well as they are (palette and 1-bit fall back to nearest neighbour, 16-bit fails).
_CONVERT_FIRST = frozenset({"P", "PA", "1", "I;16", "I;16B", "I;16L", "I;16N"})


def prepare_input(data: bytes, max_side: int = MAX_INPUT_SIDE) -> PreparedInput:
    """Clean an input image before it leaves the machine.

    Re-encoding drops EXIF, GPS and XMP (photos carry home addresses); the EXIF orientation is applied so the
    picture is not sent sideways. The long side is brought down to `max_side`. Alpha is kept (PNG); lossless
    sources stay PNG, photos become high-quality JPEG. CMYK, palette and 16-bit modes are converted.

    Memory: a JPEG is decoded at a reduced scale where that still covers `max_side` (draft mode); any other
    image is shrunk right after decoding and the full-size pixels are dropped before anything else is done with
    it. The decode is admitted by `MEMORY`, so concurrent calls never hold more than its budget at once.
    """
    with _open(data, decode=False) as source:
        original = _info(source)
        if source.format == "JPEG":
            source.draft(source.mode, (max_side, max_side))  # the decoder scales by 1/2, 1/4 or 1/8 on the way
        with MEMORY.hold(_working_bytes(source, shrinking=True)):
            _load(source)
            orientation = source.getexif().get(0x0112)  # after the load: for a PNG, reading EXIF decodes it
            alpha = _has_alpha(source)
            clean = _normalise_mode(_shrink(source, max_side, alpha), alpha)
    if orientation in _UPRIGHT:
        clean = clean.transpose(_UPRIGHT[orientation])
    out = io.BytesIO()
    if alpha or original.format in ("PNG", "GIF"):
        clean.save(out, "PNG", optimize=False)
        mime = "image/png"
    else:
        clean.save(out, "JPEG", quality=92)
        mime = "image/jpeg"
    return PreparedInput(out.getvalue(), mime, clean.width, clean.height, original)


#: Rows of a full-size image reduced at a time: each band's temporary copies stay near this many bytes.
_BAND_BYTES = 16 * 1024 * 1024


def _shrink(image: Image.Image, max_side: int, alpha: bool, reducing_gap: float = 2.0) -> Image.Image:
    """`image` with its long side at most `max_side`, made without copying it whole; palette, 1-bit and 16-bit
    images come out converted (Pillow cannot resize them well). `image` itself may be closed on the way.

    Pillow resizes RGBA through a premultiplied full-size copy, which for a 64 MP image doubles the memory, and a
    mode conversion would copy it again. So a large image is reduced by a whole factor (box average) one band of
    rows at a time, each band converted first; the full-size pixels are then released, and the last step to
    `max_side` is a LANCZOS resize from at most twice the target.
    """
    convert = image.mode in _CONVERT_FIRST
    factor = int(max(image.size) / (max_side * reducing_gap))
    if factor >= 2:
        width, height = image.size
        rows = max(factor, _BAND_BYTES // (width * 4) // factor * factor)
        if rows >= height and not convert:  # one band: reduced at once, without a copy to cut it out first
            reduced = image.reduce(factor)
            image.close()
            image = reduced
        else:
            image = _reduce_in_bands(image, factor, rows, alpha, convert)
    elif convert:
        converted = _normalise_mode(image, alpha)
        image.close()
        image = converted
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
    return image


def _reduce_in_bands(image: Image.Image, factor: int, rows: int, alpha: bool, convert: bool) -> Image.Image:
    """`image` reduced by `factor` one band of `rows` rows at a time (each converted first when `convert`), then
    closed: the temporary copies stay near one band's size."""
    width, height = image.size
    reduced: Image.Image | None = None
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        small = (_normalise_mode(band, alpha) if convert else band).reduce(factor)
        if reduced is None:
            reduced = Image.new(small.mode, (-(-width // factor), -(-height // factor)))
        reduced.paste(small, (0, top // factor))
        del band, small
    image.close()
    assert reduced is not None
    return reduced


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def _normalise_mode(image: Image.Image, alpha: bool) -> Image.Image:
    """A plain RGB or RGBA image (so no metadata travels with it), whatever the source mode."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale: scale to 8 bits (a plain convert would clip everything above 255 to white).
        image = image.convert("I").point(lambda v: v / 257).convert("L")
    if image.mode == "CMYK":
        image = image.convert("RGB")
    clean = image.convert("RGBA" if alpha else "RGB")  # always a new image
    clean.info = {}
    return clean


def decoded_bytes(width: int, height: int, mode: str) -> int:
    """Memory one decoded image of this size and mode takes (4 bytes a pixel for the modes we convert)."""
    bands = len(mode) if mode in ("RGB", "RGBA", "L", "LA", "CMYK") else 4
    return width * height * bands


def _working_bytes(source: Image.Image, *, shrinking: bool) -> int:
    """What decoding `source` holds at its peak: its pixels (twice for WebP, which Pillow decodes into a buffer
    first), and when it is then shrunk, the reduced copy (at most a quarter of it, in 4 bytes a pixel) and one
    band's copies."""
    pixels = source.width * source.height
    full = decoded_bytes(source.width, source.height, source.mode) * (2 if source.format == "WEBP" else 1)
    return full + (pixels + 2 * _BAND_BYTES if shrinking else 0)


class MemoryBudget:
    """Admits image work by the memory its decoded pixels take, so that however many calls (and worker threads)
    arrive, the pixels held at once stay under `limit` bytes. One image larger than the limit runs alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._ready = threading.Condition()

    @contextlib.contextmanager
    def hold(self, size: int) -> Iterator[None]:
        size = min(size, self.limit)
        with self._ready:
            self._ready.wait_for(lambda: self._used + size <= self.limit)
            self._used += size
        try:
            yield
        finally:
            with self._ready:
                self._used -= size
                self._ready.notify_all()


#: The budget for decoded pixels across the whole process (see the README's "Memory" note).
MEMORY_BUDGET_BYTES = 512 * 1024 * 1024
MEMORY = MemoryBudget(MEMORY_BUDGET_BYTES)

