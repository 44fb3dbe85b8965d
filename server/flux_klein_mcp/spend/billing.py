"""Quoting and billing: the worst case a call can cost, known before anything is sent (`quote_for`), and what its
provider requests were charged, kept or not (`Bill`), as the ledger's charges."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import pricing
from ..rules import Tier
from ..words import either, plural, usd
from .ledger import Charge

if TYPE_CHECKING:
    from ..providers import Provider, Reply

#: The note on images booked because their request was cancelled after it was sent.
CANCELLED_NOTE = ("cancelled after the request was sent; booked at its worst case, since the provider may have "
                  "charged it")


@dataclass(frozen=True)
class Quote:
    """The worst case a call can cost, known before any request."""

    provider: str
    label: str
    model: str
    tier: str
    images: int
    per_image_usd: float
    #: "price list" when the provider publishes a price, "estimate" when the klein list price stands in, "highest
    #: charge seen" when the provider charged more than either.
    source: str
    #: With "highest charge seen": the price and source an image is booked at when the provider reports no cost
    #: (a worst case learned from one odd charge must not become every image's price).
    book: tuple[float, str] | None = None

    @property
    def usd(self) -> float:
        return round(self.per_image_usd * self.images, 6)

    @property
    def booked(self) -> tuple[float, str]:
        """What one image with no cost of its own is recorded at, and the source named for it."""
        return self.book or (self.per_image_usd, self.source)


def quote_for(provider: Provider, tier: Tier, n: int) -> Quote:
    """The most a request can cost, before anything is sent (the sandbox costs nothing)."""
    model = provider.model_for(tier)
    per_image, source = (0.0, "sandbox") if provider.name == "sandbox" else pricing.worst_case(provider.name, model)
    return Quote(provider.name, provider.label, model, tier, n, per_image, source)


@dataclass(frozen=True)
class Delivered:
    """One image the provider delivered and that was saved (kept, or removed because the call was cancelled)."""

    cost_usd: float | None
    #: "provider", "price list", "sandbox", or None when the provider reports no cost and publishes no price.
    cost_source: str | None
    generation_id: str | None
    path: str


@dataclass
class Bill:
    """Everything one call's provider requests made, kept or not: the ledger counts what the provider billed."""

    #: Saved, then removed because the call was cancelled.
    discarded: list[Delivered] = field(default_factory=list)
    #: Made and billed but not saved (unusable, or more than asked for, downloaded or not): (reply, how many).
    unsaved: list[tuple[Reply, int]] = field(default_factory=list)
    #: Requests that failed after the provider did the work: (USD per image, images, cost source).
    failed: list[tuple[float, int, str]] = field(default_factory=list)
    #: Images of requests sent and still unanswered when the call was cancelled: the provider may charge them.
    unanswered: int = 0

    def charges(self, kept: list[Delivered], quote: Quote, scrub: Callable[[str], str]) -> list[Charge]:
        """The ledger's charges: each image's own cost (the provider's figure, else the list price), else the
        quote's per-image price (an estimate where the provider publishes none). The sandbox is never charged. The
        provider's generation id is scrubbed of secrets (the ledger is an exit)."""
        if quote.usd <= 0:
            return []
        booked_usd, booked_source = quote.booked

        def charge(usd: float, source: str, images: int = 1, generation_id: str | None = None,
                   path: str | None = None, note: str | None = None) -> Charge:
            # (+ 0.0: a charge of -0.0 is written as 0.0)
            return Charge(quote.provider, quote.model, quote.tier, images, round(usd * images, 6) + 0.0, source,
                          None if generation_id is None else scrub(generation_id), path, note)

        out = [charge(image.cost_usd if image.cost_usd is not None else booked_usd,
                      image.cost_source or booked_source, generation_id=image.generation_id, path=image.path)
               for image in kept + self.discarded if image.cost_source != "sandbox"]
        for reply, count in self.unsaved:
            if not reply.simulated:
                reported = reply.reported_cost_usd
                usd = reported / max(1, reply.billed_images) if reported is not None else booked_usd
                out.append(charge(usd, "provider" if reported is not None else booked_source, count,
                                  reply.generation_id))
        out += [charge(usd, source, count) for usd, count, source in self.failed if count]
        if self.unanswered:
            out.append(charge(quote.per_image_usd, quote.source, self.unanswered, note=CANCELLED_NOTE))
        return out


def budget_reached(quote: Quote, variable: str, budget: float, spent: float, reserved: float, scope: str) -> str:
    """The refusal when a call would pass a budget (BudgetExceeded)."""
    left = max(0.0, budget - spent - reserved)
    in_flight = f" (and {usd(reserved)} is reserved by calls still running)" if reserved > 1e-9 else ""
    estimate = " (an estimate: the provider publishes no price)" if quote.source == "estimate" else ""
    each = " each" if quote.images > 1 else ""
    return (
        f"Budget reached: this call could cost up to {usd(quote.usd)} ({plural(quote.images, 'image')} at "
        f"{usd(quote.per_image_usd)}{each}{estimate} on {quote.label}), but {variable} is {usd(budget)} and "
        f"{usd(spent)} was already spent {scope}{in_flight}, leaving {usd(left)}. Nothing was sent. "
        + either("STOP: do not retry, and do not switch tier, model or provider to get around it. Tell the user "
                 f"the budget is reached; they can raise {variable} (in the server's environment) if they want "
                 "to spend more.", f"To spend more, raise {variable}.")
    )

def shared_budget_reached(quote: Quote, budget: float) -> str:
    """The refusal a signed-in person gets when the cap everyone shares would be passed (what the others spent is
    theirs to know, not this person's)."""
    return (
        f"Budget reached: this call could cost up to {usd(quote.usd)} on {quote.label}, more than what "
        f"FLUX_KLEIN_SERVER_DAILY_BUDGET_USD ({usd(budget)} a day for everyone using this server together) has left "
        "today. Nothing was sent. "
        + either("STOP: do not retry, and do not switch tier, model or provider to get around it. Tell the user the "
                 "server's daily budget is reached; its operator can raise FLUX_KLEIN_SERVER_DAILY_BUDGET_USD.",
                 "To spend more, raise FLUX_KLEIN_SERVER_DAILY_BUDGET_USD.")
    )
