"""Keeping secrets out of everything this server writes: results, sidecars, log lines and the CLI's output.

A provider may echo a key back in any string it sends (an error body, a generation id, a model name), and not
always verbatim: upper-cased, reversed, rot13, base64-, base32- or hex-encoded (of UTF-8 or UTF-16; base64 twice),
URL- (once or twice), HTML- or backslash-escaped a character at a time, split by whitespace, punctuation, controls,
fillers or invisible characters, in fullwidth letters, or cut short by a clip. So texts and secrets are compared
folded: escapes read as their characters, everything folded to ASCII and lower-cased, only letters and digits kept;
any run of `FRAGMENT_CHARS` or more characters of a secret's forms counts as the secret, and the whole stretch of
the original text it came from is removed. In a provider's own words (`shapes=True`, the default) anything shaped
like a provider key is removed too, even when it is not one of ours; our own output (paths, file names) is not
searched for shapes, which would mangle a folder named like a key.

The same search tells whether a caller's own text (a prompt, a file name) holds a configured secret, so it can be
refused before it is sent anywhere.
"""

from __future__ import annotations

import base64
import codecs
import logging
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

REDACTED = "[redacted]"
#: Values shorter than this are not treated as secrets: they would match ordinary words.
MIN_SECRET_CHARS = 8
#: This many consecutive characters of a secret (in any of its forms) count as the secret: a clipped key still leaks.
FRAGMENT_CHARS = 10
# Any piece of MIN_SECRET_CHARS or more holds a whole block aligned to this size: 2 * _BLOCK - 1 <= MIN_SECRET_CHARS.
_BLOCK = 4

# Key shapes the providers hand out; removed even when we do not know the exact key (a provider may echo one).
_KEY_PATTERN = re.compile(r"\b(?:sk|pk|rk|key|fx|el|ag)[-_](?:[A-Za-z0-9]+[-_])*[A-Za-z0-9]{16,}\b")
# Only these characters are compared: everything else a provider (or a clip) may put between a key's characters -
# whitespace, punctuation, separators, controls, fillers, invisible or combining marks - reveals nothing by itself.
_NOT_KEPT = re.compile(r"[^a-z0-9]")
# One character spelled as an escape: %XX (or %25XX, URL-encoded twice), &#DDD; or &#xHH;, \uXXXX (\u{...},
# \UXXXXXXXX) or \xHH.
_ESCAPE = re.compile(r"%(?:25)?([0-9a-fA-F]{2})|&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));?"
                     r"|\\u\{([0-9a-fA-F]{1,8})\}|\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})|\\x([0-9a-fA-F]{2})")
_ESCAPE_STARTS = frozenset("%&\\")
# A run of byte escapes, read together as UTF-8 (a multi-byte character is spelled by several).
_BYTE_RUN = re.compile(r"(?:%(?:25)?[0-9a-fA-F]{2}){2,}|(?:\\x[0-9a-fA-F]{2}){2,}")
_HEX_PAIR = re.compile(r"(?:%(?:25)?|\\x)([0-9a-fA-F]{2})")


def quoted(value: str, limit: int = 80) -> str:
    """A setting's value as a message quotes it back: clipped, and a key pasted into the wrong variable (anything
    shaped like a provider key) removed, since the message reaches the model."""
    value = _without_key_shapes(value)
    return repr(value if len(value) <= limit else value[: limit - 1] + "…")


def looks_secret(value: str) -> bool:
    """A value worth guarding: long enough, one word, and not a file path (some `*_TOKEN` variables hold paths)."""
    value = value.strip()
    return (len(value) >= MIN_SECRET_CHARS and not any(c.isspace() for c in value)
            and not value.startswith(("/", "~", "./", "../")) and ":\\" not in value)


def _encoded_cores(secret: bytes, encode: Callable[[bytes], bytes], block: int, bits: int) -> set[str]:
    """The part of `encode(... + secret)` that encodes `secret` whatever precedes it (every alignment in a block
    of `block` bytes; each character carries `bits` bits)."""
    cores = set()
    for offset in range(block):
        encoded = encode(b"\0" * offset + secret).decode().rstrip("=")
        start = -(-offset * 8 // bits)  # the characters that carry bits of the bytes before the secret
        cores.add(encoded[start:-1])  # the last character may carry bits of whatever follows
    return cores


def _forms(secret: str) -> dict[str, int]:
    """Every spelling of a secret we look for, as `_squeeze` leaves it, with how long a run of it reveals
    FRAGMENT_CHARS of the secret (an encoding spends more characters on each: 2 for hex, 4/3 for base64...).
    Escaped spellings (%XX, entities, \\u) need no form of their own: `_squeeze` reads them as the characters they
    stand for."""
    forms = set()
    for variant in {secret, secret.upper(), secret.lower(), secret[::-1], codecs.encode(secret, "rot13")}:
        forms.add(variant)
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            raw = variant.encode(encoding, "surrogatepass")  # (a value read from bytes that are not UTF-8)
            forms.add(raw.hex())
            forms |= _encoded_cores(raw, base64.b64encode, 3, 6)
            forms |= _encoded_cores(raw, base64.b32encode, 5, 5)
    for once in list(_encoded_cores(secret.encode("utf-8", "surrogatepass"), base64.b64encode, 3, 6)):
        forms |= _encoded_cores(once.encode(), base64.b64encode, 3, 6)  # base64 of base64
    plain = max(1, len(_squeeze(secret)[0]))
    squeezed = {_squeeze(form)[0] for form in forms}
    return {form: max(FRAGMENT_CHARS, math.ceil(FRAGMENT_CHARS * len(form) / plain))
            for form in squeezed if len(form) >= MIN_SECRET_CHARS}


def _squeeze(text: str) -> tuple[str, list[tuple[int, int]] | None]:
    """`text` as secrets are compared, and the span of `text` each of its characters came from (None: one
    character each, see `_origins`).

    Escapes are read as the characters they spell, then every character is folded to ASCII (compatibility forms
    such as fullwidth letters, accents dropped) and lower-cased, and only letters and digits are kept. ASCII text
    without escapes (nearly all of it) takes a fast path.
    """
    if text.isascii() and _ESCAPE_STARTS.isdisjoint(text):
        return _NOT_KEPT.sub("", text.lower()), None
    kept: list[str] = []
    spans: list[tuple[int, int]] = []
    i, length = 0, len(text)
    while i < length:
        chars, end = text[i], i + 1
        if chars in _ESCAPE_STARTS:
            if (run := _BYTE_RUN.match(text, i)) is not None:  # %XX%XX... or \xHH\xHH...: UTF-8 bytes
                raw = bytes.fromhex("".join(_HEX_PAIR.findall(run.group(0))))
                chars, end = raw.decode("utf-8", "replace"), run.end()
            elif (escape := _ESCAPE.match(text, i)) is not None:
                chars, end = _unescape(escape), escape.end()
        for char in chars:
            for folded in _fold(char):
                kept.append(folded)
                spans.append((i, end))
        i = end
    return "".join(kept), spans


def _unescape(escape: re.Match[str]) -> str:
    digits = next(group for group in escape.groups() if group is not None)
    code = int(digits, 10 if escape.group(3) is not None else 16)
    return chr(code) if code < 0x110000 else ""


def _fold(char: str) -> str:
    if char.isascii():
        return _NOT_KEPT.sub("", char.lower())
    folded = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
    return _NOT_KEPT.sub("", folded.lower())


def _origins(text: str) -> list[tuple[int, int]]:
    """For each character of the fast path's `_squeeze(text)`, where it is in `text`."""
    return [(i, i + 1) for i, char in enumerate(text.lower()) if not _NOT_KEPT.match(char)]


class Redactor:
    """Finds and removes configured secrets (by variable name) in any of their forms."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Every _BLOCK-character piece of every form -> where it sits: (variable, form, offset in the form, the run
        # of the form that reveals a secret).
        self._blocks: dict[str, list[tuple[str, str, int, int]]] = {}
        for name, value in secrets.items():
            if looks_secret(value):
                for form, need in _forms(value.strip()).items():
                    for i in range(len(form) - _BLOCK + 1):
                        self._blocks.setdefault(form[i:i + _BLOCK], []).append((name, form, i, need))

    def __call__(self, text: str, *, shapes: bool = True) -> str:
        """`text` with every secret (and, with `shapes`, everything shaped like a key) replaced by `[redacted]`."""
        if self._blocks and text:
            squeezed, where = _squeeze(text)
            found = list(self._matches(squeezed))
            if found:
                origin = where if where is not None else _origins(text)
                for start, end in reversed(_merge((origin[s][0], origin[e - 1][1]) for _, s, e in found)):
                    text = text[:start] + REDACTED + text[end:]
        return _without_key_shapes(text) if shapes else text

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
        only those blocks are looked up; each hit is then grown both ways along the form. Blocks inside a run
        already found are skipped, so a text that repeats a secret costs no more than one that holds it once.
        """
        covered = 0
        for i in range(0, len(squeezed) - _BLOCK + 1, _BLOCK):
            if i + _BLOCK <= covered:
                continue
            for name, form, at, need in self._blocks.get(squeezed[i:i + _BLOCK]) or ():
                left = 0
                while at - left > 0 and i - left > 0 and squeezed[i - left - 1] == form[at - left - 1]:
                    left += 1
                right = _BLOCK
                while at + right < len(form) and i + right < len(squeezed) and squeezed[i + right] == form[at + right]:
                    right += 1
                if left + right >= min(len(form), need):
                    yield name, i - left, i + right
                    covered = max(covered, i + right)
                    break


# Key shapes are looked for inside each word-like run only, and not in runs no key is as long as: the pattern
# backtracks, and a provider's 100 KB of "sk-sk-sk-..." must not cost a minute.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_MAX_KEY_CHARS = 512


def _without_key_shapes(text: str) -> str:
    """`text` with everything shaped like a provider key replaced by `[redacted]`."""
    return _TOKEN.sub(_shape_in_word, text)


def _shape_in_word(token: re.Match[str]) -> str:
    word = token.group(0)
    return _KEY_PATTERN.sub(REDACTED, word) if len(word) <= _MAX_KEY_CHARS else word


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
