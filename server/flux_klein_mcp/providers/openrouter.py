"""OpenRouter chat completions with image output: the skill's own route (PROVIDERS.md §1)."""

from __future__ import annotations

import math
from typing import Any

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
    UpstreamFailed,
)
from ..request import ImageRequest, InputImage
from ..rules import (
    MODEL_RULES,
    OPENROUTER_CREDITS_URL,
    AspectRatio,
    ModelRule,
    Tier,
    check_flux_payload,
    model_options,
    prompt_text,
    seeds_for,
)
from ..words import RESTART, either, out_of_credits, usd
from . import http as wire
from .base import Call, Capabilities, KeyCheck, Link, Reply, auth_header

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
KEY_VARIABLE = "OPENROUTER_API_KEY"
BILLING_URL = OPENROUTER_CREDITS_URL
KEYS_URL = "https://openrouter.ai/settings/keys"


def build_payload(
    rule: ModelRule, prompt: str, aspect_ratio: AspectRatio | None, inputs: tuple[InputImage, ...], seed: int | None
) -> dict[str, Any]:
    """The exact JSON body for one image: text first, then one `image_url` part per input image."""
    text = prompt_text(prompt, aspect_ratio, rule)
    content: str | list[dict[str, Any]] = text
    if inputs:
        content = [{"type": "text", "text": text}]
        content += [{"type": "image_url", "image_url": {"url": image.url}} for image in inputs]
    payload: dict[str, Any] = {"model": rule.model, "messages": [{"role": "user", "content": content}]}
    payload.update(model_options(rule, aspect_ratio))
    if seed is not None:
        payload["seed"] = seed
    if rule.family == "flux":
        check_flux_payload(payload)
    return payload


def payload_for(call: Call) -> dict[str, Any]:
    req = call.request
    return build_payload(MODEL_RULES[req.tier], call.prompt, req.aspect_ratio, req.inputs, call.seed)


def plan_one_per_image(request: ImageRequest) -> list[Call]:
    """n images as n calls, seeds seed, seed+1, ... (OpenRouter returns one image per request)."""
    return [Call(request, i, 1, seed, request.prompt) for i, seed in enumerate(seeds_for(request.seed, request.n))]


class OpenRouter:
    name = "openrouter"
    label = "OpenRouter"
    key_variable = KEY_VARIABLE
    base_url_variable = "OPENROUTER_BASE_URL"
    billing_url = BILLING_URL
    capabilities = Capabilities(batch=1, tiers=("low", "high"))

    def __init__(self, settings: Settings) -> None:
        self._key = settings.get(KEY_VARIABLE)
        self.base_url = (settings.get(self.base_url_variable) or DEFAULT_BASE_URL).rstrip("/")
        self._timeout_s = settings.timeout_s

    def missing(self) -> list[str]:
        return [] if self._key else [KEY_VARIABLE]

    def model_for(self, tier: Tier) -> str:
        return MODEL_RULES[tier].model

    def plan(self, request: ImageRequest) -> list[Call]:
        return plan_one_per_image(request)

    async def send(self, call: Call, link: Link) -> Reply:
        payload = payload_for(call)
        reply = await wire.send(
            link.http,
            "POST",
            f"{self.base_url}/chat/completions",
            provider=self.label,
            timeout_s=self._timeout_s,
            headers={**auth_header(self._key), "X-Title": "flux-klein-mcp"},
            json_body=payload,
            gate=link.gate,
        )
        if reply.status != 200:
            raise error_for(reply)
        # Parsing megabytes of JSON and base64 would block every other call: done in a worker thread, where the
        # pipeline then keeps the image (`Link.keep`), in the same job.
        parsed: Reply = await link.work(_parsed_and_kept, reply, payload, link)
        return parsed

    async def check_key(self, http: httpx.AsyncClient) -> KeyCheck:
        if not self._key:
            return KeyCheck("missing", f"set {KEY_VARIABLE}")
        try:
            reply = await wire.send(
                http, "GET", f"{self.base_url}/key", provider=self.label, timeout_s=min(self._timeout_s, 15),
                headers=dict(auth_header(self._key)),
            )
        except ProviderError as exc:
            return KeyCheck("unreachable", exc.raw)
        if reply.status != 200:
            detail = f"HTTP {reply.status}: {wire.error_info(reply).message}"
            return KeyCheck("invalid" if reply.status in (401, 403) else "unreachable", detail)
        try:
            data = _dict(_dict(reply.json(self.label)).get("data"))
        except ProviderError as exc:
            return KeyCheck("unreachable", exc.raw)
        credit = {name: _amount(data.get(name)) for name in ("limit", "usage", "limit_remaining")}
        remaining, limit = credit["limit_remaining"], credit["limit"]
        if remaining is not None:
            left = f"{usd(remaining)} left on the key's limit"
        else:
            left = "no spending limit" if limit is None else f"a limit of {usd(limit)}, what is left not reported"
        return KeyCheck("ok", f"key valid, {left}", credit=credit)


def _amount(value: Any) -> float | None:
    """A USD figure from OpenRouter's key info: a finite number, else None (null means no limit)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _parsed_and_kept(reply: wire.HttpReply, payload: dict[str, Any], link: Link) -> Reply:
    parsed = parse_reply(reply, payload)
    if link.keep is not None:
        link.keep(parsed)
    return parsed


def parse_reply(reply: wire.HttpReply, payload: dict[str, Any]) -> Reply:
    """The first image of a 200 reply; a 200 that carries an error or no image is a `BadReply` (carrying the cost
    the reply reports, if any: a failure the provider billed still counts against the budgets)."""
    label = OpenRouter.label
    body = reply.json(label)
    cost, cost_note = pricing.reported(_dict(_dict(body).get("usage")).get("cost"), label)
    try:
        url = _image_url(body, reply)
        image = wire.decode_base64_image(url, label)
    except BadReply as exc:
        exc.charged = (cost, 1, "provider") if cost else None
        raise
    return Reply(
        images=[image],
        model=str(body.get("model") or payload["model"]),
        prompt_sent=sent_text(payload),
        reported_cost_usd=cost,
        generation_id=reply.headers.get("x-generation-id") or body.get("id"),
        notes=[cost_note] if cost_note else [],
    )


def _image_url(body: Any, reply: wire.HttpReply) -> str:
    label = OpenRouter.label
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadReply(f"{label} answered without any choices. Nothing was saved; try again.", provider=label)
    choice: dict[str, Any] = choices[0]
    if choice.get("finish_reason") == "error" or choice.get("error"):
        error = _dict(choice.get("error"))
        raise BadReply(
            f"{label} reported an error while generating ({reply.quote(error.get('code', 'no code'), 40)}: "
            f"{reply.quote(error.get('message', 'no details'))}). Nothing was saved. Try again, or simplify the "
            "prompt.",
            provider=label,
            status=200,
        )
    message = _dict(choice.get("message"))
    url = _first_image_url(message.get("images") or [])
    if url is None:
        said = reply.quote(message.get("content") or "", 200)
        raise BadReply(
            f"{label}'s model answered without an image"
            + (f" (it said: {said!r})" if said else "")
            + ". Nothing was saved. Rephrase the prompt as a description of a picture and try again.",
            provider=label,
            status=200,
        )
    return url


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first_image_url(images: Any) -> str | None:
    for image in images if isinstance(images, list) else []:
        part = image.get("image_url") if isinstance(image, dict) else None
        url = part.get("url") if isinstance(part, dict) else part  # tolerate a bare string as well
        if isinstance(url, str) and url:
            return url
    return None


def sent_text(payload: dict[str, Any]) -> str:
    """The prompt text inside a chat payload (the whole content, or its text part)."""
    content = payload["messages"][0]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def error_for(reply: wire.HttpReply) -> ProviderError:
    """OpenRouter's status table (PROVIDERS.md §1) as error classes; what each one does is in `policy.py`."""
    info = wire.error_info(reply)
    label, status, detail = OpenRouter.label, reply.status, info.message
    if status == 402:
        return CreditsExhausted(
            f"{label} says the account is out of credits (402: {detail}). " + out_of_credits(BILLING_URL),
            provider=label, status=status,
        )
    if status == 401:
        return AuthFailed(
            f"{label} rejected the API key (401: {detail}). Set {KEY_VARIABLE} to a valid key from {KEYS_URL}"
            f"{RESTART}. Not retried.",
            provider=label, status=status,
        )
    if status == 403:
        return ContentRefused(_moderation_message(label, info, reply), provider=label, status=status)
    if status == 429:
        return RateLimited(
            f"{label} is rate limiting requests (429: {detail}).",
            provider=label, retry_after=wire.retry_after_seconds(reply, info),
        )
    if status == 502:
        return UpstreamFailed(
            f"{label}'s model provider failed (502: {detail}).", provider=label, status=status
        )
    if status == 503:
        return ServerFailed(
            f"{label} has no provider available for this model right now (503: {detail}). Try again in a few minutes.",
            provider=label, status=status,
        )
    if status >= 500:
        return ServerFailed(f"{label} failed with HTTP {status} ({detail}). Try again later.", provider=label,
                            status=status)
    if status == 408:
        return RequestRejected(f"{label} timed out handling the request (408: {detail}). Try again.",
                               provider=label, status=status)
    return RequestRejected(
        f"{label} rejected the request (HTTP {status}: {detail}). Check the {either('arguments', 'options')}; "
        "not retried.",
        provider=label, status=status,
    )


def _moderation_message(label: str, info: wire.ErrorInfo, reply: wire.HttpReply) -> str:
    meta = info.metadata or {}
    reasons = meta.get("reasons")
    text = f"{label}'s moderation refused the request (403: {info.message})"
    if isinstance(reasons, list) and reasons:
        text += f". Reasons: {reply.quote(', '.join(str(r) for r in reasons), 200)}"
    flagged = meta.get("flagged_input")
    if isinstance(flagged, str) and flagged:
        text += f". Flagged input: {reply.quote(flagged, 120)!r}"
    return text + ". Rephrase the request without the flagged content; the same prompt will be refused again."
