"""Keeping the server's own secrets (`config.SECRET_VARIABLES`, values that `counts_as_secret`) out of what it
writes: the exits (tool results, sidecars, the ledger, logs, the CLI's output) scrub them, and `find` lets the
pipeline refuse a caller's text that holds one before it is sent or saved. docs/security.md states the rule.

Guarded against: an accidental echo, e.g. a provider repeating a key in an error, an id or a model name. A secret is
found verbatim, in any case, split by spaces, punctuation or invisible marks, clipped (any FRAGMENT_CHARS of its
letters and digits in a row), URL-, HTML-, JSON- or backslash-escaped, and as base64 or hex of its UTF-8. Texts and
secrets are compared *squeezed*: escapes read as the characters they spell, folded to lower-case ASCII, only letters
and digits kept. Deliberate disguises (reversed, rot13, base32, UTF-16, an encoding of an encoding) are out of
scope: a provider that holds the key and means to leak it always can.
"""

from __future__ import annotations

import base64
import functools
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any

REDACTED = "[redacted]"
#: Fewer letters and digits than this are not a secret (they would match ordinary words).
MIN_SECRET_CHARS = 16
#: This many letters and digits of a secret in a row count as the secret: a clipped key still leaks.
FRAGMENT_CHARS = 10
# Any run of FRAGMENT_CHARS or more holds a whole block aligned to this size (2 * _BLOCK - 1 <= FRAGMENT_CHARS).
_BLOCK = 5

_NOT_KEPT = re.compile(r"[^a-z0-9]+")
_DROPPED = bytes(c for c in range(256) if not (ord("0") <= c <= ord("9") or ord("a") <= c <= ord("z")))
# One escaped character: %XX or \xHH runs (bytes, read together as UTF-8), &#D; &#xH;, \u{H}, \uHHHH, \UHHHHHHHH.
# (It starts with a character class, so the scan for it is quick.)
_ESCAPE = re.compile(r"[%&\\](?:(?<=%)([0-9a-fA-F]{2}(?:%[0-9a-fA-F]{2})*)"
                     r"|(?<=\\)(x[0-9a-fA-F]{2}(?:\\x[0-9a-fA-F]{2})*)"
                     r"|(?<=&)#(?:[xX]([0-9a-fA-F]{1,6})|([0-9]{1,7}));?"
                     r"|(?<=\\)(?:u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})))")
_NOT_HEX = re.compile(r"[%\\x]")
_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")


def counts_as_secret(value: str) -> bool:
    """Whether a value can be a secret: at least MIN_SECRET_CHARS letters and digits, holding a digit or both
    cases of letters (each at least a quarter of them), no one character half of them or more. Words, phrases and
    placeholders ("development", "flux-images", "sk-xxxxxxxxxxxxxxxxxxxx") are not."""
    kept = _NOT_KEPT.sub("", value.lower())
    letters = [c for c in value if c.isascii() and c.isalpha()]
    minority = min(sum(c.isupper() for c in letters), sum(c.islower() for c in letters))
    return (len(kept) >= MIN_SECRET_CHARS and (any(c.isdigit() for c in kept) or 4 * minority >= len(letters))
            and 2 * max(kept.count(c) for c in set(kept)) < len(kept))


def _forms(secret: str) -> dict[str, int]:
    """Every spelling looked for, squeezed, with how long a run of it reveals FRAGMENT_CHARS of the secret (hex
    spends 2 characters on each, base64 about 4/3)."""
    plain = _squeeze(secret)
    forms = {plain}
    for variant in {secret, secret.upper(), secret.lower()}:
        try:
            raw = variant.encode("utf-8", "surrogateescape")  # (a variable of bytes that are not UTF-8)
        except UnicodeEncodeError:
            raw = variant.encode("utf-8", "surrogatepass")
        forms.add(raw.hex())
        for offset in range(3):  # after 0, 1 or 2 other bytes: only the characters that carry the secret alone
            encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
            forms.add(_squeeze(encoded[-(-offset * 8 // 6):-1]))
    return {form: max(FRAGMENT_CHARS, math.ceil(FRAGMENT_CHARS * len(form) / len(plain)))
            for form in forms if len(form) >= FRAGMENT_CHARS}


def _squeeze(text: str) -> str:
    """`text` as secrets are compared: escapes read as the characters they spell, compatibility forms and accents
    folded to ASCII, lower-cased, only letters and digits kept."""
    if "%" in text or "&#" in text or "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    if not text.isascii():
        text = _NOT_ASCII.sub(lambda run: _ascii(run[0]), text)
    return text.encode("ascii").lower().translate(None, _DROPPED).decode("ascii")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


@functools.cache
def _kept(char: str) -> int:
    return len(_squeeze(char))


def _spans(text: str) -> list[tuple[int, int]]:
    """For each character of `_squeeze(text)`, the span of `text` it came from (worked out only to redact)."""
    spans: list[tuple[int, int]] = []
    done = 0
    for escape in [*_ESCAPE.finditer(text), None]:
        start = escape.start() if escape else len(text)
        for i in range(done, start):
            spans += [(i, i + 1)] * _kept(text[i])
        if escape is None:
            return spans
        spans += [escape.span()] * len(_squeeze(_unescape(escape)))
        done = escape.end()
    return spans


def _unescape(escape: re.Match[str]) -> str:
    percent, backslash, *codes = escape.groups()
    if percent or backslash:
        return bytes.fromhex(_NOT_HEX.sub("", percent or backslash)).decode("utf-8", "replace")
    code = int(codes[1], 10) if codes[1] else int(next(c for c in codes if c), 16)
    return chr(code) if code < 0x110000 else ""


class Redactor:
    """Finds and removes the given secrets (variable name -> value) in any of their forms."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Every _BLOCK-character piece of every form -> (variable, form, offset in the form, run that reveals it).
        self._blocks: dict[str, list[tuple[str, str, int, int]]] = {}
        for name, value in secrets.items():
            if counts_as_secret(value):
                for form, need in _forms(value.strip()).items():
                    for i in range(len(form) - _BLOCK + 1):
                        self._blocks.setdefault(form[i:i + _BLOCK], []).append((name, form, i, need))

    def __call__(self, text: str) -> str:
        """`text` with every stretch that spells a secret replaced by `[redacted]`."""
        if not self._blocks or not text:
            return text
        found = list(self._matches(_squeeze(text)))
        if found:
            origin = _spans(text)
            for start, end in reversed(_merge([(origin[s][0], origin[e - 1][1]) for _, s, e in found])):
                text = text[:start] + REDACTED + text[end:]
        return text

    def value(self, value: Any) -> Any:
        """A JSON-like value with every string in it redacted (keys of mappings included)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {self(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def find(self, text: str) -> str | None:
        """The variable whose secret `text` holds (in any form), or None."""
        return next((name for name, _, _ in self._matches(_squeeze(text))), None) if self._blocks else None

    def _matches(self, squeezed: str) -> Iterator[tuple[str, int, int]]:
        """(variable, start, end) of each run of `squeezed` that is a long enough piece of a form: the blocks at
        multiples of _BLOCK are looked up, each hit grown both ways along its form. Blocks inside a run already
        found are skipped, so a text repeating a secret costs no more than one holding it once."""
        covered = 0
        blocks = self._blocks
        for i in [i for i in range(0, len(squeezed) - _BLOCK + 1, _BLOCK) if squeezed[i:i + _BLOCK] in blocks]:
            if i + _BLOCK <= covered:
                continue
            for name, form, at, need in blocks[squeezed[i:i + _BLOCK]]:
                left = 0
                while at - left > 0 and i - left > 0 and squeezed[i - left - 1] == form[at - left - 1]:
                    left += 1
                right = _BLOCK
                while at + right < len(form) and i + right < len(squeezed) and squeezed[i + right] == form[at + right]:
                    right += 1
                if left + right >= need:
                    yield name, i - left, i + right
                    covered = max(covered, i + right)
                    break


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
