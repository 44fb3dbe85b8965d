"""Every failure the server reports, as one small hierarchy.

    FluxKleinError                 a message written for the model and the user; never holds a key
    ├── UsageError                 the call or the set-up is wrong; nothing was sent to a provider
    │   ├── InputError             a bad argument (the message names the parameter)
    │   ├── ConfigError            a missing or bad environment variable (the message names it)
    │   └── ConsentRefused         the high tier without the person's consent: declined, unavailable or denied
    ├── BudgetExceeded             the call would pass a budget: stop, like a 402; nothing was sent
    ├── ProviderError              the provider refused or failed; `status` is the HTTP status when there was one
    │   ├── CreditsExhausted       402: stop everything; no retry, no other model or tier
    │   ├── AuthFailed             401: the key variable is missing, wrong or revoked
    │   ├── ContentRefused         403 and other moderation refusals, with the provider's reasons
    │   ├── RateLimited            429: retried once after Retry-After
    │   ├── UpstreamFailed         OpenRouter 502: retried once with a shorter prompt, then reported as blocked
    │   ├── ServerFailed           5xx: retried once with backoff where the provider marks it retryable
    │   ├── RequestRejected        any other 4xx (400 bad parameters, 404, 408 ...)
    │   ├── BadReply               an answer that is not an image: error finish, text only, non-JSON, bad base64
    │   └── ConnectionFailed       refused, reset, truncated or timed out before an answer arrived
    └── StorageError               the image arrived but could not be written

What each provider error *does* (retry, stop) lives in `policy.py`; which status maps to which class
lives with each provider. Messages say what happened and what to do next, written once for the agent and the
person (`words.either` marks the parts that differ).
"""

from __future__ import annotations

from .words import for_cli, for_mcp


class FluxKleinError(Exception):
    """Base class: the message, for both audiences. `str(error)` is the agent's (MCP) text, `for_cli()` the
    person's, `raw` both (to build a longer message from)."""

    exit_code = 1

    @property
    def raw(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return for_mcp(self.raw)

    def for_cli(self) -> str:
        return for_cli(self.raw)


class UsageError(FluxKleinError):
    exit_code = 2


class InputError(UsageError):
    """A tool argument or CLI option is wrong."""


class ConfigError(UsageError):
    """An environment variable is missing or wrong."""


class ConsentRefused(UsageError):
    """The person did not approve the high tier (or could not be asked); the model must not work around it."""


class BudgetExceeded(FluxKleinError):
    """A budget would be passed; refused before any request. Stop and tell the user, like a 402."""

    exit_code = 3


class StorageError(FluxKleinError):
    """The output folder could not take the image."""


class ProviderError(FluxKleinError):
    """The provider answered with a failure, or did not answer."""

    #: A fatal error cancels the sibling requests of an n>1 call: every one of them would fail the same way.
    fatal = False

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        #: What the provider charged (or may have) for this failed request: (USD per image, images, "provider" or
        #: "price list"). A failure after the provider did the work still counts against the budgets.
        self.charged: tuple[float, int, str] | None = None


class CreditsExhausted(ProviderError):
    fatal = True
    exit_code = 3


class AuthFailed(ProviderError):
    fatal = True


class ContentRefused(ProviderError):
    pass


class RateLimited(ProviderError):
    def __init__(self, message: str, *, provider: str, status: int | None = 429, retry_after: float | None = None):
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class UpstreamFailed(ProviderError):
    pass


class ServerFailed(ProviderError):
    def __init__(self, message: str, *, provider: str, status: int | None = None, retryable: bool = False):
        super().__init__(message, provider=provider, status=status)
        self.retryable = retryable


class RequestRejected(ProviderError):
    pass


class BadReply(ProviderError):
    pass


class ConnectionFailed(ProviderError):
    pass
