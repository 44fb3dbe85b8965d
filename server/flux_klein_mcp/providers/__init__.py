"""The providers, and the rule that picks one for a call.

A call's `provider` argument wins, then `FLUX_KLEIN_PROVIDER`, then the first provider whose key is set, in
`AUTO_ORDER`. The sandbox is only ever used when asked for by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..config import UNFILLED, Settings, quoted
from ..errors import ConfigError, InputError
from ..rules import PROVIDER_NAMES, ProviderName
from ..words import RESTART, SET_IT, arg, closest, either
from .aigateway import AIGateway
from .base import Call, Capabilities, KeyCheck, Link, Progress, Provider, Reply, Sleep
from .empiriolabs import EmpirioLabs
from .fluxrouter import FluxRouter
from .http import check_base_url
from .openai_compatible import OpenAICompatible
from .openrouter import OpenRouter
from .sandbox import Sandbox

__all__ = [
    "AUTO_ORDER",
    "PROVIDER_NAMES",
    "Call",
    "Capabilities",
    "KeyCheck",
    "Link",
    "Progress",
    "Provider",
    "ProviderName",
    "Providers",
    "Reply",
    "Sleep",
]

AUTO_ORDER: tuple[str, ...] = ("openrouter", "empiriolabs", "aigateway", "fluxrouter", "openai-compatible")

_FACTORIES: dict[str, Callable[[Settings], Provider]] = {
    "openrouter": OpenRouter,
    "empiriolabs": EmpirioLabs,
    "aigateway": AIGateway,
    "fluxrouter": FluxRouter,
    "openai-compatible": OpenAICompatible,
    "sandbox": Sandbox,
}


class Providers:
    """Every provider, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._by_name: dict[str, Provider] = {name: make(settings) for name, make in _FACTORIES.items()}

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Provider:
        try:
            return self._by_name[name]
        except KeyError:
            guess = closest(name, PROVIDER_NAMES)
            raise InputError(f"{arg('provider')} {quoted(name)} is unknown"
                             + (f" (did you mean {guess!r}?)" if guess else "")
                             + f". Use one of: {', '.join(PROVIDER_NAMES)}.") from None

    def choose(self, requested: str | None = None) -> Provider:
        """The provider for a call: `requested`, else FLUX_KLEIN_PROVIDER, else the first whose key is set."""
        if requested:
            return self._ready(self.get(requested), either("the provider argument", "--provider"))
        if self._settings.provider:
            if self._settings.provider not in self._by_name:
                guess = closest(self._settings.provider, PROVIDER_NAMES)
                raise ConfigError(
                    f"FLUX_KLEIN_PROVIDER={quoted(self._settings.provider)} is not a provider"
                    + (f" (did you mean {guess!r}?)" if guess else "")
                    + f". Use one of: {', '.join(PROVIDER_NAMES)}, or unset it."
                )
            return self._ready(self._by_name[self._settings.provider], "FLUX_KLEIN_PROVIDER")
        auto = self.auto_choice()
        if auto is None:
            raise ConfigError(self.nothing_configured())
        return self._ready(auto, f"its key {auto.key_variable}")

    def auto_choice(self) -> Provider | None:
        """The first provider in AUTO_ORDER whose key variable is set, if any."""
        for name in AUTO_ORDER:
            provider = self._by_name[name]
            if provider.key_variable and self._settings.get(provider.key_variable):
                return provider
        return None

    def nothing_configured(self) -> str:
        keys = ", ".join(
            p.key_variable + (f" (with {' and '.join(m for m in p.missing() if m != p.key_variable)})"
                              if len(p.missing()) > 1 else "")
            for n in AUTO_ORDER if (p := self._by_name[n]).key_variable
        )
        return (
            f"No image provider is configured: none of {keys} is set. Set one ({SET_IT}), or use the free offline "
            f"placeholders of {arg('provider', 'sandbox')} (or FLUX_KLEIN_PROVIDER=sandbox)."
        )

    def _ready(self, provider: Provider, chosen_by: str) -> Provider:
        if provider.base_url_variable and provider.base_url:
            check_base_url(provider.base_url, provider.base_url_variable)
        key = self._settings.get(provider.key_variable) if provider.key_variable else ""
        if UNFILLED.fullmatch(key):
            raise ConfigError(
                f"{provider.key_variable} holds a placeholder that was never filled in (like ${{VAR}}, $VAR or "
                "%VAR%), not a key" + either(": this client passes such text on as it is. Put the key itself in the "
                "client's env for the server, or use the substitution syntax that client documents, then restart it.",
                ". Set it to the key itself.")
            )
        if any(not " " < char <= "~" for char in key):  # a header would break on it: say so before any request
            raise ConfigError(
                f"{provider.key_variable} contains a space, line break, invisible or non-ASCII character (often "
                f"left by copy and paste). Set it again from the provider's key page{RESTART}."
            )
        missing = provider.missing()
        if missing:
            one = len(missing) == 1
            raise ConfigError(
                f"{provider.label} was chosen by {chosen_by}, but {' and '.join(missing)} "
                f"{'is' if one else 'are'} not set. Set {'it' if one else 'them'} ({SET_IT}), or use "
                f"{arg('provider', 'sandbox')} to try the tools offline."
            )
        return provider
