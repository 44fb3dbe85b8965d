"""An approval pays for one call, whichever replica continues it.

On the 2026-07-28 protocol the person's answer comes back as a second round of the same `tools/call`, carrying the
sealed `requestState` the first round handed out. Any replica can open it (the secret is shared), and so any
replica could be handed the same round twice: a client's retry, a proxy's, or a copy someone kept. The sealed
token is unique to the round (random nonce), so the first call that spends on it claims it in the shared state,
and a second one is refused before anything is sent.
"""

from __future__ import annotations

import hashlib
import time
from contextvars import ContextVar
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.request_state import RequestStateBoundary

from ..errors import ConsentRefused
from .shared import Shared

#: The round being answered in this tool call (a digest of its sealed requestState), or None.
_ANSWERED_ROUND: ContextVar[str | None] = ContextVar("flux_klein_answered_round", default=None)
#: A sealed round is refused by the SDK after its TTL (600 s by default) and up to 60 s of clock skew: a claim
#: needs to outlive that, no more.
CLAIM_S = 900.0


class AnsweredRound:
    """Server middleware that notes which sealed round a `tools/call` answers.

    It must run outside the SDK's `RequestStateBoundary`, which replaces the sealed token with the plaintext it
    minted (the same for every copy of a round)."""

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params or {}
        state = params.get("requestState") if ctx.method == "tools/call" else None
        answered = isinstance(state, str) and bool(params.get("inputResponses"))
        digest = hashlib.sha256(state.encode()).hexdigest() if answered and isinstance(state, str) else None
        token = _ANSWERED_ROUND.set(digest)
        try:
            return await call_next(ctx)
        finally:
            _ANSWERED_ROUND.reset(token)


def note_answered_rounds(middleware: list[ServerMiddleware[Any]]) -> None:
    """Put `AnsweredRound` in a server's middleware, just outside the SDK's `RequestStateBoundary`."""
    boundary = next((i for i, m in enumerate(middleware) if isinstance(m, RequestStateBoundary)), 0)
    middleware.insert(boundary, AnsweredRound())


def answered_round() -> str | None:
    return _ANSWERED_ROUND.get()


def use_approval(shared: Shared, round_digest: str) -> None:
    """Spend the approval given in this round, or refuse: it paid for an earlier call already."""
    if not shared.claim_once(f"approval:{round_digest}", time.time() + CLAIM_S):
        raise ConsentRefused(
            "This approval was already used: it paid for an earlier call with the same arguments, whose images are "
            "in the output folder. An approval pays for one call; nothing was sent or charged now. To make more, "
            "call the tool again and the person will be asked again.")
