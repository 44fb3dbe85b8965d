"""Keeping secrets out of everything this server writes: results, sidecars, log lines and the CLI's output.

A provider may echo a key back in any string it sends (an error body, a generation id, a model name), and not
always verbatim: upper-cased, base64-, hex-, URL- or HTML-encoded, escaped, split by whitespace or invisible
characters, in fullwidth letters, or cut short by a clip. So a secret is searched for in all those forms,
case-insensitively, after folding compatibility characters (NFKC) and dropping whitespace, invisible and combining
characters; any run of `FRAGMENT_CHARS` or more of its characters counts as the secret. In a provider's own words
(`shapes=True`, the default) anything shaped like a provider key is removed too, even when it is not one of ours;
our own output (paths, file names) is not searched for shapes, which would mangle a folder named like a key.

The same search tells whether a caller's own text (a prompt, a file name) holds a configured secret, so it can be
refused before it is sent anywhere.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
#: Values shorter than this are not treated as secrets: they would match ordinary words.
MIN_SECRET_CHARS = 8
#: This many consecutive characters of a secret (in any of its forms) count as the secret: a clipped key still leaks.
FRAGMENT_CHARS = 10
# Any piece of MIN_SECRET_CHARS or more holds a whole block aligned to this size: 2 * _BLOCK - 1 <= MIN_SECRET_CHARS.
_BLOCK = 4

# Key shapes the providers hand out; removed even when we do not know the exact key (a provider may echo one).
_KEY_PATTERN = re.compile(r"\b(?:sk|pk|rk|key|fx|el|ag)[-_](?:[A-Za-z0-9]+[-_])*[A-Za-z0-9]{16,}\b")
# Characters a provider (or a clip) may insert into an echoed key without changing what it reveals (the ASCII fast
# path; other text is folded character by character, see `_fold`).
_GAPS = re.compile(r"\s")


def looks_secret(value: str) -> bool:
    """A value worth guarding: long enough, one word, and not a file path (some `*_TOKEN` variables hold paths)."""
    value = value.strip()
    return (len(value) >= MIN_SECRET_CHARS and not any(c.isspace() for c in value)
            and not value.startswith(("/", "~", "./", "../")) and ":\\" not in value)


def _base64_cores(secret: bytes) -> set[str]:
    """The part of the base64 text that encodes `secret` whatever precedes it (three alignments, two alphabets)."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode().rstrip("=")
        start = -(-offset * 8 // 6)  # the characters that carry bits of the bytes before the secret
        core = encoded[start:-1]  # the last character may carry bits of whatever follows
        cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


def _forms(secret: str) -> set[str]:
    """Every spelling of a secret we look for, lower-cased and without whitespace."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1], raw.hex(),
             "".join(f"%{b:02x}" for b in raw), "".join(f"\\u{ord(c):04x}" for c in secret),
             "".join(f"\\x{b:02x}" for b in raw), "".join(f"&#{ord(c)};" for c in secret),
             "".join(f"&#x{ord(c):x};" for c in secret)}
    for variant in {raw, secret.upper().encode(), secret.lower().encode()}:
        forms |= _base64_cores(variant)
    return {_squeeze(form)[0] for form in forms if len(form) >= MIN_SECRET_CHARS}


def _squeeze(text: str) -> tuple[str, list[int] | None]:
    """`text` folded for matching, and where each kept character came from (None: see `_origins`).

    ASCII text (nearly all of it) takes a fast path: whitespace dropped, lower-cased. Other text is folded one
    character at a time: whitespace, format (Cf, e.g. zero-width and direction marks) and combining (Mn)
    characters dropped; compatibility forms (fullwidth letters) folded to theirs (NFKC); lower-cased.
    """
    if text.isascii():
        return _GAPS.sub("", text).lower(), None
    kept: list[str] = []
    where: list[int] = []
    for i, char in enumerate(text):
        folded = _fold(char)
        if folded:
            kept.append(folded)
            where.append(i)
    return "".join(kept), where


def _fold(char: str) -> str:
    if char.isspace() or unicodedata.category(char) in ("Cf", "Mn", "Me"):
        return ""
    folded = unicodedata.normalize("NFKC", char).lower()
    return folded if len(folded) == 1 else char


def _origins(text: str) -> list[int]:
    """For each character of the ASCII fast path's `_squeeze(text)`, its index in `text`."""
    return [i for i, char in enumerate(text) if not _GAPS.match(char)]


class Redactor:
    """Finds and removes configured secrets (by variable name) in any of their forms."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Every _BLOCK-character piece of every form -> where it sits: (variable, form, offset in the form).
        self._blocks: dict[str, list[tuple[str, str, int]]] = {}
        for name, value in secrets.items():
            if looks_secret(value):
                for form in _forms(value.strip()):
                    for i in range(len(form) - _BLOCK + 1):
                        self._blocks.setdefault(form[i:i + _BLOCK], []).append((name, form, i))

    def __call__(self, text: str, *, shapes: bool = True) -> str:
        """`text` with every secret (and, with `shapes`, everything shaped like a key) replaced by `[redacted]`."""
        if self._blocks and text:
            squeezed, where = _squeeze(text)
            found = list(self._matches(squeezed))
            if found:
                origin = where if where is not None else _origins(text)
                for start, end in reversed(_merge((origin[s], origin[e - 1] + 1) for _, s, e in found)):
                    text = text[:start] + REDACTED + text[end:]
        return _KEY_PATTERN.sub(REDACTED, text) if shapes else text

    def value(self, value: Any, *, shapes: bool = True) -> Any:
        """A JSON-like value with every string in it redacted (keys of mappings included)."""
        if isinstance(value, str):
            return self(value, shapes=shapes)
        if isinstance(value, Mapping):
            return {self(str(k), shapes=shapes): self.value(v, shapes=shapes) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v, shapes=shapes) for v in value]
        return value

    def find(self, text: str) -> str | None:
        """The variable whose secret `text` holds (in any form), or None."""
        return next((name for name, _, _ in self._matches(_squeeze(text)[0])), None) if self._blocks else None

    def _matches(self, squeezed: str) -> Iterator[tuple[str, int, int]]:
        """(variable, start, end) of every run of `squeezed` that is a long enough piece of a secret's form.

        Any such run (at least MIN_SECRET_CHARS long) covers a whole block starting at a multiple of _BLOCK, so
        only those blocks are looked up; each hit is then grown both ways along the form.
        """
        for i in range(0, len(squeezed) - _BLOCK + 1, _BLOCK):
            for name, form, at in self._blocks.get(squeezed[i:i + _BLOCK]) or ():
                left = 0
                while at - left > 0 and i - left > 0 and squeezed[i - left - 1] == form[at - left - 1]:
                    left += 1
                right = _BLOCK
                while at + right < len(form) and i + right < len(squeezed) and squeezed[i + right] == form[at + right]:
                    right += 1
                if left + right >= min(len(form), FRAGMENT_CHARS):
                    yield name, i - left, i + right


def _merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class RedactingFilter(logging.Filter):
    """Redacts a log record's message and traceback before any handler writes them."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self._redact(record.getMessage()), None
        if record.exc_info:
            record.exc_text = self._redact(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        return True


def install_log_redaction(redact: Redactor) -> None:
    """Put the filter on every handler of the root logger (a filter on a logger misses its children's records)."""
    for handler in logging.getLogger().handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactingFilter)]
        handler.addFilter(RedactingFilter(redact))
