"""The offline sandbox: no network, no key, no spend.

It draws a deterministic placeholder at the size OpenRouter would return, marked SANDBOX with the prompt on
it, and records the exact OpenRouter payload the real call would send (`would_send`) and its price.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import textwrap
from typing import Any

import anyio.to_thread
import httpx
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..config import Settings
from ..request import ImageRequest
from ..rules import DEFAULT_SIZE, MODEL_RULES, OPENROUTER_SIZES, Tier
from ..words import arg
from .base import Call, Capabilities, KeyCheck, Link, Reply
from .openrouter import payload_for, plan_one_per_image, sent_text


class Sandbox:
    name = "sandbox"
    label = "sandbox"
    key_variable = None
    billing_url = ""
    base_url_variable = None
    base_url = ""
    #: Placeholders in any format (the pipeline notes that OpenRouter, simulated here, offers PNG only).
    capabilities = Capabilities(batch=1, tiers=("low", "high"), formats=("png", "jpeg", "webp"))

    def __init__(self, settings: Settings) -> None:
        del settings  # nothing to configure

    def missing(self) -> list[str]:
        return []

    def model_for(self, tier: Tier) -> str:
        return MODEL_RULES[tier].model

    def plan(self, request: ImageRequest) -> list[Call]:
        return plan_one_per_image(request)

    async def send(self, call: Call, link: Link) -> Reply:
        payload = payload_for(call)
        png = await anyio.to_thread.run_sync(render_placeholder, call, payload)
        notes = []
        if call.request.output_format != "png":
            notes.append(f"Sandbox: the placeholders are {call.request.output_format.upper()} as asked, but "
                         f"OpenRouter, whose request would_send shows, returns PNG only: a real call with "
                         f"{arg('output_format')} {call.request.output_format!r} needs "
                         f"{arg('provider', 'empiriolabs')} or {arg('provider', 'openai-compatible')}.")
        return Reply(
            images=[png],
            model=payload["model"],
            prompt_sent=sent_text(payload),
            would_send=abbreviate_data_urls(payload),
            simulated=True,
            notes=notes,
        )

    async def check_key(self, http: httpx.AsyncClient) -> KeyCheck:
        return KeyCheck("ok", "offline placeholders, no key needed")


def abbreviate_data_urls(value: Any) -> Any:
    """The payload with each data URL shortened to its MIME type and size, so a sidecar stays small."""
    if isinstance(value, dict):
        return {k: abbreviate_data_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [abbreviate_data_urls(v) for v in value]
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value:
        head, data = value.split(",", 1)
        return f"{head},<{len(data) * 3 // 4} bytes>"
    return value


def render_placeholder(call: Call, payload: dict[str, Any]) -> bytes:
    """A PNG that depends only on the seed (or the prompt when there is none), the size and the inputs."""
    req = call.request
    width, height = OPENROUTER_SIZES[req.aspect_ratio] if req.aspect_ratio else DEFAULT_SIZE
    seed = call.seed if call.seed is not None else int.from_bytes(hashlib.sha256(call.prompt.encode()).digest()[:4])
    rng = random.Random(seed)
    dark = tuple(rng.randrange(20, 110) for _ in range(3))
    light = tuple(rng.randrange(140, 240) for _ in range(3))
    ramp = Image.linear_gradient("L").rotate(rng.choice((0, 45, 90, 135)), expand=False).resize((width, height))
    image = ImageOps.colorize(ramp, dark, light).convert("RGB")  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    _paste_inputs(image, req, unit)
    big = ImageFont.load_default(size=unit // 7)
    small = ImageFont.load_default(size=max(14, unit // 32))
    draw.text((width // 2, height // 3), "SANDBOX", font=big, anchor="mm", fill="white", stroke_width=unit // 150,
              stroke_fill="black")
    lines = textwrap.wrap(sent_text(payload), width=max(20, width // (unit // 48)))[:8]
    lines.append(f"{payload['model']}  seed {call.seed if call.seed is not None else '-'}  {width}x{height}")
    draw.multiline_text((width // 2, height * 2 // 3), "\n".join(lines), font=small, anchor="ma", align="center",
                        fill="white", stroke_width=2, stroke_fill="black")
    out = io.BytesIO()
    image.save(out, {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[req.output_format])
    return out.getvalue()


def _paste_inputs(image: Image.Image, req: ImageRequest, unit: int) -> None:
    """Show the input images in a strip along the bottom, so an edit or composition looks like one."""
    tile = unit // 5
    for i, item in enumerate(req.inputs):
        if not item.url.startswith("data:"):
            continue
        data = base64.b64decode(item.url.split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as src:
            thumb = src.convert("RGB")
            thumb.thumbnail((tile, tile))
        image.paste(thumb, (tile // 4 + i * (tile + tile // 4), image.height - tile - tile // 4))
