"""The error policy: what happens after each kind of provider failure. One table, one function.

| error            | what we do                                                                 |
|------------------|----------------------------------------------------------------------------|
| CreditsExhausted | stop: no retry, no other model or tier; sibling requests are cancelled     |
| AuthFailed       | stop: no retry; sibling requests are cancelled                             |
| RateLimited      | wait Retry-After (DEFAULT_RATE_LIMIT_WAIT_S when absent), retry once       |
| UpstreamFailed   | retry once with a shorter, simpler prompt; then report blocked             |
| ServerFailed     | retry once after BACKOFF_S when the provider marks it retryable            |
| anything else    | report, no retry                                                           |

At most one retry per provider request, whatever the second failure is.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProviderError, RateLimited, ServerFailed, UpstreamFailed
from .providers.base import Call, Link, Provider, Reply
from .rules import shorten_prompt
from .words import either

DEFAULT_RATE_LIMIT_WAIT_S = 3.0
#: A longer Retry-After than this is reported instead of waited out (hosts time tool calls out at about 60 s).
MAX_RATE_LIMIT_WAIT_S = 30.0
BACKOFF_S = 2.0

@dataclass(frozen=True)
class Retry:
    wait_s: float = 0.0
    shorten: bool = False
    why: str = ""


def retry_for(error: ProviderError) -> Retry | None:
    """The single retry an error earns, or None."""
    if isinstance(error, RateLimited):
        wait = DEFAULT_RATE_LIMIT_WAIT_S if error.retry_after is None else error.retry_after
        return Retry(wait_s=wait, why=f"rate limited; waited {wait:g} s") if wait <= MAX_RATE_LIMIT_WAIT_S else None
    if isinstance(error, UpstreamFailed):
        return Retry(shorten=True, why="the model provider failed (502); retried with a shorter prompt")
    if isinstance(error, ServerFailed) and error.retryable:
        return Retry(wait_s=BACKOFF_S, why=f"server error {error.status}; retried after {BACKOFF_S:g} s")
    return None


async def send_with_policy(provider: Provider, call: Call, link: Link) -> Reply:
    try:
        return await provider.send(call, link)
    except ProviderError as exc:
        first = exc
    retry = retry_for(first)
    if retry is None:
        raise _final(first)
    if retry.wait_s:
        await link.sleep(retry.wait_s)
    second_call = call.with_prompt(shorten_prompt(call.prompt)) if retry.shorten else call
    try:
        reply = await provider.send(second_call, link)
    except ProviderError as second:
        raise _after_retry(first, second) from None
    reply.notes.append(f"Image {call.index + 1}: {retry.why}.")
    return reply


def _final(error: ProviderError) -> ProviderError:
    """The message for an error we do not retry (adds what to do where the provider's text does not)."""
    if isinstance(error, RateLimited):
        wait = "" if error.retry_after is None else f" It asks to wait {error.retry_after:g} s."
        error.args = (f"{error.raw}{wait} Not retried now: try again later.",)
    elif isinstance(error, ServerFailed) and not error.args[0].rstrip().endswith("later."):
        error.args = (f"{error.raw} Try again later.",)
    return error


def _after_retry(first: ProviderError, second: ProviderError) -> ProviderError:
    if isinstance(first, UpstreamFailed) and isinstance(second, UpstreamFailed):
        second.args = (
            f"Blocked: {second.raw} It failed again after one retry with a shorter prompt. The model is down or "
            f"cannot make this image right now; nothing was saved. {either('Tell the user, and try', 'Try again')} "
            "later.",
        )
        return second
    if isinstance(second, type(first)):
        second.args = (f"{second.raw} It failed again after one retry; nothing was saved. Try again later.",)
    return second
