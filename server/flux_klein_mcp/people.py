"""Who a request comes from, when people sign in (`serve --http` with OAuth, see oauth/): one small seam.

The sign-in middleware (`oauth/app.py`) names the person for the request it lets in (`signed_in`); the runtime
reads it (`current`) where it picks the output folder and the accountant, so that each person has a folder, a
budget and a ledger name of their own, and nothing in between is told. Over stdio, with the static token and on
the command line nobody is signed in, and everything stays as it was.

A person is the token's subject as its issuer names it: `sub` is unique only per issuer (OpenID Connect Core
§2), so both make the identity.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from .store import slugify

#: The folder, inside the output folder, that holds one folder per person.
PEOPLE_FOLDER = "people"
#: How much of the subject a folder's name shows (the rest of the name is the identity's digest).
_SHOWN_CHARS = 24


@dataclass(frozen=True)
class Person:
    issuer: str
    subject: str

    @property
    def key(self) -> str:
        """The person as the ledger records them: `<issuer>#<subject>` (an issuer has no `#`: RFC 8414 §2)."""
        return f"{self.issuer}#{self.subject}"

    @property
    def folder(self) -> str:
        """A folder name that is safe on any file system and never shared by two people: a readable slug of the
        subject (ASCII letters, digits and hyphens only: no `/`, `..`, NUL or drive letter survives) and 128 bits
        of the identity's digest, which differ for subjects that slug alike ("Alice", "alice", "../alice")."""
        digest = hashlib.sha256(self.key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{slugify(self.subject, _SHOWN_CHARS)}-{digest}"


_CURRENT: ContextVar[Person | None] = ContextVar("flux_klein_person", default=None)


def current() -> Person | None:
    """The person this request comes from, or None when nobody signed in."""
    return _CURRENT.get()


@contextlib.contextmanager
def signed_in(person: Person | None) -> Iterator[None]:
    """Serve what runs inside as `person` (the tasks and worker threads it starts inherit it)."""
    token = _CURRENT.set(person)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def subject_of(key: str) -> str:
    """The subject part of a ledger's person (`<issuer>#<subject>`)."""
    return key.split("#", 1)[1] if "#" in key else key
