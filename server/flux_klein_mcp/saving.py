"""Keeping one image a provider returned: checked by a full decode (which also makes the thumbnail the model sees)
while its bytes and sidecar are written and synced to disk beside it, then named; removed if the check fails.

The decode is most of a call's own time and the disk sync the most variable part of it (other programs' writes
queue ahead of ours); the two run at once, in two threads, so a call waits for the longer one, not for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import pricing
from .errors import BadReply
from .images import ImageInfo, NotAnImage, identify, inspect
from .metadata import strip_metadata
from .providers.base import Reply
from .request import ImageRequest
from .runtime import Runtime
from .store import SavedFile, Staged, Store

#: The provider whose request and prices the sandbox simulates.
SIMULATED = "openrouter"
#: Pillow's name for each output format.
FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass
class Pending:
    """An image whose bytes and sidecar the disk threads are writing, waiting for its decode (`finish`)."""

    data: bytes
    info: ImageInfo
    stem: str
    staging: Future[Staged]
    #: The folder it goes to: the signed-in person's, chosen in the request's context (threads do not carry it).
    store: Store

    def abandon(self) -> None:
        """Remove what the disk thread wrote for an image that is not kept (once it is done writing it)."""
        with contextlib.suppress(Exception):  # a write that failed left nothing to remove
            self.staging.result().discard()


def begin(data: bytes, sidecar: Callable[[ImageInfo], Mapping[str, Any]], stem: str, runtime: Runtime,
          label: str) -> Pending:
    """Start keeping `data` as `<stem>.<ext>`: its header checked, then it and the sidecar `sidecar(info)` describes
    handed to a disk thread to be written and synced. A `BadReply` (nothing written) when it is no image we take."""
    try:
        info = identify(data)  # (the header only: enough to name the file and fill the sidecar)
    except NotAnImage as exc:
        raise unusable(label, exc) from None
    store = runtime.store
    return Pending(data, info, stem, runtime.disk.submit(_stage, store, runtime, data, info.format, sidecar(info)),
                   store)


def finish(pending: Pending, runtime: Runtime, label: str) -> tuple[SavedFile, ImageInfo, bytes | None]:
    """Decode the whole image (making its thumbnail); once it proves whole and its files are on disk, name them.
    Returns the files, what the image is, and its thumbnail; a `BadReply` (nothing kept) when it does not decode."""
    try:
        _, thumbnail = inspect(pending.data, runtime.settings.thumbnail_px)
    except BaseException as exc:
        pending.abandon()
        if isinstance(exc, NotAnImage):
            raise unusable(label, exc) from None
        raise
    return pending.store.commit(pending.staging.result(), pending.info.extension, pending.stem), pending.info, thumbnail


def sidecar_fields(request: ImageRequest, reply: Reply, provider: str, info: ImageInfo, seed: int | None,
                   cost: float | None, cost_source: str | None, when: str) -> dict[str, Any]:
    """What an image's JSON sidecar records: the call that made it, what it is, what it cost."""
    sidecar: dict[str, Any] = {
        "operation": request.operation,
        "prompt": request.prompt,
        "prompt_sent": reply.prompt_sent,
        "model": reply.model,
        "provider": provider,
        "tier": request.tier,
        "seed": seed,
        "aspect_ratio": request.aspect_ratio,
        "width": info.width,
        "height": info.height,
        "format": info.extension,
        "output_format": request.output_format,
        "inputs": [image.describe() for image in request.inputs],
        "cost_usd": cost,
        "cost_source": cost_source,
        "generation_id": reply.generation_id,
        "timestamp": when,
    }
    if reply.simulated:
        sidecar["would_send"] = reply.would_send
        sidecar["would_cost_usd"] = pricing.list_price(SIMULATED, reply.model, info.width, info.height)
    return sidecar


def unusable(label: str, exc: NotAnImage) -> BadReply:
    return BadReply(f"{label} returned data that is not a usable image ({exc}). Nothing was saved; try again.",
                    provider=label)


def _stage(store: Store, runtime: Runtime, data: bytes, fmt: str, sidecar: Mapping[str, Any]) -> Staged:
    # No provider text, EXIF or trailing bytes in the saved file; the sidecar is an exit: every string in it (the
    # provider's model name and id above all) is scrubbed of secrets.
    return store.stage(strip_metadata(data, fmt), runtime.settings.redact.value(sidecar))
