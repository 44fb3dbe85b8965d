"""The high tier needs the person, not the model: the skill allows it "only when explicitly requested".

FLUX_KLEIN_HIGH_TIER decides how that is enforced:

| mode  | a high-tier call                                                                                   |
|-------|----------------------------------------------------------------------------------------------------|
| ask   | (default) the person is asked (MCP elicitation; a y/N prompt or `--yes` on the command line) and  |
|       | the call proceeds only if they approve; a client that cannot ask is refused before any request     |
| allow | the person's standing consent: no question                                                         |
| deny  | always refused                                                                                     |

The MCP side asks through a resolver (so it works on both protocol eras) and hands the pipeline a `Consent`;
the CLI asks on the terminal. The pipeline calls `require_consent` before anything is sent.
"""

from __future__ import annotations

import enum
from typing import Literal, get_args

from ..errors import ConsentRefused
from ..words import either, plural, usd
from .billing import Quote

HighTierMode = Literal["ask", "allow", "deny"]
HIGH_TIER_MODES: tuple[str, ...] = get_args(HighTierMode)


class Consent(enum.Enum):
    GRANTED = "granted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    #: The MCP client declares no elicitation: the person cannot be asked.
    CANNOT_ASK = "cannot ask"
    #: The command line, with no terminal to ask on and no --yes.
    NOT_GIVEN = "not given"


def question(quote: Quote) -> str:
    """What the person is asked: the model, the price per image, the number of images and the total."""
    finals = plural(quote.images, "final image")
    return (either(f"An AI agent wants to make {finals}", f"This makes {finals}") + f" on the high tier: "
            f"{quote.model} on {quote.label}, {usd(quote.per_image_usd)} {'each' if quote.images > 1 else 'an image'}"
            + (f", {usd(quote.usd)} in total" if quote.images > 1 else "")
            + f" (drafts on the low tier cost about {usd(0.014)}). Approve this spend?")


def needs_consent(mode: str, tier: str, provider: str) -> bool:
    """Whether a call must be approved by the person before it is sent (the sandbox spends nothing)."""
    return tier == "high" and provider != "sandbox" and mode != "allow"


def require_consent(mode: str, tier: str, provider: str, consent: Consent | None) -> None:
    """Refuse, before any request, a high-tier call the person has not approved."""
    if not needs_consent(mode, tier, provider) or (mode != "deny" and consent is Consent.GRANTED):
        return
    raise ConsentRefused(refusal(mode, consent))


def refusal(mode: str, consent: Consent | None) -> str:
    """Why a high-tier call is refused, and what to do instead (in each audience's words: `words.either`)."""
    stop = either("Do not retry, do not ask again through another tool or provider, and do not switch to a "
                  "workaround; continue on the low tier (tier='low') or tell the user.", "Use --tier low for drafts.")
    if mode == "deny":
        return ("The high tier is switched off " + either("on this server ", "")
                + f"(FLUX_KLEIN_HIGH_TIER=deny); nothing was sent. {stop}"
                + either("", " To allow it, set FLUX_KLEIN_HIGH_TIER=ask (or allow)."))
    if consent in (Consent.DECLINED, Consent.CANCELLED):
        return (either(f"The person {consent.value}", f"You {consent.value}") + " the high-tier spend; "
                f"nothing was sent or charged. {stop}")
    if consent is Consent.NOT_GIVEN:
        return ("The high tier costs more and needs your approval: pass --yes, run it on a terminal "
                "to be asked, or set FLUX_KLEIN_HIGH_TIER=allow. Nothing was sent.")
    return ("The high tier needs the person's approval, and this client cannot ask them (it declares no "
            "elicitation). Nothing was sent. Tell the user: to allow finals without being asked, they can set "
            f"FLUX_KLEIN_HIGH_TIER=allow in the server's environment (their standing consent). {stop}")
