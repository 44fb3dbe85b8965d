"""A strict stand-in for OpenRouter's chat completions with image output (PROVIDERS.md §1).

It refuses what the real service refuses (a bad key, an unknown model, `modalities` for FLUX with the real 404
text) and also what the skill forbids even where the real service would take it (`max_tokens`, `image_config`
for FLUX, unknown keys), so a test that passes here proves the payload is right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from collections.abc import Callable
from typing import Any

from PIL import Image

from .core import Answer, FakeBase, Fault, Incoming, png

FLUX = "black-forest-labs/flux.2-klein-4b"
SEEDREAM = "bytedance-seed/seedream-4.5"
SIZES = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
    "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672),
}
TEST_KEY = "sk-or-v1-" + "0123456789abcdef" * 4
_SUFFIX = re.compile(r", aspect ratio (\d+:\d+)$")
_ALLOWED_KEYS = {"model", "messages", "seed", "modalities", "image_config"}


def error(status: int, message: str, **extra: Any) -> Answer:
    headers = extra.pop("headers", None)
    return Answer.json(status, {"error": {"code": status, "message": message, **extra}}, headers)


class FakeOpenRouter(FakeBase):
    def __init__(self, key: str = TEST_KEY, cost: float | None = 0.014) -> None:
        super().__init__()
        self.key = key
        self.cost = cost
        self._generation = 0
        #: What GET /key reports (PROVIDERS.md §1): a null limit is an unlimited key.
        self.key_info: dict[str, Any] = {"label": "sk-or-v1-012...def", "limit": None, "limit_remaining": None,
                                         "usage": 1.25, "is_free_tier": False}

    def scripted_paths(self) -> tuple[str, ...]:
        return ("/chat/completions",)

    @property
    def completions(self) -> list[Incoming]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def respond(self, incoming: Incoming) -> Answer | Fault:
        if incoming.headers.get("authorization") != f"Bearer {self.key}":
            return error(401, "No auth credentials found" if "authorization" not in incoming.headers
                         else "User not found.")
        if incoming.method == "GET" and incoming.path == "/api/v1/key":
            return Answer.json(200, {"data": self.key_info})
        if incoming.method != "POST" or incoming.path != "/api/v1/chat/completions":
            return error(404, f"Not found: {incoming.method} {incoming.path}")
        try:
            payload = incoming.json
        except ValueError:
            return error(400, "Invalid JSON body")
        problem = check_payload(payload)
        if problem is not None:
            return problem
        return self.success(payload)

    def success(self, payload: dict[str, Any], content: str | None = "") -> Answer:
        width, height = size_for(payload)
        seed = payload.get("seed")
        digest = hashlib.sha256(f"{payload['model']}|{prompt_of(payload)}|{seed}".encode()).digest()
        image = png(width, height, (digest[0], digest[1], digest[2]))
        self._generation += 1
        body: dict[str, Any] = {
            "id": f"gen-{self._generation}",
            "object": "chat.completion",
            "created": 1763000000,
            "model": payload["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": content,
                "images": [{"type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}}],
            }}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4175, "total_tokens": 4187},
        }
        if self.cost is not None:
            body["usage"]["cost"] = self.cost
        return Answer.json(200, body, {"X-Generation-Id": f"gen-{self._generation}"})


def success_with(mutate: Callable[[dict[str, Any]], None]) -> Callable[[Incoming], Answer]:
    """A scripted answer: the fake's own success for the request, changed by `mutate(body)` (to break it)."""

    def behaviour(incoming: Incoming) -> Answer:
        answer = FakeOpenRouter().success(incoming.json)
        body = json.loads(answer.body)
        mutate(body)
        answer.body = json.dumps(body).encode()
        return answer

    return behaviour


def prompt_of(payload: dict[str, Any]) -> str:
    content = payload["messages"][0]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def size_for(payload: dict[str, Any]) -> tuple[int, int]:
    if payload["model"] == FLUX:
        match = _SUFFIX.search(prompt_of(payload))
        return SIZES[match.group(1)] if match else SIZES["1:1"]
    ratio = (payload.get("image_config") or {}).get("aspect_ratio", "1:1")
    return SIZES[ratio]


def check_payload(payload: Any) -> Answer | None:
    """None when the payload is one the real service would take and the skill allows; else the error answer."""
    if not isinstance(payload, dict):
        return error(400, "Body must be a JSON object")
    unknown = set(payload) - _ALLOWED_KEYS - {"max_tokens"}
    if unknown:
        return error(400, f"fake: unexpected keys {sorted(unknown)}")
    model = payload.get("model")
    if model not in (FLUX, SEEDREAM):
        return error(400, f"{model} is not a valid model ID")
    if model == FLUX:
        if "modalities" in payload:
            mods = ", ".join(payload["modalities"]) if isinstance(payload["modalities"], list) else "?"
            return error(404, f"No endpoints found that support the requested output modalities: {mods}")
        for key in ("image_config", "max_tokens"):
            if key in payload:
                return error(400, f"fake: {key} must never be sent to a FLUX model (skill rule)")
    else:
        if payload.get("modalities") != ["image"]:
            return error(400, "fake: Seedream needs modalities ['image']")
        ratio = (payload.get("image_config") or {}).get("aspect_ratio")
        if ratio is not None and ratio not in SIZES:
            return error(400, f"unsupported aspect_ratio {ratio}")
    if "seed" in payload and (not isinstance(payload["seed"], int) or isinstance(payload["seed"], bool)):
        return error(400, "seed must be an integer")
    return _check_messages(payload.get("messages"))


def _check_messages(messages: Any) -> Answer | None:
    if not isinstance(messages, list) or len(messages) != 1:
        return error(400, "fake: expected exactly one message")
    message = messages[0]
    if not isinstance(message, dict) or message.get("role") != "user" or set(message) != {"role", "content"}:
        return error(400, "fake: the message must be {role: user, content}")
    content = message["content"]
    if isinstance(content, str):
        return None if content.strip() else error(400, "empty prompt")
    if not isinstance(content, list) or len(content) < 2:
        return error(400, "fake: list content needs a text part and at least one image")
    first = content[0]
    if first.get("type") != "text" or not isinstance(first.get("text"), str) or not first["text"].strip():
        return error(400, "fake: the first part must be the text")
    for part in content[1:]:
        if part.get("type") != "image_url" or set(part) != {"type", "image_url"}:
            return error(400, "fake: parts after the text must be image_url parts")
        url = (part.get("image_url") or {}).get("url", "")
        problem = _check_image_url(url)
        if problem:
            return error(400, f"fake: {problem}")
    return None


def _check_image_url(url: str) -> str | None:
    if url.startswith("https://"):
        return None
    match = re.match(r"^data:(image/(png|jpeg|webp|gif));base64,(.+)$", url, re.S)
    if not match:
        return f"image url must be https:// or a base64 image data URL, got {url[:40]!r}"
    try:
        data = base64.b64decode(match.group(3), validate=True)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            actual = Image.MIME.get(image.format or "")
    except (binascii.Error, ValueError, OSError):
        return "the data URL does not hold a decodable image"
    if actual != match.group(1):
        return f"the data URL says {match.group(1)} but holds {actual}"
    return None
