"""How an outcome is shown to the model: a JSON text block, small JPEG thumbnails, then `resource_link`s.

Never full-size base64, never `structuredContent` (Claude Code would drop the images), and the whole result
under the 1 MiB Claude Desktop accepts, shrinking the thumbnails when several images would not fit.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent

from .images import thumbnail_jpeg
from .pipeline import Outcome
from .words import mcp_json as as_json
from .words import well_formed

#: Claude Desktop rejects results over 1,048,576 characters; keep a margin for the JSON-RPC envelope.
RESULT_BUDGET = 1_000_000
#: Sizes (fraction of the configured long side) and JPEG qualities tried in turn until the thumbnails fit; the first
#: is what `images.inspect` makes as each image is saved.
SHRINK_STEPS: tuple[tuple[float, int], ...] = ((1.0, 80), (0.75, 72), (0.5, 65), (0.35, 55), (0.25, 45))
MIN_THUMBNAIL_PX = 96


def thumbnails(images: Sequence[bytes | None], max_px: int, budget: int) -> list[str] | None:
    """Base64 JPEG thumbnails that fit `budget` characters together, or None when even the smallest do not.

    The thumbnails made as each image was saved are used as they are; only when they do not fit are smaller
    ones made, from them (never from the full images again).
    """
    made = [thumb for thumb in images if thumb is not None]
    if max_px <= 0 or not made:
        return []
    encoded = [base64.b64encode(thumb).decode("ascii") for thumb in made]
    for scale, quality in SHRINK_STEPS[1:]:
        if sum(len(e) for e in encoded) <= budget:
            return encoded
        px = min(max_px, max(MIN_THUMBNAIL_PX, int(max_px * scale)))
        encoded = [base64.b64encode(thumbnail_jpeg(thumb, px, quality)).decode("ascii") for thumb in made]
        if px <= MIN_THUMBNAIL_PX:
            break
    return encoded if sum(len(e) for e in encoded) <= budget else None


def quick(outcome: Outcome) -> bool:
    """Whether `tool_result` has nothing to shrink for this outcome (the thumbnails made as the images were saved
    fit the budget with room to spare): then building it is a few base64 encodings and objects, too little to be
    worth a hop to a worker thread and back."""
    return sum(len(image.thumbnail or b"") for image in outcome.images) * 4 // 3 <= RESULT_BUDGET // 2


def tool_result(outcome: Outcome, thumbnail_px: int, with_links: bool = True) -> CallToolResult:
    """The content blocks: JSON summary first, then one thumbnail per image, then one link per image (unless
    `with_links` is False: the summary names every file by path and URI either way)."""
    summary = outcome.summary()
    links = [
        ResourceLink(
            uri=image.saved.uri,
            name=well_formed(image.saved.path.name),
            mime_type=image.info.mime_type,
            size=image.saved.bytes,
            # (well formed now, not only at the exit: its size is measured below; a folder's name may not be UTF-8)
            description=well_formed(f"Full-size {image.info.width}x{image.info.height} image at {image.saved.path}"),
        )
        for image in outcome.images if with_links
    ]
    fixed = len(as_json(summary)) + sum(len(link.model_dump_json()) for link in links) + 2000
    thumbs = thumbnails([image.thumbnail for image in outcome.images], thumbnail_px, RESULT_BUDGET - fixed)
    if thumbs is None:
        thumbs = []
        summary.setdefault("notes", []).append("Thumbnails were left out to keep the result under 1 MiB.")
    blocks: list[TextContent | ImageContent | ResourceLink] = [TextContent(text=as_json(summary))]
    blocks += [ImageContent(data=thumb, mime_type="image/jpeg") for thumb in thumbs]
    blocks += links
    return CallToolResult(content=list(blocks))

