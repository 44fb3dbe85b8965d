"""What a provider's image may carry besides pixels, removed before the file is saved.

Generation back ends often write their parameters into the file (PNG text chunks, EXIF, XMP, JPEG comments), and
a provider could put anything there, a key included; bytes after the image's end are junk. The pixels are kept
exactly as they came (no re-encoding, so nothing is lost and it costs a copy): PNG chunks, JPEG segments and WebP
chunks are walked, and only those that describe the picture are kept. A file that does not parse as expected is
left as it is (it already decoded as an image; being unsure is no reason to break it).
"""

from __future__ import annotations

import struct

# PNG: every critical chunk (upper-case first letter) is kept; of the ancillary ones, only these.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = frozenset({b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"cICP",
                       b"acTL", b"fcTL", b"fdAT"})
# JPEG: APP0 (JFIF), APP2 (ICC profile), APP14 (Adobe colour transform) are kept; other APPn and comments go.
_JPEG_DROP = frozenset({0xE1, *range(0xE3, 0xEE), 0xEF, 0xFE})
_WEBP_KEEP = frozenset({b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """`data` (already known to decode as `fmt`) without text, EXIF, XMP or comments, and nothing after its end."""
    try:
        if fmt == "PNG":
            return _png(data)
        if fmt == "JPEG":
            return _jpeg(data)
        if fmt == "WEBP":
            return _webp(data)
    except (struct.error, ValueError, IndexError):
        pass
    return data


def _png(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated chunk")
        if kind[0:1].isupper() or kind in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)
    raise ValueError("no IEND")


def _jpeg(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    out = [data[:2]]
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("lost the segment chain")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        if marker == 0xDA:  # start of scan: the rest is image data, up to the last end-of-image marker
            last = data.rfind(b"\xff\xd9")
            if last < pos:
                raise ValueError("no EOI")
            out.append(data[pos:last + 2])
            return b"".join(out)
        if marker not in _JPEG_DROP:
            out.append(data[pos:end])
        pos = end
    raise ValueError("no scan")


def _webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (size,) = struct.unpack("<I", data[4:8])
    body = data[12:8 + size]
    chunks = []
    pos = 0
    while pos + 8 <= len(body):
        kind = body[pos:pos + 4]
        (length,) = struct.unpack("<I", body[pos + 4:pos + 8])
        end = pos + 8 + length + (length & 1)
        if pos + 8 + length > len(body):
            raise ValueError("truncated chunk")
        chunk = body[pos:end]
        if kind == b"VP8X":  # clear the "has EXIF" and "has XMP" flags of the chunks dropped below
            chunk = chunk[:8] + bytes([chunk[8] & ~0x0C]) + chunk[9:]
        if kind in _WEBP_KEEP:
            chunks.append(chunk)
        pos = end
    if not any(chunk[:4] in (b"VP8 ", b"VP8L") or chunk[:4] == b"ANMF" for chunk in chunks):
        raise ValueError("no image chunk")
    payload = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
