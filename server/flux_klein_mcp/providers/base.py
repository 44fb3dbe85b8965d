"""What every provider is: a small Protocol, the call it receives and the reply it returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import anyio

from ..request import ImageRequest
from ..rules import OutputFormat, Tier
from .http import clip

if TYPE_CHECKING:
    import httpx

#: `progress(fraction 0..1, message)` while a provider waits on a slow job.
Progress = Callable[[float, str], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
#: Runs blocking work (parsing megabytes of JSON, decoding base64) in the runtime's bounded worker pool.
Work = Callable[..., Awaitable[Any]]


class Gate:
    """Admits a bounded number of large replies into memory at once, across all calls.

    A reply enters when its headers have arrived and before its body is read (`wire.send`), and leaves when its
    call is done with it (`pipeline`). When many answers arrive together, the bodies past the bound wait in the
    socket instead of in this process: memory stays bounded, as for decoded images (`images.MEMORY`).
    """

    #: Bodies up to this size (job polls, errors) never wait.
    SMALL = 64 * 1024

    def __init__(self, limiter: anyio.CapacityLimiter | None) -> None:
        self._limiter = limiter
        self._inside = False

    async def enter(self, size: int | None) -> None:
        if self._limiter is None or self._inside or (size is not None and size <= self.SMALL):
            return
        await self._limiter.acquire_on_behalf_of(self)
        self._inside = True

    def leave(self) -> None:
        if self._inside and self._limiter is not None:
            self._limiter.release_on_behalf_of(self)
            self._inside = False


@dataclass(frozen=True)
class Link:
    """What one provider call may use from the runtime: the shared HTTP client, progress, sleep (for waits), the
    worker pool (so parsing a reply neither blocks the event loop nor runs for every reply at once), the gate
    large replies pass before their bodies are read, and what keeps a parsed reply's images."""

    http: httpx.AsyncClient
    progress: Progress
    sleep: Sleep
    work: Work
    gate: Gate = field(default_factory=lambda: Gate(None))
    #: Run on a reply in the worker thread that parsed it, before that job returns (a provider that parses its
    #: replies in one calls it there): the pipeline keeps the images in the same job, without one of their own.
    keep: Callable[[Reply], None] | None = None


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
    #: Images the provider made beyond what was asked for and that were not downloaded: billed all the same.
    undelivered: int = 0

    @property
    def billed_images(self) -> int:
        """Every image this reply was billed for (a cost reported for the reply is shared across them)."""
        return len(self.images) + self.undelivered

    def clipped(self) -> Reply:
        """This reply with the strings the provider chose kept short: they reach sidecars, results, the ledger and
        logs (each exit scrubs secrets from them)."""
        def short(text: object) -> str:
            return clip(str(text)[:2000], 200)

        return replace(self, model=short(self.model),
                       generation_id=None if self.generation_id is None else short(self.generation_id))


@dataclass(frozen=True)
class Capabilities:
    generate: bool = True
    edit: bool = True
    compose: bool = True
    seed: bool = True
    #: Images one request can return; 1 means n>1 becomes parallel requests.
    batch: int = 1
    tiers: tuple[Tier, ...] = ("low",)
    #: The file formats its API lets a call ask for (PNG: what every provider returns when none is asked).
    formats: tuple[OutputFormat, ...] = ("png",)


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
