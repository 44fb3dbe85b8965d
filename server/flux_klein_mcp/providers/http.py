"""The one way providers talk HTTP: a total time limit, a size cap, and network faults turned into clear errors."""

from __future__ import annotations

import binascii
import email.utils
import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from ..config import quoted
from ..errors import BadReply, ConfigError, ConnectionFailed
from ..images import b64decode, split_data_url
from ..words import RESTART, rendered, well_formed

# A 4 MP PNG in base64 inside JSON stays far below this; anything bigger is not a reply we want in memory.
MAX_REPLY_BYTES = 64 * 1024 * 1024
#: How much of a provider's own words we repeat in a message.
QUOTE_CHARS = 300
#: How much of a provider's string in error metadata is kept (a reason list, a flagged input).
QUOTE_SOURCE_CHARS = 4000


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: httpx.Headers
    body: bytes

    def quote(self, text: object, limit: int = QUOTE_CHARS) -> str:
        """The provider's words, fit to repeat in a message: whitespace folded, clipped. (Secrets are scrubbed at
        the exits: whatever part of a key survives the clip is removed there.)"""
        return clip(str(text)[: limit * 20], limit)

    def json(self, provider: str) -> Any:
        try:
            return parse_json(self.body)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, too deep, or an integer of 5000 digits
            looks_html = self.body.lstrip()[:1] == b"<"
            what = "an HTML page" if looks_html else "something that is not JSON"
            raise BadReply(
                f"{provider} answered HTTP {self.status} with {what} instead of JSON "
                "(often a proxy or an outage page). Nothing was saved; try again later.",
                provider=provider,
                status=self.status,
            ) from None


def parse_json(body: bytes) -> Any:
    """A provider's JSON with every string in it well formed: JSON allows a lone surrogate (`"\\ud800"`), which
    would fail the sidecar's writer after the image was paid for, and every transport's."""
    return rendered(json.loads(body), well_formed)


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    max_bytes: int = MAX_REPLY_BYTES,
    gate: Any = None,
) -> HttpReply:
    """One request, bounded by `timeout_s` in total (a provider that trickles bytes is cut off too)."""
    host = httpx.URL(url).host
    try:
        with anyio.fail_after(timeout_s):
            async with http.stream(method, url, headers=headers, json=json_body, timeout=timeout_s) as response:
                if gate is not None:  # a large body waits in the socket until memory is admitted for it
                    length = response.headers.get("content-length", "")
                    await gate.enter(int(length) if length.isdigit() else None)
                chunks: list[bytes] = []  # joined once: growing one buffer would copy a large body several times
                size = 0
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > max_bytes:
                        raise BadReply(
                            f"{provider}'s answer is larger than {max_bytes // 1048576} MB; it was not read further. "
                            "Nothing was saved.",
                            provider=provider,
                            status=response.status_code,
                        )
                return HttpReply(response.status_code, response.headers, b"".join(chunks))
    except (TimeoutError, httpx.TimeoutException):
        raise ConnectionFailed(
            f"{provider} did not answer within {timeout_s:g} s (FLUX_KLEIN_TIMEOUT_S). Nothing was saved. "
            "Try again later, or raise FLUX_KLEIN_TIMEOUT_S.",
            provider=provider,
        ) from None
    except httpx.ConnectError:
        raise ConnectionFailed(
            f"Could not connect to {provider} at {host} (connection refused or no route). "
            "Check the network and the provider's base-URL variable.",
            provider=provider,
        ) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise ConnectionFailed(
            f"The connection to {provider} broke before its answer was complete ({type(exc).__name__}). "
            "Nothing was saved; try again.",
            provider=provider,
        ) from None
    except httpx.HTTPError as exc:
        raise ConnectionFailed(
            f"Talking to {provider} failed ({type(exc).__name__}). Nothing was saved; try again.", provider=provider
        ) from None
    except ValueError as exc:  # the URL cannot be requested at all (an IDNA error, a bad character)
        raise BadReply(
            f"A request to {provider} could not be made: the URL is not valid ({type(exc).__name__}). Nothing was "
            "saved.", provider=provider,
        ) from None


def check_base_url(url: str, variable: str) -> None:
    """Refuse, before any request, a base URL that cannot work or would send the key in the clear."""
    problem = None
    try:
        parsed = urlsplit(url)
        parsed.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
        httpx.Request("GET", url)  # the host must encode (IDNA) and every character be one a URL can hold
    except (httpx.InvalidURL, ValueError) as exc:  # (an IDNA error is a ValueError)
        problem = str(exc)
    else:
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            problem = "it must start with https:// and name a host"
        elif any(c.isspace() for c in url):
            problem = "it contains spaces"
        elif parsed.query or parsed.fragment or url.rstrip().endswith(("?", "#")):
            problem = "it must not carry a ?query or #fragment (paths are added to it)"
        elif parsed.scheme == "http" and not _loopback(parsed.hostname):
            problem = "plain http:// would send the API key unencrypted; use https:// (http:// is for localhost only)"
    if problem:
        raise ConfigError(f"{variable}={quoted(url, 200)} is not a usable base URL: {problem}. Fix it (e.g. "
                          f"https://api.example.com/v1) or unset it to use the default{RESTART}.")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ErrorInfo:
    """The fields of an error body, in either the OpenRouter or the OpenAI shape."""

    message: str
    code: str | int | None = None
    type: str | None = None
    metadata: dict[str, Any] | None = None


def error_info(reply: HttpReply) -> ErrorInfo:
    """The error's message (clipped), code, type and metadata (its strings clipped)."""
    try:
        body = parse_json(reply.body)
    except (ValueError, RecursionError):
        text = reply.body[:2000].decode("utf-8", "replace").strip()
        return ErrorInfo(message=reply.quote(text) or reply.headers.get("content-type", "no details"))
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return ErrorInfo(message=reply.quote(error))
    if not isinstance(error, dict):
        message = body.get("message") or body.get("detail") if isinstance(body, dict) else None
        return ErrorInfo(message=reply.quote(message or "no details"))
    metadata = error.get("metadata")
    code = error.get("code")
    kind = error.get("type") or error.get("error_type")
    return ErrorInfo(
        message=reply.quote(error.get("message") or "no details"),
        code=code if isinstance(code, int) and not isinstance(code, bool) else reply.quote(code, 60) if code else None,
        type=reply.quote(kind, 60) if kind else None,
        metadata=_clipped(metadata) if isinstance(metadata, dict) else None,
    )


def _clipped(value: Any) -> Any:
    if isinstance(value, str):
        return value[:QUOTE_SOURCE_CHARS]
    if isinstance(value, dict):
        return {str(k)[:QUOTE_SOURCE_CHARS]: _clipped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clipped(v) for v in value]
    return value


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_seconds(reply: HttpReply, info: ErrorInfo | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date), else `metadata.retry_after_seconds`."""
    raw = reply.headers.get("retry-after", "").strip()
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError):
            pass  # neither seconds nor a date: fall back to the metadata, or the default wait
    if info and info.metadata:
        value = info.metadata.get("retry_after_seconds")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return max(0.0, float(value))
    return None


def decode_base64_image(text: str, provider: str) -> bytes:
    """Bytes from a base64 string or a base64 `data:` URL; malformed base64 is a `BadReply`."""
    parsed = split_data_url(text)
    payload = parsed[1] if parsed else text
    if text.startswith("data:") and not parsed:
        raise BadReply(f"{provider} returned a data URL that is not base64. Nothing was saved.", provider=provider)
    try:
        data = b64decode(payload)
    except (binascii.Error, ValueError):
        raise BadReply(
            f"{provider} returned image data that is not valid base64. Nothing was saved; try again.",
            provider=provider,
        ) from None
    if not data:
        raise BadReply(f"{provider} returned an empty image. Nothing was saved; try again.", provider=provider)
    return data
