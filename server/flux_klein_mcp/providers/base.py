"""What every provider is: a small Protocol, the call it receives and the reply it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import httpx

from ..request import ImageRequest
from ..rules import Tier
from .http import clip

#: `progress(fraction 0..1, message)` while a provider waits on a slow job.
Progress = Callable[[float, str], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Link:
    """What one provider call may use from the runtime: the shared HTTP client, progress, and sleep (for waits)."""

    http: httpx.AsyncClient
    progress: Progress
    sleep: Sleep


@dataclass(frozen=True)
class Call:
    """One request to a provider, covering `count` images starting at image `index`."""

    request: ImageRequest
    index: int
    count: int
    seed: int | None
    #: The user's prompt, or the shortened one the 502 policy retries with (never the aspect-ratio suffix).
    prompt: str
    shortened: bool = False

    def with_prompt(self, prompt: str) -> Call:
        return replace(self, prompt=prompt, shortened=True)


@dataclass
class Reply:
    """What came back for one call: the image bytes exactly as sent, and what we know about the bill."""

    images: list[bytes]
    model: str
    prompt_sent: str
    #: The provider's own figure for this reply, when it gives one.
    reported_cost_usd: float | None = None
    generation_id: str | None = None
    #: Sandbox only: the payload a real call would send, and what it would cost.
    would_send: dict[str, Any] | None = None
    simulated: bool = False
    notes: list[str] = field(default_factory=list)

    def redacted(self, redact: Callable[[str], str]) -> Reply:
        """This reply with every string the provider chose redacted and kept short: they reach sidecars, results,
        logs and the CLI's output."""
        def clean(text: object) -> str:
            return clip(redact(str(text)[:2000]), 200)

        return replace(self, model=clean(self.model),
                       generation_id=None if self.generation_id is None else clean(self.generation_id),
                       notes=[redact(note) for note in self.notes])


@dataclass(frozen=True)
class Capabilities:
    generate: bool = True
    edit: bool = True
    compose: bool = True
    seed: bool = True
    #: Images one request can return; 1 means n>1 becomes parallel requests.
    batch: int = 1
    tiers: tuple[Tier, ...] = ("low",)


@dataclass(frozen=True)
class KeyCheck:
    """`doctor`'s verdict on one provider: no generation spend."""

    status: Literal["ok", "missing", "invalid", "unreachable", "n/a"]
    detail: str = ""
    #: What the provider says is left, where it can be read without spending (OpenRouter's GET /key):
    #: `limit`, `usage` and `limit_remaining` in USD (None: no limit, or not reported).
    credit: dict[str, float | None] | None = None


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def key_variable(self) -> str | None:
        """The variable holding the key, named in every auth error; None when no key is needed."""
        ...

    @property
    def billing_url(self) -> str: ...

    @property
    def base_url_variable(self) -> str | None:
        """The variable that overrides the API's base URL; None when there is no API (the sandbox)."""
        ...

    @property
    def base_url(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def missing(self) -> list[str]:
        """The variables that must still be set before this provider can be used; empty when ready."""
        ...

    def model_for(self, tier: Tier) -> str: ...

    def plan(self, request: ImageRequest) -> list[Call]:
        """Split a request into provider calls (one per image unless the provider batches)."""
        ...

    async def send(self, call: Call, link: Link) -> Reply:
        """Make one call; raise a `ProviderError` subclass on any failure, having saved nothing."""
        ...

    async def check_key(self, http: httpx.AsyncClient) -> KeyCheck: ...


def auth_header(key: str) -> Mapping[str, str]:
    return {"Authorization": f"Bearer {key}"}
