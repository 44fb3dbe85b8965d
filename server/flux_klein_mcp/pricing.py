"""What an image costs, from the provider's own figure when it reports one, else from the published price.

A price we do not know is `None`, never a guess presented as a fact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .rules import HIGH_TIER_MODEL, LOW_TIER_MODEL, OPENROUTER_SIZES

# Megapixels as image APIs bill them: 1024x1024 is one megapixel. Part of a megapixel counts as a whole one.
MEGAPIXEL = 1024 * 1024


@dataclass(frozen=True)
class Price:
    """A published price: either per output megapixel (first, then each further one) or flat per image."""

    first_megapixel: float = 0.0
    further_megapixel: float = 0.0
    per_image: float = 0.0

    def of(self, width: int, height: int) -> float:
        if self.per_image:
            return self.per_image
        further = max(0, math.ceil(width * height / MEGAPIXEL) - 1)
        return round(self.first_megapixel + further * self.further_megapixel, 6)


# Published prices by (provider, model id) (PROVIDERS.md). A model id alone is not enough: the same id on an
# endpoint we know nothing about (openai-compatible) has no known price.
PRICES: Mapping[tuple[str, str], Price] = {
    ("openrouter", LOW_TIER_MODEL): Price(first_megapixel=0.014, further_megapixel=0.001),
    ("openrouter", HIGH_TIER_MODEL): Price(per_image=0.04),
    ("empiriolabs", "flux-2-klein-4b"): Price(per_image=0.0085),
}


#: Stands in, as an estimate, where a provider publishes no price: FLUX.2 klein's list price for one image.
ESTIMATE_USD = PRICES[("openrouter", LOW_TIER_MODEL)].of(1024, 1024)


def worst_case(provider: str, model: str) -> tuple[float, str]:
    """The most one image can cost, known before any request: the list price of the largest size we ask for
    ("price list"), else the klein list price ("estimate")."""
    price = PRICES.get((provider, model))
    if price is None:
        return ESTIMATE_USD, "estimate"
    return max(price.of(width, height) for width, height in OPENROUTER_SIZES.values()), "price list"


def list_price(provider: str, model: str, width: int, height: int) -> float | None:
    """The published price of one image of this size, or None when the provider publishes none."""
    price = PRICES.get((provider, model))
    return None if price is None else price.of(width, height)


#: A figure above this for one reply is not a charge anybody made (and n of them could add up to Infinity).
MAX_REPORTED_USD = 1000.0


def reported(raw: object, provider: str) -> tuple[float | None, str | None]:
    """A provider's own figure for a charge, if it is one: a finite number >= 0 (a JSON number, or a header's
    text). Anything else is no figure, with a note saying so (NaN or Infinity would make the JSON we write invalid;
    a negative charge is not a charge)."""
    if raw is None or raw == "":
        return None, None
    value: float | None = None
    try:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str) and len(raw) < 40 and raw.strip().isascii() and "_" not in raw:
            value = float(raw)
    except (ValueError, OverflowError):  # (an integer of 400 digits overflows a float)
        value = None
    if value is not None and math.isfinite(value) and 0 <= value <= MAX_REPORTED_USD:
        return round(value, 8), None
    shown = f" ({value:g})" if value is not None else ""
    return None, (f"{provider} reported a cost that is not an amount in USD{shown}; it was ignored, so cost_usd "
                  "comes from the published price where there is one.")


def total(costs: list[float | None]) -> float | None:
    """The sum, or None as soon as one part is unknown (a partial sum would understate the bill)."""
    if any(c is None for c in costs):
        return None
    return round(sum(c for c in costs if c is not None), 6)
