"""The server's secrets never survive redaction in the forms an accidental echo takes: verbatim, any case, split
by spaces, punctuation or invisible marks, clipped, URL/HTML/JSON/backslash-escaped, base64 or hex of its UTF-8
(property tests); a caller's text holding one is found; and nothing else is ever taken for a secret: not a value
too short or too common to be one, and not a single one of 100,000 random prompts and paths."""

from __future__ import annotations

import base64
import html
import json
import logging
import random
import re
import string
from urllib.parse import quote, unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_klein_mcp.cli.output import CleaningFilter
from flux_klein_mcp.config import SECRET_VARIABLES, redactor_for
from flux_klein_mcp.redact import FRAGMENT_CHARS, REDACTED, Redactor, counts_as_secret

TOKEN_CHARS = string.ascii_letters + string.digits + "-_"
# What a provider or the HTTP token's owner hands out: long, random, letters and digits.
SECRETS = st.text(alphabet=TOKEN_CHARS, min_size=20, max_size=80).filter(counts_as_secret)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
SOME = settings(max_examples=60, deadline=None, database=None)


def readable(text: str) -> str:
    """What a reader can still put together: the letters and digits, in order (the marker itself apart)."""
    return re.sub(r"[^a-z0-9]", "", text.replace(REDACTED, " ").lower())


def leaks(secret: str, output: str, size: int = FRAGMENT_CHARS) -> bool:
    """Any run of `size` of the secret's letters and digits is readable in `output`."""
    flat, shown = readable(output), readable(secret)
    return any(shown[i:i + size] in flat for i in range(len(shown) - size + 1))


def split(secret: str, cuts: list[int], gap: str) -> str:
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(secret)}), len(secret)]
    return gap.join(secret[a:b] for a, b in zip(bounds, bounds[1:], strict=False))


@SOME
@given(secret=SECRETS, before=TEXT, after=TEXT, case=st.sampled_from([str, str.upper, str.lower, str.swapcase]))
def test_a_secret_in_any_case_never_survives(secret, before, after, case):
    redact = Redactor({"X_API_KEY": secret})
    assert not leaks(secret, redact(before + case(secret) + after))
    assert redact.find(before + case(secret) + after) == "X_API_KEY"


# Whitespace, invisible marks (zero-width, soft hyphen, fillers, variation selector), controls and punctuation.
SEPARATORS = [" ", "\n", "\t", "\u200b", "\u200e", "\u00ad", "\u3164", "\u2800", "\ufe0f", "\x00", "\x07", "-", ".",
              "_", " | ", ":"]


@SOME
@given(secret=SECRETS, before=TEXT, after=TEXT, cuts=st.lists(st.integers(1, 79), max_size=30),
       gap=st.sampled_from(SEPARATORS))
def test_a_secret_split_by_any_separator_never_survives(secret, before, after, cuts, gap):
    shown = split(secret, cuts, gap)
    redact = Redactor({"X_API_KEY": secret})
    assert not leaks(secret, redact(before + shown + after)) and redact.find(before + shown + after) == "X_API_KEY"


@SOME
@given(secret=SECRETS, start=st.integers(0, 70), length=st.integers(FRAGMENT_CHARS, 80), before=TEXT)
def test_a_clipped_secret_never_survives(secret, start, length, before):
    piece = secret[start:start + length]
    if len(readable(piece)) >= FRAGMENT_CHARS:
        assert not leaks(secret, Redactor({"X_API_KEY": secret})(before + piece + "…"))


# One character spelled as an escape, as URL, HTML, JSON, JavaScript and C texts do.
ESCAPES = [lambda c: f"%{ord(c):02X}", lambda c: f"%{ord(c):02x}", lambda c: f"&#{ord(c)};",
           lambda c: f"&#x{ord(c):X};", lambda c: f"\\u{ord(c):04x}", lambda c: f"\\x{ord(c):02x}",
           lambda c: f"\\u{{{ord(c):x}}}"]


def unescaped(text: str) -> str:
    """`text` with every escape read back (independently of the redactor's own decoding)."""
    text = html.unescape(unquote(text))
    return re.sub(r"\\(?:u\{([0-9a-fA-F]+)\}|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2}))",
                  lambda m: chr(int(next(g for g in m.groups() if g), 16)), text)


@SOME
@given(secret=SECRETS, before=TEXT, after=TEXT, which=st.lists(st.booleans(), min_size=80, max_size=80),
       escape=st.sampled_from(ESCAPES))
def test_a_secret_escaped_a_character_at_a_time_never_survives(secret, before, after, which, escape):
    shown = "".join(escape(c) if flag else c for c, flag in zip(secret, which, strict=False))
    redact = Redactor({"X_API_KEY": secret})
    assert not leaks(secret, unescaped(redact(before + shown + after)))
    assert redact.find(before + shown + after) == "X_API_KEY"


@SOME
@given(secret=st.text(alphabet=TOKEN_CHARS + "+/=:@!$", min_size=20, max_size=60).filter(counts_as_secret))
def test_a_url_or_json_encoded_secret_never_survives(secret):
    redact = Redactor({"X_TOKEN": secret})
    for shown in (quote(secret, safe=""), json.dumps(secret), quote("\u200b".join(secret))):
        output = redact(f"url=https://x.test/?k={shown}&y=1")
        assert not leaks(secret, unescaped(output))


def encoded_core(encoded: str, before: int, secret_bytes: int, bits: int) -> str:
    """The characters of an encoding that carry the secret's bytes alone."""
    return encoded[-(-before * 8 // bits):(before + secret_bytes) * 8 // bits]


@SOME
@given(secret=SECRETS, case=st.sampled_from([str, str.upper, str.lower]), prefix=st.binary(max_size=8),
       suffix=st.binary(max_size=8), urlsafe=st.booleans(), hex_upper=st.booleans())
def test_base64_or_hex_of_a_secret_never_survives(secret, case, prefix, suffix, urlsafe, hex_upper):
    raw = case(secret).encode()
    redact = Redactor({"X_API_KEY": secret})
    encoded = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(prefix + raw + suffix).decode()
    assert not leaks(encoded_core(encoded, len(prefix), len(raw), 6), redact(f"auth {encoded} failed"), 14)
    hexed = raw.hex().upper() if hex_upper else raw.hex()
    assert not leaks(hexed, redact(f"id={hexed};"), 2 * FRAGMENT_CHARS)
    assert redact.find(encoded) == redact.find(hexed) == "X_API_KEY"


OPENROUTER_KEY = "sk-or-v1-" + "9f8e7d6c5b4a3921" * 4


@pytest.mark.parametrize("text", [
    "a red fox in the snow, 16:9",
    "/tmp/pytest-of-root/output/20261121-090507-a-red-fox.png",
    "gen-1763000000-abcdef",
    "an OpenRouter key starts with sk-or-v1-",
    b"sk-or-v1-".hex(),
    base64.b64encode(b"sk-or-v1-").decode(),
    "",
])
def test_ordinary_text_and_what_every_key_of_a_provider_shares_are_left_alone(text):
    """Found by the fifth adversarial pass: ten characters of an encoded form spell only 2-5 of the key, so the
    public `sk-or-v1-` prefix in hex or base64 was redacted. A run has to reveal FRAGMENT_CHARS of the key."""
    redact = Redactor({"OPENROUTER_API_KEY": OPENROUTER_KEY})
    assert redact(text) == text and redact.find(text) is None


@pytest.mark.parametrize(("value", "secret"), [
    (OPENROUTER_KEY, True), ("el-" + "a1b2c3d4" * 5, True), ("tok3nWith16chars", True),
    ("jDnggtkhgvWLGV3xl1C3uuIZKmxLzv0_kDTpUllQAAI", True), ("0b2ef5988bc7705a03a7442f7c1d3054", True),
    ("AbCdEfGhIjKlMnOpQrSt", True),
    ("development", False), ("flux-images", False), ("short", False), ("a-software-development-team", False),
    ("sk-or-v1-xxxxxxxxxxxxxxxxxxxxxxxx", False), ("0000000000000000000000", False),
    ("MySuperSecretToken", False), ("correcthorsebatterystaple", False),
])
def test_what_counts_as_a_secret(value, secret):
    """Only a value that can be a secret: 16 letters and digits or more, with a digit or both cases of letters,
    and no one character half of them. Words, phrases and placeholders never are."""
    assert counts_as_secret(value) is secret


def test_only_the_secrets_this_server_uses_count():
    """Found by the third hardening pass: PROJECT_TOKEN=flux-images redacted the person's own output folder, and
    APP_SECRET=development refused the prompt "a software development team"."""
    env = {"PROJECT_TOKEN": "flux-images", "APP_SECRET": "development", "GITHUB_TOKEN": "ghp_" + "Zx9" * 12,
           "FLUX_KLEIN_HTTP_TOKEN": "development", "OPENROUTER_API_KEY": OPENROUTER_KEY}
    redact = redactor_for(env)
    for text in ("/home/me/flux-images/out/a.png", "a software development team", env["GITHUB_TOKEN"]):
        assert redact(text) == text and redact.find(text) is None
    assert redact.find(f"key {OPENROUTER_KEY}") == "OPENROUTER_API_KEY"


def test_every_key_the_server_sends_is_one_of_its_secrets():
    from flux_klein_mcp.config import Settings
    from flux_klein_mcp.providers import Providers

    sent = {p.key_variable for p in Providers(Settings.from_env({})) if p.key_variable}
    assert sent and sent | {"FLUX_KLEIN_HTTP_TOKEN", "FLUX_KLEIN_HTTP_SECRET"} == set(SECRET_VARIABLES)


def random_texts(count: int, seed: int = 16) -> list[str]:
    """Prompts and paths as people write them, from a seeded generator: words (English and not), numbers, dates,
    colours, hashes, ids and token-like strings, joined by spaces or path separators."""
    rng = random.Random(seed)
    words = ("a the of red fox lighthouse coast dusk poster reading key token secret api sk or v1 el ag fx bearer "
             "café naïve 東京 の 猫 über straße — 16:9 4k hdr #ff8800 watercolour team development flux images edit "
             "sk-or-v1- gen- req- id data base64 hex output png jpg webp night 2026 émoji 🦊 ✨ neon "
             "C:\\Users\\me %20 &amp; &#233; \\n \\u00e9").split()
    pool = [*words * 40,
            *(str(rng.randrange(10 ** rng.randrange(1, 12))) for _ in range(4000)),
            *(f"{rng.getrandbits(4 * n):0{n}x}" for n in rng.choices((7, 8, 12, 32, 40, 64), k=4000)),
            *("".join(rng.choices(TOKEN_CHARS, k=rng.randrange(4, 24))) for _ in range(4000)),
            *(f"{rng.randrange(2020, 2030)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}" for _ in range(1000)),
            # Asset names shaped like keys without being any (a key-shape search took them for keys).
            *(f"{rng.choice(('sk', 'el', 'ag', 'fx', 'key', 'pk'))}-{rng.choice(words)}-"
              + "".join(rng.choices(TOKEN_CHARS[:62], k=rng.randrange(16, 30))) for _ in range(1000))]
    roots = ["/home/me", "/tmp", "C:\\Users\\me", "~/Pictures", "/var/folders/x1", "file:///srv"]
    suffixes = [".png", ".jpg", ".json", "", "?sig="]
    texts = []
    for _ in range(count):
        if rng.random() < 0.3:
            texts.append("/".join([rng.choice(roots), *rng.choices(pool, k=rng.randrange(1, 6))])
                         + rng.choice(suffixes))
        else:
            texts.append(" ".join(rng.choices(pool, k=rng.randrange(1, 25))))
    return texts


def test_no_false_positive_on_100000_random_prompts_and_paths():
    """With real-looking secrets configured, and a value too common to be one (as a placeholder key would be)."""
    rng = random.Random(7)
    redact = redactor_for({"OPENROUTER_API_KEY": OPENROUTER_KEY,
                           "EMPIRIOLABS_API_KEY": f"el-{rng.getrandbits(160):040x}",
                           "AIGATEWAY_API_KEY": "ag-" + "".join(rng.choices(TOKEN_CHARS, k=40)),
                           "FLUX_KLEIN_HTTP_TOKEN": "".join(rng.choices(TOKEN_CHARS, k=43)),
                           "FLUX_KLEIN_API_KEY": "development"})
    texts = random_texts(100_000)
    assert len(set(texts)) > 95_000
    # Joined by a line break (which no escape spans): a secret found in any one text would be found in the whole.
    whole = "\n".join(texts)
    assert redact(whole) == whole
    assert [text for text in texts[:2000] if redact.find(text)] == []


def test_nested_values_are_redacted_keys_included():
    value = Redactor({"K_API_KEY": OPENROUTER_KEY}).value(
        {"id": OPENROUTER_KEY, OPENROUTER_KEY: [1, {"m": OPENROUTER_KEY.upper()}], "n": 2.5})
    assert OPENROUTER_KEY.lower() not in json.dumps(value).lower() and value["n"] == 2.5


def test_log_records_are_cleaned_message_arguments_and_traceback():
    logger = logging.getLogger("flux_klein_mcp.test")
    handler = logging.Handler()
    records: list[str] = []
    handler.emit = lambda record: records.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(CleaningFilter(Redactor({"K_API_KEY": OPENROUTER_KEY})))
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"provider said {OPENROUTER_KEY}")
        except ValueError:
            logger.exception("reply %s was odd", OPENROUTER_KEY.upper())
    finally:
        logger.removeHandler(handler)
    assert records and not any(leaks(OPENROUTER_KEY, record) for record in records)
    assert "ValueError" in records[0]
