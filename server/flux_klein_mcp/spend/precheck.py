"""The one check before a person is asked to approve a high-tier call, shared by MCP (`asking.py`) and the command
line (`cli/commands.py`): ask only when the answer matters, and never about a call a budget would refuse."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import FluxKleinError
from .billing import Quote, quote_for
from .consent import needs_consent

if TYPE_CHECKING:
    from ..runtime import Runtime


async def consent_quote(runtime: Runtime, tier: str, n: int, provider: str | None) -> Quote | None:
    """The quote to put to the person, once the budgets allow it (else `BudgetExceeded`); None when nothing needs
    asking: the low tier, FLUX_KLEIN_HIGH_TIER=allow or deny, the sandbox, a provider without the high tier, or one
    that cannot be chosen (the pipeline reports those)."""
    mode = runtime.settings.high_tier
    if tier != "high" or mode != "ask":
        return None
    try:
        chosen = runtime.providers.choose(provider)
    except FluxKleinError:
        return None
    if not needs_consent(mode, tier, chosen.name) or "high" not in chosen.capabilities.tiers:
        return None
    quote = quote_for(chosen, "high", n)
    await runtime.in_worker(runtime.spend.check, quote)
    return quote
