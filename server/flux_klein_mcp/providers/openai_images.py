"""The OpenAI-style images API (`POST {base}/images/generations`) that the gateways share (PROVIDERS.md §2).

A gateway is a subclass that sets its names, model, fields and capabilities; EmpirioLabs adds its jobs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from .. import pricing
from ..config import Settings
from ..errors import (
    AuthFailed,
    BadReply,
    ContentRefused,
    CreditsExhausted,
    ProviderError,
    RateLimited,
    RequestRejected,
    ServerFailed,
)
from ..request import ImageRequest
from ..rules import (
    DEFAULT_SIZE,
    MODEL_RULES,
    OPENROUTER_SIZES,
    AspectRatio,
    Tier,
    check_flux_payload,
    prompt_text,
    seeds_for,
)
from ..words import RESTART, either, out_of_credits
from . import http as wire
from .base import Call, Capabilities, KeyCheck, Link, Reply, auth_header

MAX_REDIRECTS = 3
_MODERATION_MARKERS = ("content_policy", "moderation", "safety", "nsfw", "flagged", "content_filter")


def count_of(payload: dict[str, Any]) -> int:
    """How many images a payload asks for (`n`, or EmpirioLabs' `num_images`)."""
    count = payload.get("num_images") or payload.get("n") or 1
    return count if isinstance(count, int) and count > 0 else 1


def size_for(aspect_ratio: AspectRatio | None) -> tuple[int, int]:
    """The pixel size for an aspect ratio: OpenRouter's table, all within 1 MP and multiples of 16."""
    return OPENROUTER_SIZES[aspect_ratio] if aspect_ratio else DEFAULT_SIZE


class OpenAIImages:
    """One OpenAI-style images endpoint. Subclasses fill in the class attributes."""

    name: ClassVar[str]
    label: ClassVar[str]
    key_variable: ClassVar[str]
    base_url_variable: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    model_id: ClassVar[str] = ""
    #: Where a user adds credits; named in the 402 message.
    billing_url: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    #: Fields this endpoint documents, beyond model and prompt.
    sends_size: ClassVar[bool] = True
    sends_response_format: ClassVar[bool] = True
    sends_seed: ClassVar[bool] = False
    #: Sends OpenAI's `output_format` (png, jpeg, webp) when a call asks for other than PNG (never by default:
    #: an endpoint that does not know the field may refuse it).
    sends_output_format: ClassVar[bool] = False
    #: Response header carrying the charge in USD, when the provider sends one.
    cost_header: ClassVar[str | None] = None

    def __init__(self, settings: Settings) -> None:
        self._key = settings.get(self.key_variable)
        self.base_url = (settings.get(self.base_url_variable) or self.default_base_url).rstrip("/")
        self._timeout_s = settings.timeout_s
        self.model = self.model_id

    def missing(self) -> list[str]:
        return [] if self._key else [self.key_variable]

    def model_for(self, tier: Tier) -> str:
        return self.model

    def plan(self, request: ImageRequest) -> list[Call]:
        """One request for all n images where the endpoint batches; one request per image otherwise.

        With a seed (where the endpoint takes one), each image gets its own request and seed, seed+1, ..., so
        every image can be reproduced on its own.
        """
        seeds = seeds_for(request.seed, request.n) if self.sends_seed else [None] * request.n
        if request.n == 1 or self.capabilities.batch < request.n or seeds[0] is not None:
            return [Call(request, i, 1, seed, request.prompt) for i, seed in enumerate(seeds)]
        return [Call(request, 0, request.n, None, request.prompt)]

    def payload(self, call: Call) -> dict[str, Any]:
        req = call.request
        body: dict[str, Any] = {"model": self.model, "prompt": prompt_text(call.prompt, req.aspect_ratio,
                                                                          MODEL_RULES["low"])}
        if call.count > 1:
            body["n"] = call.count
        if self.sends_size:
            width, height = size_for(req.aspect_ratio)
            body["size"] = f"{width}x{height}"
        if self.sends_seed and call.seed is not None:
            body["seed"] = call.seed
        if self.sends_response_format:
            body["response_format"] = "b64_json"
        if self.sends_output_format and req.output_format != "png":
            body["output_format"] = req.output_format
        return body

    def headers(self) -> dict[str, str]:
        return dict(auth_header(self._key))

    async def send(self, call: Call, link: Link) -> Reply:
        payload = self.payload(call)
        check_flux_payload(payload)
        reply = await wire.send(link.http, "POST", f"{self.base_url}/images/generations", provider=self.label,
                                timeout_s=self._timeout_s, headers=self.headers(), json_body=payload,
                                gate=link.gate)
        if not 200 <= reply.status < 300:  # EmpirioLabs answers a job with 202
            raise self.error_for(reply)
        # Parsing megabytes of JSON and base64 would block every other call: done in a worker thread, in one job.
        body, decoded, whole = await link.work(self._parsed, reply, payload, link)
        return whole if whole is not None else await self.reply_from(body, payload, link, reply.headers, decoded)

    def _parsed(self, reply: wire.HttpReply, payload: dict[str, Any],
                link: Link) -> tuple[Any, dict[int, bytes], Reply | None]:
        """The reply's JSON, and the bytes of its base64 images (the first `n` asked for, by position), decoded here
        rather than in a worker job each. When every image came that way (no link to fetch, no job to wait for),
        also the finished `Reply`, handed to `link.keep` in this same job (the pipeline saves the images there)."""
        body = reply.json(self.label)
        items = body.get("data") if isinstance(body, dict) else None
        wanted = count_of(payload)
        decoded = {}
        for i, item in enumerate(items[:wanted] if isinstance(items, list) else []):
            if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                decoded[i] = wire.decode_base64_image(item["b64_json"], self.label)
        if not isinstance(items, list) or not items or len(decoded) < min(len(items), wanted):
            return body, decoded, None
        whole = self._reply(len(items), payload, reply.headers, [decoded[i] for i in sorted(decoded)])
        if link.keep is not None:
            link.keep(whole)
        return body, decoded, whole

    async def reply_from(
        self, body: Any, payload: dict[str, Any], link: Link, headers: httpx.Headers | None = None,
        decoded: dict[int, bytes] | None = None,
    ) -> Reply:
        """Images from an images response: base64 items decoded, URL items downloaded at once."""
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise BadReply(f"{self.label} answered without any images. Nothing was saved; try again.",
                           provider=self.label, status=200)
        # Never download (and hold) more than was asked for; they are booked, though (the provider made them).
        images = [decoded[i] if decoded and i in decoded else await self._image_of(item, link)
                  for i, item in enumerate(items[:count_of(payload)])]
        return self._reply(len(items), payload, headers, images)

    def _reply(self, returned: int, payload: dict[str, Any], headers: httpx.Headers | None,
               images: list[bytes]) -> Reply:
        wanted = count_of(payload)
        extra = max(0, returned - wanted)
        notes = [f"{self.label} returned {returned} images, more than the {wanted} asked for; the rest were not "
                 "downloaded (they are booked: the provider made them)."] if extra else []
        raw_cost = headers.get(self.cost_header) if headers is not None and self.cost_header else None
        cost, cost_note = pricing.reported(raw_cost, self.label)
        return Reply(images=images, model=self.model, prompt_sent=payload["prompt"], reported_cost_usd=cost,
                     generation_id=self._request_id(headers), notes=notes + ([cost_note] if cost_note else []),
                     undelivered=extra)

    async def _image_of(self, item: Any, link: Link) -> bytes:
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
            data: bytes = await link.work(wire.decode_base64_image, item["b64_json"], self.label)
            return data
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            return await self.download(item["url"], link)
        raise BadReply(f"{self.label} returned an image item with neither b64_json nor url. Nothing was saved.",
                       provider=self.label, status=200)

    async def download(self, url: str, link: Link) -> bytes:
        """Fetch a signed image URL now (they expire): https://, or the provider's own configured host.

        Redirects (signed URLs often hand over to a CDN) are followed a few times, each hop checked the same way;
        the key goes only to the provider's own host, never to a storage or CDN host.
        """
        if url.startswith("data:"):
            return wire.decode_base64_image(url, self.label)
        for _ in range(MAX_REDIRECTS + 1):
            target = httpx.URL(url)
            own_host = self._is_own_host(target)
            if target.scheme != "https" and not own_host:
                raise BadReply(f"{self.label} returned an image URL that is neither https:// nor on its own host "
                               f"({target.scheme}://{target.host}); it was not fetched. Nothing was saved.",
                               provider=self.label, status=200)
            reply = await wire.send(link.http, "GET", url, provider=self.label, timeout_s=self._timeout_s,
                                    headers=self.headers() if own_host else None,
                                    gate=link.gate)
            location = reply.headers.get("location")
            if reply.status in (301, 302, 303, 307, 308) and location:
                url = str(target.join(location))
                continue
            if reply.status != 200:
                raise BadReply(f"Downloading the image from {self.label} failed (HTTP {reply.status}; the link may "
                               "have expired). Nothing was saved; try again.", provider=self.label,
                               status=reply.status)
            return reply.body
        raise BadReply(f"The image link from {self.label} redirected more than {MAX_REDIRECTS} times; it was not "
                       "followed further. Nothing was saved.", provider=self.label, status=200)

    def _is_own_host(self, target: httpx.URL) -> bool:
        base = httpx.URL(self.base_url)
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

    @staticmethod
    def _request_id(headers: httpx.Headers | None) -> str | None:
        if headers is None:
            return None
        found = headers.get("x-request-id") or headers.get("x-flux-request-id")
        return str(found) if found else None

    def error_for(self, reply: wire.HttpReply) -> ProviderError:
        """The OpenAI error shape mapped onto the shared policy (PROVIDERS.md §2)."""
        info = wire.error_info(reply)
        status, label = reply.status, self.label
        code = str(info.code or "").lower()
        detail = info.message + (f" [{info.code}]" if info.code else "")
        markers = f"{code} {(info.type or '').lower()} {info.message.lower()}"
        if status == 402 or code == "insufficient_quota":
            return CreditsExhausted(
                f"{label} says the account is out of credits ({status}: {detail}). "
                + out_of_credits(self.billing_url), provider=label, status=status)
        if status == 401:
            return AuthFailed(f"{label} rejected the API key (401: {detail}). Set {self.key_variable} to a valid "
                              f"key{RESTART}. Not retried.", provider=label, status=status)
        if status in (400, 403) and any(m in markers for m in _MODERATION_MARKERS):
            return ContentRefused(f"{label}'s moderation refused the request ({status}: {detail}). Rephrase the "
                                  "request without the flagged content; the same prompt will be refused again.",
                                  provider=label, status=status)
        if status == 429:
            return RateLimited(f"{label} is rate limiting requests (429: {detail}).", provider=label,
                               retry_after=wire.retry_after_seconds(reply, info))
        if status >= 500:
            return ServerFailed(f"{label} failed upstream (HTTP {status}: {detail}).", provider=label,
                                status=status, retryable=status in (500, 503))
        if status == 404:
            return RequestRejected(f"{label} does not know the model or endpoint (404: {detail}). "
                                   f"{self._model_hint()}", provider=label, status=status)
        return RequestRejected(f"{label} rejected the request (HTTP {status}: {detail}). Check the "
                               f"{either('arguments', 'options')}; not retried.", provider=label, status=status)

    def _model_hint(self) -> str:
        return f"Check {self.base_url_variable}."

    async def check_key(self, http: httpx.AsyncClient) -> KeyCheck:
        if self.missing():
            return KeyCheck("missing", f"set {' and '.join(self.missing())}")
        try:
            reply = await wire.send(http, "GET", f"{self.base_url}/models", provider=self.label,
                                    timeout_s=min(self._timeout_s, 15), headers=self.headers())
        except ProviderError as exc:
            return KeyCheck("unreachable", exc.raw)
        if reply.status == 401:
            return KeyCheck("invalid", f"{self.key_variable} was rejected (401)")
        if reply.status != 200:
            return KeyCheck("invalid", f"GET /models answered HTTP {reply.status}: {wire.error_info(reply).message}")
        ids = _model_ids(reply)
        if ids is not None and self.model not in ids:
            return KeyCheck("invalid", f"key valid, but the model {self.model!r} is not listed by GET /models")
        return KeyCheck("ok", f"key valid, model {self.model}")


def _model_ids(reply: wire.HttpReply) -> set[str] | None:
    try:
        body = reply.json("")
    except BadReply:
        return None
    data = body.get("data") if isinstance(body, dict) else body
    if not isinstance(data, list):
        return None
    return {str(m.get("id")) for m in data if isinstance(m, dict)} or None
