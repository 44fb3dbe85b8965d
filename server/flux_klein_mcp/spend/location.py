"""Where the ledger is (FLUX_KLEIN_LEDGER): a SQLite file by default, a PostgreSQL database for a `postgresql://` URL.

A path ending in `.jsonl` (the format of earlier versions) names the same ledger as that path ending `.sqlite3`:
configurations written for an earlier version keep working, and the old file is imported on first use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .ledger import Ledger, LedgerError, default_ledger

SCHEMES = ("postgresql://", "postgres://")
EXTRA = "pip install 'flux-klein-mcp[postgres]'"


@dataclass(frozen=True)
class LedgerURL:
    """A PostgreSQL ledger; `str()` and `repr()` leave out the password."""

    url: str = field(repr=False)

    def __str__(self) -> str:
        return shown(self.url)

    def __repr__(self) -> str:
        return f"LedgerURL({shown(self.url)!r})"


def password_of(url: str) -> list[str]:
    """The URL's password, as written and decoded (to scrub it from a driver's messages, which may quote a URL they
    cannot read whole)."""
    match = _USERINFO.search(url)
    raw = match.group(1) if match else ""
    return sorted((text for text in {raw, unquote(raw)} if len(text) >= 3), key=len, reverse=True)


_USERINFO = re.compile(r"://[^/?#@]*?:([^/?#]*)@")


def shown(url: str) -> str:
    """The URL without its password or parameters (fit for messages and reports)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = (f"{parts.username}@" if parts.username else "") + (f"[{host}]" if ":" in host else host)
        netloc += f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://(a URL that could not be read)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


Location = Path | LedgerURL


def is_url(raw: str) -> bool:
    return raw.strip().lower().startswith(SCHEMES)


def database_path(path: Path) -> Path:
    return path.with_suffix(".sqlite3") if path.suffix == ".jsonl" else path


def open_ledger(location: Location, timezone: Any = None) -> Ledger:
    """The ledger at `location` (nothing is opened or made before its first use)."""
    if isinstance(location, LedgerURL):
        try:
            from .postgres import PostgresLedger
        except ImportError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise LedgerError(f"FLUX_KLEIN_LEDGER is a PostgreSQL URL, but PostgreSQL's driver (psycopg) is not "
                              f"installed: {EXTRA} (the postgres extra), then restart the server.") from None
        return PostgresLedger(location.url, timezone, legacy=default_ledger().with_suffix(".jsonl"))
    from .sqlite import SQLiteLedger

    path = database_path(location)
    return SQLiteLedger(path, timezone, legacy=path.with_suffix(".jsonl"))
