"""Settings read from the environment, once, into one immutable object.

Each provider owns its own key and base-URL variables (see `providers/`); this module holds what is shared.
"""

from __future__ import annotations

import math
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from .errors import ConfigError
from .redact import Redactor, counts_as_secret
from .spend import HIGH_TIER_MODES, HighTierMode, LedgerURL, Location, default_ledger
from .spend.location import is_url

DEFAULT_THUMBNAIL_PX = 512
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_INPUT_MB = 20.0
DEFAULT_PEER_CONNECTIONS = 32
DEFAULT_READ_TIMEOUT_S = 10.0

# Every variable a user may set, with what it does: the README's configuration table and `doctor` read this.
VARIABLES: dict[str, str] = {
    "FLUX_KLEIN_PROVIDER": "provider to use when a call names none (default: the first whose key is set)",
    "FLUX_KLEIN_OUTPUT_DIR": "where images are saved (default: output/ under the working directory)",
    "FLUX_KLEIN_THUMBNAIL_PX": (
        f"long side of the thumbnails returned to the model; 0 = none (default {DEFAULT_THUMBNAIL_PX})"
    ),
    "FLUX_KLEIN_TIMEOUT_S": f"seconds allowed for each provider request (default {DEFAULT_TIMEOUT_S:g})",
    "FLUX_KLEIN_INPUT_DIRS": "extra folders input images may be read from (OS path separator between them)",
    "FLUX_KLEIN_MAX_INPUT_MB": f"largest input image accepted, in MB (default {DEFAULT_MAX_INPUT_MB:g})",
    "FLUX_KLEIN_BUDGET_USD": "the most this server process (a session) may spend, in USD; unset = no cap",
    "FLUX_KLEIN_DAILY_BUDGET_USD": "the most all processes sharing the ledger may spend in a calendar day, in USD; "
                                   "with sign-in (OAuth), the most each person may spend in a day",
    "FLUX_KLEIN_SERVER_DAILY_BUDGET_USD": "with sign-in, the most everyone together may spend in a calendar day, in "
                                          "USD (every process sharing the ledger); unset = no such cap",
    "FLUX_KLEIN_LEDGER": "the ledger of charged images: a SQLite file (default "
                         "~/.local/state/flux-klein-mcp/ledger.sqlite3), or a postgresql:// URL for replicas",
    "FLUX_KLEIN_TIMEZONE": "the time zone whose calendar day the daily budget counts, e.g. Europe/Paris "
                           "(default: this machine's)",
    "FLUX_KLEIN_HIGH_TIER": "ask (default: the person approves each high-tier call) | allow | deny",
    "FLUX_KLEIN_RESOURCE_LINKS": "auto (default: not for clients that turn links into URLs a model provider must "
                                 "fetch, such as LangChain's adapters) | always | never",
    "FLUX_KLEIN_HTTP_TOKEN": "bearer token `serve --http` requires of every request (required off loopback)",
    "FLUX_KLEIN_HTTP_ALLOWED_HOSTS": "Host header values `serve --http` accepts off loopback (comma-separated)",
    "FLUX_KLEIN_HTTP_SECRET": "secret (32+ characters) every `serve --http` replica behind one address shares; unset: "
                              "one made per process, right for a single server only",
    "FLUX_KLEIN_HTTP_MAX_CONNECTIONS": "connections `serve --http` holds open at once (default: what its open-file "
                                       "limit allows, at most 1000)",
    "FLUX_KLEIN_HTTP_PEER_CONNECTIONS": "connections one client address may hold open (default 32; 0 = no cap)",
    "FLUX_KLEIN_HTTP_READ_TIMEOUT_S": "seconds a client has to send a request's headers, and the longest pause in "
                                      "its body (default 10)",
    "FLUX_KLEIN_OAUTH_ISSUER": "sign-in for `serve --http`: the issuer URL of the OAuth/OpenID authorization server "
                               "whose access tokens it accepts (see docs/oauth.md)",
    "FLUX_KLEIN_PUBLIC_URL": "this server's URL as clients reach it, e.g. https://images.example.com/mcp (needed "
                             "with FLUX_KLEIN_OAUTH_ISSUER; the tokens' expected audience)",
    "FLUX_KLEIN_OAUTH_AUDIENCE": "the audience access tokens must name, when the authorization server names this "
                                 "server otherwise than FLUX_KLEIN_PUBLIC_URL (e.g. api://flux-klein)",
    "FLUX_KLEIN_OAUTH_SCOPES": "space-separated scopes every access token must carry (default: none)",
}


@dataclass(frozen=True)
class Settings:
    """What the server and the CLI were configured with. Build it with `Settings.from_env`."""

    env: Mapping[str, str] = field(repr=False)
    cwd: Path
    provider: str | None
    output_dir: Path
    output_dir_explicit: bool
    thumbnail_px: int
    timeout_s: float
    input_dirs: tuple[Path, ...]
    max_input_bytes: int
    http_token: str | None = field(default=None, repr=False)
    http_allowed_hosts: tuple[str, ...] = ()
    http_secret: str | None = field(default=None, repr=False)
    #: None: as many as the open-file limit allows (see remote/limits.py).
    http_max_connections: int | None = None
    http_peer_connections: int = DEFAULT_PEER_CONNECTIONS
    http_read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    budget_usd: float | None = None
    daily_budget_usd: float | None = None
    #: With sign-in: what everyone together may spend in a day (`daily_budget_usd` is then each person's).
    server_daily_budget_usd: float | None = None
    #: Sign-in (OAuth), as set: checked as a whole by `oauth.settings` when `serve --http` starts.
    oauth_issuer: str = ""
    public_url: str = ""
    oauth_audience: str = ""
    oauth_scopes: str = ""
    ledger: Location = field(default_factory=default_ledger)
    #: The budget day's time zone (None: this machine's local time).
    timezone: tzinfo | None = None
    high_tier: HighTierMode = "ask"
    resource_links: Literal["auto", "always", "never"] = "auto"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        # An MCP bundle host passes an optional field the person left empty as its template, "${user_config.x}":
        # that is an unset variable, not a value.
        env = {k: v for k, v in (os.environ if env is None else env).items() if not BUNDLE_UNSET.fullmatch(v.strip())}
        cwd = (cwd or Path.cwd()).resolve()
        raw_output = _get(env, "FLUX_KLEIN_OUTPUT_DIR")
        output_dir = _expand(raw_output, "FLUX_KLEIN_OUTPUT_DIR") if raw_output else Path("output")
        return cls(
            env=env,
            cwd=cwd,
            provider=_get(env, "FLUX_KLEIN_PROVIDER").lower() or None,
            output_dir=output_dir if output_dir.is_absolute() else cwd / output_dir,
            output_dir_explicit=bool(raw_output),
            thumbnail_px=_number(env, "FLUX_KLEIN_THUMBNAIL_PX", int, DEFAULT_THUMBNAIL_PX, minimum=0, maximum=4096),
            timeout_s=_number(env, "FLUX_KLEIN_TIMEOUT_S", float, DEFAULT_TIMEOUT_S, minimum=0.001, maximum=3600),
            input_dirs=tuple(
                _expand(p, "FLUX_KLEIN_INPUT_DIRS") for p in _get(env, "FLUX_KLEIN_INPUT_DIRS").split(os.pathsep)
                if p.strip()
            ),
            max_input_bytes=int(
                _number(env, "FLUX_KLEIN_MAX_INPUT_MB", float, DEFAULT_MAX_INPUT_MB, minimum=0.001, maximum=1024)
                * 1024 * 1024
            ),
            http_token=_get(env, "FLUX_KLEIN_HTTP_TOKEN") or None,
            http_allowed_hosts=tuple(
                h.strip() for h in _get(env, "FLUX_KLEIN_HTTP_ALLOWED_HOSTS").split(",") if h.strip()
            ),
            http_secret=_get(env, "FLUX_KLEIN_HTTP_SECRET") or None,
            http_max_connections=_number(env, "FLUX_KLEIN_HTTP_MAX_CONNECTIONS", int, 0, minimum=1, maximum=1_000_000)
            or None,
            http_peer_connections=_number(env, "FLUX_KLEIN_HTTP_PEER_CONNECTIONS", int, DEFAULT_PEER_CONNECTIONS,
                                          minimum=0, maximum=1_000_000),
            http_read_timeout_s=_number(env, "FLUX_KLEIN_HTTP_READ_TIMEOUT_S", float, DEFAULT_READ_TIMEOUT_S,
                                        minimum=0.1, maximum=3600),
            budget_usd=_budget(env, "FLUX_KLEIN_BUDGET_USD"),
            daily_budget_usd=_budget(env, "FLUX_KLEIN_DAILY_BUDGET_USD"),
            server_daily_budget_usd=_budget(env, "FLUX_KLEIN_SERVER_DAILY_BUDGET_USD"),
            oauth_issuer=_get(env, "FLUX_KLEIN_OAUTH_ISSUER"),
            public_url=_get(env, "FLUX_KLEIN_PUBLIC_URL"),
            oauth_audience=_get(env, "FLUX_KLEIN_OAUTH_AUDIENCE"),
            oauth_scopes=_get(env, "FLUX_KLEIN_OAUTH_SCOPES"),
            ledger=_ledger(env, cwd),
            timezone=_timezone(env),
            high_tier=_high_tier(env),
            resource_links=_choice(env, "FLUX_KLEIN_RESOURCE_LINKS", ("auto", "always", "never")),
        )

    def get(self, name: str) -> str:
        """An environment variable, stripped; empty when unset."""
        return _get(self.env, name)

    @cached_property
    def redact(self) -> Redactor:
        """Removes every secret, in any form it may be echoed in, from a text (see `redact.py`)."""
        return redactor_for(self.env)


BUNDLE_UNSET = re.compile(r"\$\{user_config\.[^{}]*\}")
#: A reference to a variable that a client passed on unexpanded (`${OPENROUTER_API_KEY}`, `${env:X}`, `%X%`,
#: `$X` in capitals): no key looks like this, and the error that names it must be able
#: to quote the variable's name, which redacting the reference would blot out.
UNFILLED = re.compile(r"\$\{(?:env:)?[A-Za-z_]\w*\}|%[A-Za-z_]\w*%|\$[A-Z_][A-Z0-9_]*")


#: The variables whose values this server holds as secrets: each provider's key (sent to that provider) and the
#: HTTP token (checked on every request). Only these are scrubbed from what the server writes and refused in what
#: it is asked to send; an OAuth client secret joins this list when the server gets one. Any other `*_TOKEN` in the
#: environment is none of the server's business.
SECRET_VARIABLES: tuple[str, ...] = ("OPENROUTER_API_KEY", "EMPIRIOLABS_API_KEY", "AIGATEWAY_API_KEY",
                                     "FLUX_API_KEY", "FLUX_KLEIN_API_KEY", "FLUX_KLEIN_HTTP_TOKEN",
                                     "FLUX_KLEIN_HTTP_SECRET")


def redactor_for(env: Mapping[str, str]) -> Redactor:
    """A `Redactor` for the secrets in `env` (never for an unfilled reference to a variable, which is no secret;
    values too short or too common to be secrets are left out by `Redactor` itself)."""
    return Redactor({k: v for k in SECRET_VARIABLES if (v := env.get(k, "")).strip()
                     and not UNFILLED.fullmatch(v.strip()) and not BUNDLE_UNSET.fullmatch(v.strip())})


def quoted(value: str, limit: int = 80) -> str:
    """A setting's value as a message quotes it back: clipped, and never when it looks like a key (one pasted into
    the wrong variable is still a key, and the message reaches the model)."""
    if counts_as_secret(value) and not any(c.isspace() or c in "/\\" for c in value):
        return "a value that looks like a key (not shown)"
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _budget(env: Mapping[str, str], name: str) -> float | None:
    # (+ 0.0: a budget of "-0" is 0, never "$-0" in a message)
    return _number(env, name, float, 0.0, minimum=0.0, maximum=1_000_000.0) + 0.0 if _get(env, name) else None


def _path(env: Mapping[str, str], name: str, cwd: Path) -> Path | None:
    raw = _get(env, name)
    if not raw:
        return None
    path = _expand(raw, name)
    return path if path.is_absolute() else cwd / path


def _ledger(env: Mapping[str, str], cwd: Path) -> Location:
    raw = _get(env, "FLUX_KLEIN_LEDGER")
    if is_url(raw):
        return LedgerURL(raw)
    if "://" in raw:
        raise ConfigError(f"FLUX_KLEIN_LEDGER={quoted(raw.split('@')[-1])} is a URL the ledger cannot use: it takes a "
                          "file path (SQLite) or a postgresql:// URL. Fix or unset it.")
    return _path(env, "FLUX_KLEIN_LEDGER", cwd) or default_ledger()


def _timezone(env: Mapping[str, str]) -> tzinfo | None:
    """FLUX_KLEIN_TIMEZONE as an IANA zone ("Europe/Paris", "UTC"), or None for this machine's local time."""
    raw = _get(env, "FLUX_KLEIN_TIMEZONE")
    if not raw:
        return None
    try:
        return zoneinfo.ZoneInfo(raw)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"FLUX_KLEIN_TIMEZONE={quoted(raw)} is not a time zone this machine knows: it takes an "
                          "IANA name such as Europe/Paris, America/New_York or UTC. Fix or unset it (unset: this "
                          "machine's local time).") from None


def _expand(raw: str, name: str) -> Path:
    """A path from a variable, `~` expanded; a home folder that cannot be found, or a NUL, is a bad value."""
    if "\x00" in raw:
        raise ConfigError(f"{name} contains a NUL character. Fix or unset it.")
    if (reference := UNFILLED.search(raw)) is not None:  # the client passed it on unexpanded
        raise ConfigError(f"{name}={quoted(raw)} holds {reference.group(0)}, a reference to another variable that "
                          "was passed on unexpanded (MCP clients do not expand them). Write the path itself.")
    try:
        return Path(raw.strip()).expanduser()
    except RuntimeError:
        raise ConfigError(f"{name}={quoted(raw)} starts with the home folder of a user this machine does not know (or "
                          "there is no home folder). Use an absolute path.") from None


def _high_tier(env: Mapping[str, str]) -> HighTierMode:
    return cast(HighTierMode, _choice(env, "FLUX_KLEIN_HIGH_TIER", HIGH_TIER_MODES))


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> Any:
    """One of `choices` (the first is the default), case-insensitive."""
    raw = _get(env, name).lower() or choices[0]
    if raw not in choices:
        raise ConfigError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {quoted(raw)}. "
                          "Fix or unset it.")
    return raw


_Num = TypeVar("_Num", int, float)


def _number(
    env: Mapping[str, str], name: str, kind: type[_Num], default: _Num, *, minimum: _Num, maximum: _Num
) -> _Num:
    """A number from the environment within [minimum, maximum]; `inf`, `nan` and overflowing values are bad ones."""
    raw = _get(env, name)
    if not raw:
        return default
    value: _Num | None
    try:
        # ASCII digits only: float() would also take "1_000" or Arabic-Indic digits, which nobody means here.
        value = kind(raw) if raw.isascii() and "_" not in raw else None
    except (ValueError, OverflowError):
        value = None
    if value is None or not math.isfinite(value) or not minimum <= value <= maximum:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what} from {minimum:g} to {maximum:g}, got {quoted(raw)}. Fix or unset it.")
    return value
