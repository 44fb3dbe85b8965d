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
    return (f"An AI agent wants to make {quote.images} final image(s) on the high tier: {quote.model} on "
            f"{quote.label}, ${quote.per_image_usd:.4f} per image, ${quote.usd:.4f} in total (drafts on the low "
            f"tier cost about $0.014). Approve this spend?")


def needs_consent(mode: str, tier: str, provider: str) -> bool:
    """Whether a call must be approved by the person before it is sent (the sandbox spends nothing)."""
    return tier == "high" and provider != "sandbox" and mode != "allow"


def require_consent(mode: str, tier: str, provider: str, consent: Consent | None) -> None:
    """Refuse, before any request, a high-tier call the person has not approved."""
    if not needs_consent(mode, tier, provider) or (mode != "deny" and consent is Consent.GRANTED):
        return
    raise ConsentRefused(refusal(mode, consent))


def refusal(mode: str, consent: Consent | None) -> str:
    """Why a high-tier call is refused, and what to do instead."""
    stop = ("Do not retry, do not ask again through another tool or provider, and do not switch to a workaround; "
            "continue on the low tier (tier='low') or tell the user.")
    if mode == "deny":
        return f"The high tier is switched off on this server (FLUX_KLEIN_HIGH_TIER=deny); nothing was sent. {stop}"
    if consent in (Consent.DECLINED, Consent.CANCELLED):
        return f"The person {consent.value} the high-tier spend; nothing was sent or charged. {stop}"
    if consent is Consent.NOT_GIVEN:
        return ("The high tier costs more and needs the person's consent: pass --yes, run it on a terminal to be "
                "asked, or set FLUX_KLEIN_HIGH_TIER=allow. Nothing was sent.")
    return ("The high tier needs the person's approval, and this client cannot ask them (it declares no "
            "elicitation). Nothing was sent. Tell the user: to allow finals without being asked, they can set "
            f"FLUX_KLEIN_HIGH_TIER=allow in the server's environment (their standing consent). {stop}")
