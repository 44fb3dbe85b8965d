"""Asking the person, over MCP, before a high-tier call: a resolver that runs before the tool body.

It asks only when the answer matters: a high-tier call, FLUX_KLEIN_HIGH_TIER=ask, a provider that offers the tier
and charges for it, and a budget that leaves room (a call the budget refuses is refused as such, without a
question). It uses the SDK's resolver pattern, so the question travels as elicitation on every protocol era
(a mid-call request before 2026-07-28, an input round after). Over stateless HTTP a 2025-era client is asked on
its call's own response stream (remote/asking.py), since the SDK has nowhere to take its answer there. A client
that declares no elicitation is not asked and gets `Consent.CANNOT_ASK`, which the pipeline turns into a refusal
naming FLUX_KLEIN_HIGH_TIER=allow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

from mcp.server.elicitation import (
    AcceptedElicitation,
    DeclinedElicitation,
    ElicitationResult,
    render_elicitation_schema,
)
from mcp.server.mcpserver import Context, Elicit, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ElicitRequest, ElicitRequestFormParams, ElicitResult
from pydantic import BaseModel, Field, ValidationError, model_validator

from .errors import FluxKleinError
from .remote.asking import ASK_TIMEOUT_S, Asker, asker_for
from .spend import Consent, consent_quote, question
from .words import for_mcp

if TYPE_CHECKING:
    from .runtime import Runtime


# The box comes checked (the default a client shows), but only an answer that carries it checked is consent: an
# accepted form without it, or with anything but true, is a decline - no money on a missing or unclear answer.
class Approval(BaseModel):
    """The form the person sees (MCP elicitation)."""

    approve: bool = Field(default=True, title="Approve this spend",
                          description="Leave checked and accept to make the images; decline to spend nothing.")

    @model_validator(mode="before")
    @classmethod
    def _only_true_is_consent(cls, data: Any) -> Any:
        if isinstance(data, BaseModel):
            return data
        answer = data.get("approve") if isinstance(data, dict) else None
        consent = answer is True or (isinstance(answer, str) and answer.strip().lower() == "true")
        return {**(data if isinstance(data, dict) else {}), "approve": consent}


async def _ask(ctx: Context, tier: str, n: int, provider: str | None) -> Elicit[Approval] | Approval | Consent | None:
    runtime = cast("Runtime", ctx.request_context.lifespan_context)
    try:
        quote = await consent_quote(runtime, tier, n, provider)
    except FluxKleinError as exc:  # a budget reached, a ledger that cannot record the charge: no question then
        raise ToolError(str(exc)) from None
    if quote is None:
        return None
    if not can_elicit(ctx):
        return Consent.CANNOT_ASK
    asker = asker_for(ctx.request_context.request)
    if asker is not None:
        return await _ask_on_the_call_stream(asker, ctx, for_mcp(question(quote)))
    return Elicit(for_mcp(question(quote)), Approval)


async def _ask_on_the_call_stream(asker: Asker, ctx: Context, message: str) -> Approval | Consent:
    """The same question, written on the call's response stream of a 2025-era client over HTTP."""
    request = ElicitRequest(params=ElicitRequestFormParams(message=message,
                                                           requested_schema=render_elicitation_schema(Approval)))
    wire = request.model_dump(by_alias=True, mode="json", exclude_none=True)
    call_id = ctx.request_context.request_id
    if call_id is None:  # (a notification: never a tool call)
        return Consent.CANNOT_ASK
    answer = await asker.ask(call_id, wire["method"], wire["params"])
    if answer is None:
        raise ToolError(f"Nobody answered the approval question within {ASK_TIMEOUT_S / 60:g} minutes, so nothing was "
                        "sent or charged. Continue on the low tier (tier='low') or tell the user.")
    try:
        result = ElicitResult.model_validate(answer.get("result"))
    except ValidationError:
        error = answer.get("error")
        said = str(error.get("message", ""))[:200] if isinstance(error, dict) else "something other than an answer"
        raise ToolError(f"The client could not ask the person to approve the high-tier spend (it answered: {said}). "
                        "Nothing was sent. Continue on the low tier (tier='low') or tell the user.") from None
    if result.action == "accept":
        return Approval.model_validate(result.content or {})
    return Consent.DECLINED if result.action == "decline" else Consent.CANCELLED


def can_elicit(ctx: Context) -> bool:
    """The client declared form elicitation (a bare `elicitation: {}` means form, from before modes existed)."""
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def ask_for_generate(ctx: Context, tier: str, n: int, provider: str | None) -> Any:
    return await _ask(ctx, tier, n, provider)


async def ask_for_one(ctx: Context, tier: str, provider: str | None) -> Any:
    return await _ask(ctx, tier, 1, provider)


def consent_of(outcome: ElicitationResult[Any]) -> Consent | None:
    """The person's answer (or the decision made without asking) as the pipeline takes it."""
    if isinstance(outcome, AcceptedElicitation):
        data = outcome.data
        if isinstance(data, Approval):
            return Consent.GRANTED if data.approve else Consent.DECLINED
        return data if isinstance(data, Consent) else None
    if isinstance(outcome, DeclinedElicitation):
        return Consent.DECLINED
    return Consent.CANCELLED


#: The tool parameters that carry the answer (filled by the resolver, never by the model).
GenerateConsent = Annotated[ElicitationResult[Approval], Resolve(ask_for_generate)]
OneImageConsent = Annotated[ElicitationResult[Approval], Resolve(ask_for_one)]
