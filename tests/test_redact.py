"""Secrets never survive redaction, in whatever form a provider echoes them: verbatim, upper-cased, base64-, hex- or
URL-encoded, escaped a character at a time, split by any separator or cut short by a clip (property tests), and a
caller's text holding one is found."""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_klein_mcp.redact import FRAGMENT_CHARS, REDACTED, RedactingFilter, Redactor, looks_secret

TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Real keys are mostly letters and digits; a secret is compared by those alone (punctuation reveals nothing).
SECRETS = st.text(alphabet=TOKEN_CHARS, min_size=16, max_size=80).filter(lambda s: sum(c.isalnum() for c in s) >= 12)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
MANY = settings(max_examples=300, deadline=None, database=None)


def readable(text: str) -> str:
    """What a reader can still put together: the letters and digits, in order, whatever sits between them (the
    marker itself apart)."""
    return re.sub(r"[^a-z0-9]", "", text.replace(REDACTED, " ").lower())


def fragments(text: str, size: int = FRAGMENT_CHARS) -> set[str]:
    """Every run of `size` letters and digits, lower-cased: what must not be readable in the output."""
    text = readable(text)
    return {text[i:i + size] for i in range(len(text) - size + 1)}


def leaks(secret: str, output: str) -> bool:
    flat = readable(output)
    return any(piece in flat for piece in fragments(secret))


@MANY
@given(secret=SECRETS, before=TEXT, after=TEXT)
def test_a_verbatim_or_upper_cased_secret_never_survives(secret, before, after):
    redact = Redactor({"X_API_KEY": secret})
    for shown in (secret, secret.upper(), secret.lower()):
        assert not leaks(secret, redact(before + shown + after))


@MANY
@given(secret=SECRETS, before=TEXT, after=TEXT, cuts=st.lists(st.integers(1, 79), max_size=6),
       gap=st.sampled_from([" ", "\n", "\t", "  ", "\u200b"]))
def test_a_secret_split_by_whitespace_never_survives(secret, before, after, cuts, gap):
    pieces, last = [], 0
    for cut in sorted({c for c in cuts if c < len(secret)}):
        pieces.append(secret[last:cut])
        last = cut
    pieces.append(secret[last:])
    output = Redactor({"X_API_KEY": secret})(before + gap.join(pieces) + after)
    assert not leaks(secret, output.replace("\u200b", ""))


@MANY
@given(secret=SECRETS, start=st.integers(0, 70), length=st.integers(FRAGMENT_CHARS, 80), before=TEXT)
def test_a_clipped_or_partial_secret_never_survives(secret, start, length, before):
    piece = secret[start:start + length]
    if len(piece) < FRAGMENT_CHARS:
        return
    output = Redactor({"X_API_KEY": secret})(before + piece + "…")
    assert not leaks(secret, output)


@MANY
@given(secret=SECRETS, prefix=st.binary(max_size=12), suffix=st.binary(max_size=12),
       urlsafe=st.booleans())
def test_a_base64_encoded_secret_never_survives(secret, prefix, suffix, urlsafe):
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    encoded = encode(prefix + secret.encode() + suffix).decode()
    output = Redactor({"X_API_KEY": secret})(f"auth {encoded} failed")
    # The characters that encode only the secret's own bytes must all be gone.
    start, end = -(-len(prefix) * 8 // 6), (len(prefix) + len(secret)) * 8 // 6
    core = encoded[start:end]
    assert not any(piece in readable(output) for piece in fragments(core))


# What a provider may put between a key's characters: whitespace, invisible, filler, control and punctuation.
SEPARATORS = [" ", "\n", "\u200b", "\u00ad", "\u3164", "\uffa0", "\u2800", "\x00", "\x07", "\x7f", "-", ".", "_",
              "\ufe0f"]
# One character spelled as an escape, as URL, HTML, JSON, JavaScript and C texts do.
ESCAPES = [lambda c: f"%{ord(c):02X}", lambda c: f"%{ord(c):02x}", lambda c: f"&#{ord(c)};",
           lambda c: f"&#{ord(c):05d};", lambda c: f"&#x{ord(c):X};", lambda c: f"&#X{ord(c):04x};",
           lambda c: f"\\u{ord(c):04x}", lambda c: f"\\u{ord(c):04X}", lambda c: f"\\x{ord(c):02x}",
           lambda c: f"\\u{{{ord(c):x}}}"]


def unescaped(text: str) -> str:
    """`text` with every escape read back (independently of the redactor's own decoding)."""
    text = html.unescape(unquote(text))
    return re.sub(r"\\(?:u\{([0-9a-fA-F]+)\}|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2}))",
                  lambda m: chr(int(next(g for g in m.groups() if g), 16)), text)


@MANY
@given(secret=SECRETS, before=TEXT, after=TEXT, cuts=st.lists(st.integers(1, 79), min_size=1, max_size=30),
       gap=st.sampled_from(SEPARATORS))
def test_a_secret_split_by_any_separator_never_survives(secret, before, after, cuts, gap):
    pieces, last = [], 0
    for cut in sorted({c for c in cuts if c < len(secret)}):
        pieces.append(secret[last:cut])
        last = cut
    pieces.append(secret[last:])
    redact = Redactor({"X_API_KEY": secret})
    shown = gap.join(pieces)
    assert not leaks(secret, redact(before + shown + after)) and redact.find(before + shown + after) == "X_API_KEY"


@MANY
@given(secret=SECRETS, before=TEXT, after=TEXT, which=st.lists(st.booleans(), min_size=80, max_size=80),
       escape=st.sampled_from(ESCAPES), upper=st.booleans())
def test_a_secret_escaped_a_character_at_a_time_never_survives(secret, before, after, which, escape, upper):
    shown = "".join(escape(c) if flag else c for c, flag in zip(secret.upper() if upper else secret, which,
                                                                           strict=False))
    redact = Redactor({"X_API_KEY": secret})
    assert not leaks(secret, unescaped(redact(before + shown + after)))
    assert redact.find(before + shown + after) == "X_API_KEY"


@MANY
@given(secret=SECRETS, case=st.sampled_from(["same", "upper", "lower"]),
       encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16-be"]), hex_upper=st.booleans(),
       prefix=st.binary(max_size=5))
def test_a_hex_or_wide_base64_encoded_secret_never_survives(secret, case, encoding, hex_upper, prefix):
    shown_secret = {"same": secret, "upper": secret.upper(), "lower": secret.lower()}[case]
    raw = shown_secret.encode(encoding)
    hexed = raw.hex().upper() if hex_upper else raw.hex()
    redact = Redactor({"X_API_KEY": secret})
    assert not any(piece in readable(redact(f"id={hexed};")) for piece in fragments(hexed))
    encoded = base64.b64encode(prefix + raw).decode()
    start, end = -(-len(prefix) * 8 // 6), (len(prefix) + len(raw)) * 8 // 6
    assert not any(piece in readable(redact(f"auth {encoded} failed")) for piece in fragments(encoded[start:end]))


@MANY
@given(secret=st.text(alphabet=TOKEN_CHARS + "+/=:@!$", min_size=16, max_size=60).filter(looks_secret))
def test_a_url_or_json_encoded_secret_never_survives(secret):
    redact = Redactor({"X_TOKEN": secret})
    for shown in (quote(secret, safe=""), json.dumps(secret)):
        output = redact(f"url=https://x.test/?k={shown}&y=1")
        assert not leaks(shown.strip('"'), output) and not leaks(secret, output)


@MANY
@given(secret=SECRETS, before=TEXT, after=TEXT, form=st.sampled_from(["plain", "upper", "base64", "split"]))
def test_a_text_holding_a_secret_in_any_form_is_found(secret, before, after, form):
    shown = {"plain": secret, "upper": secret.upper(), "base64": base64.b64encode(secret.encode()).decode(),
             "split": " ".join(secret[i:i + 7] for i in range(0, len(secret), 7))}[form]
    assert Redactor({"OPENROUTER_API_KEY": secret}).find(before + shown + after) == "OPENROUTER_API_KEY"


@pytest.mark.parametrize("text", [
    "a red fox in the snow, 16:9",
    "/tmp/pytest-of-root/output/20261121-090507-a-red-fox.png",
    "gen-1763000000-abcdef",
    "",
])
def test_ordinary_text_is_left_alone(text):
    redact = Redactor({"OPENROUTER_API_KEY": "sk-or-v1-" + "9f8e7d6c5b4a3921" * 4})
    assert redact(text) == text and redact.find(text) is None


@pytest.mark.parametrize(("value", "guarded"), [
    ("sk-or-v1-0123456789abcdef", True), ("tok3nWith16chars", True),
    ("short", False), ("/run/secrets/openrouter_token", False), ("two words here ok", False),
])
def test_which_values_are_guarded_as_secrets(value, guarded):
    assert looks_secret(value) is guarded


def test_key_shaped_strings_are_removed_even_when_not_configured():
    assert Redactor({})("echo sk-proj-ABCDEFGHIJKLMNOPQRSTUV rest") == f"echo {REDACTED} rest"


def test_nested_values_are_redacted_keys_included():
    secret = "sk-or-v1-" + "0123456789abcdef" * 4
    value = Redactor({"K_API_KEY": secret}).value({"id": secret, secret: [1, {"m": secret.upper()}], "n": 2.5})
    assert secret.lower() not in json.dumps(value).lower() and value["n"] == 2.5


def test_log_records_are_redacted_message_arguments_and_traceback(caplog):
    secret = "sk-or-v1-" + "0123456789abcdef" * 4
    logger = logging.getLogger("flux_klein_mcp.test")
    handler = logging.Handler()
    records: list[str] = []
    handler.emit = lambda record: records.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter(Redactor({"K_API_KEY": secret})))
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"provider said {secret}")
        except ValueError:
            logger.exception("reply %s was odd", secret.upper())
    finally:
        logger.removeHandler(handler)
    assert records and all(secret[12:30].lower() not in r.lower() for r in records)
    assert "ValueError" in records[0]


def test_what_every_key_of_a_provider_shares_is_not_the_key():
    """Found by the fifth adversarial pass: ten characters of an encoded form spell only 2-5 of the key, so the
    public `sk-or-v1-` prefix in hex or base64 was redacted (and a prompt holding it refused). A run now has to
    reveal FRAGMENT_CHARS of the key, in any form."""
    redact = Redactor({"OPENROUTER_API_KEY": "sk-or-v1-" + "9f8e7d6c5b4a3921" * 4})
    for text in (b"sk-or-v1-".hex(), base64.b64encode(b"sk-or-v1-").decode(), "sk-".encode("utf-16-be").hex(),
                 "an OpenRouter key starts with sk-or-v1-"):
        assert redact(text, shapes=False) == text and redact.find(text) is None
    assert redact.find(("sk-or-v1-" + "9f8e7d6c5b4a3921").encode().hex()) == "OPENROUTER_API_KEY"


def test_key_shapes_in_a_huge_run_are_not_searched():
    """Found by the fifth adversarial pass: 100 KB of "sk-sk-..." made the key-shape pattern backtrack for 46 s.
    No key is that long, so such a run is left to the exact search, which is linear."""
    text = "sk-" * 34_000
    assert Redactor({"K_API_KEY": "sk-or-v1-" + "9f8e7d6c5b4a3921" * 4})(text) == text
    assert Redactor({})("x sk-proj-ABCDEFGHIJKLMNOPQRSTUV y") == f"x {REDACTED} y"
