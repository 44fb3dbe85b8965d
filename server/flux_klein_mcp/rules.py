"""The skill's rules about models, tiers, aspect ratios, seeds and prompts: one table or function each.

Pure functions only; the tool descriptions quote them and the tests pin them with parametrize tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

Tier = Literal["low", "high"]
ProviderName = Literal["openrouter", "empiriolabs", "aigateway", "fluxrouter", "openai-compatible", "sandbox"]
PROVIDER_NAMES: tuple[str, ...] = get_args(ProviderName)
#: Where an OpenRouter user adds credits: named in every 402 message and in the tool descriptions.
OPENROUTER_CREDITS_URL = "https://openrouter.ai/settings/credits"
Operation = Literal["generate", "edit", "compose"]
#: The file format asked of the provider (and saved). PNG is the default everywhere; not every API offers the others.
OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
AspectRatio = Literal["1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]

ASPECT_RATIOS: tuple[AspectRatio, ...] = get_args(AspectRatio)

# The pixel size OpenRouter documents for each aspect ratio (PROVIDERS.md §1); 1024x1024 when none is given.
OPENROUTER_SIZES: Mapping[AspectRatio, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
DEFAULT_SIZE = OPENROUTER_SIZES["1:1"]

# Which aspect ratio suits which use: quoted by the tool descriptions, SKILL.md and the README.
ASPECT_RATIO_BY_USE: tuple[tuple[str, AspectRatio], ...] = (
    ("logo, icon, avatar, square post", "1:1"),
    ("phone story, reel, wallpaper", "9:16"),
    ("presentation hero, video thumbnail, desktop", "16:9"),
    ("poster, book cover, Pinterest", "2:3"),
    ("blog header, landscape photo", "3:2"),
    ("portrait social post", "4:5"),
    ("cinematic banner", "21:9"),
)

MAX_IMAGES_PER_CALL = 4
COMPOSE_MIN_IMAGES = 2
COMPOSE_MAX_IMAGES = 4
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**32 - 1

# FLUX models reject these (PROVIDERS.md §1): `modalities` gets a 404, `max_tokens` makes OpenRouter reserve
# credit and causes spurious 402s. Every FLUX payload is checked against this set before it is sent.
FLUX_FORBIDDEN_KEYS = frozenset({"modalities", "image_config", "max_tokens"})

LOW_TIER_MODEL = "black-forest-labs/flux.2-klein-4b"
HIGH_TIER_MODEL = "bytedance-seed/seedream-4.5"


@dataclass(frozen=True)
class ModelRule:
    """How one OpenRouter model wants to be asked for an image."""

    model: str
    family: Literal["flux", "seedream"]
    #: FLUX: the aspect ratio travels in the prompt text as ", aspect ratio W:H".
    aspect_ratio_in_prompt: bool
    #: Sent as `modalities` when set (never for FLUX).
    modalities: tuple[str, ...] | None
    #: Sent as `image_config.aspect_ratio` when an aspect ratio is given (never for FLUX).
    image_config: bool


MODEL_RULES: Mapping[Tier, ModelRule] = {
    "low": ModelRule(LOW_TIER_MODEL, "flux", aspect_ratio_in_prompt=True, modalities=None, image_config=False),
    "high": ModelRule(HIGH_TIER_MODEL, "seedream", aspect_ratio_in_prompt=False, modalities=("image",),
                      image_config=True),
}


def nearest_aspect_ratio(width: int, height: int) -> AspectRatio:
    """The supported aspect ratio closest to a width and height (compared as logarithms, so 2:1 and 1:2 are
    equally far from 1:1)."""
    target = math.log(width / height)

    def distance(ratio: AspectRatio) -> float:
        a, b = (int(x) for x in ratio.split(":"))
        return abs(math.log(a / b) - target)

    return min(ASPECT_RATIOS, key=distance)


def aspect_ratio_suffix(aspect_ratio: AspectRatio | None) -> str:
    return f", aspect ratio {aspect_ratio}" if aspect_ratio else ""


def prompt_text(prompt: str, aspect_ratio: AspectRatio | None, rule: ModelRule) -> str:
    """The text the model receives: for FLUX, the prompt with the aspect ratio appended."""
    if not rule.aspect_ratio_in_prompt or not aspect_ratio:
        return prompt
    suffix = aspect_ratio_suffix(aspect_ratio)
    base = prompt.rstrip().rstrip(",.;")
    return base if base.endswith(suffix) else base + suffix


def model_options(rule: ModelRule, aspect_ratio: AspectRatio | None) -> dict[str, Any]:
    """The payload keys besides `model` and `messages` that a model takes (none for FLUX)."""
    options: dict[str, Any] = {}
    if rule.modalities:
        options["modalities"] = list(rule.modalities)
    if rule.image_config and aspect_ratio:
        options["image_config"] = {"aspect_ratio": aspect_ratio}
    return options


def check_flux_payload(payload: Mapping[str, Any]) -> None:
    """Refuse to send a FLUX payload that breaks the skill's rule; a bug here must never cost money."""
    bad = sorted(FLUX_FORBIDDEN_KEYS & payload.keys())
    if bad:
        raise AssertionError(f"FLUX payloads must not carry {', '.join(bad)}")


def seeds_for(seed: int | None, n: int) -> list[int | None]:
    """One seed per image: seed, seed+1, ... (wrapping at 2**32) when a seed is given, else none."""
    if seed is None:
        return [None] * n
    return [(seed + i) % (MAX_SEED + 1) for i in range(n)]


_PARENTHETICAL = re.compile(r"\s*[(\[][^)\]]*[)\]]")
_CLAUSE_BREAK = re.compile(r"(?<=[.;:!?])\s+|,\s+|\s+-+\s+")
SHORT_PROMPT_CHARS = 200


def shorten_prompt(prompt: str, limit: int = SHORT_PROMPT_CHARS) -> str:
    """A shorter, simpler prompt for the one retry after a 502: the leading clauses, at most about half.

    Parentheticals go first, then trailing clauses; the subject, which good prompts put first, stays.
    """
    text = " ".join(prompt.split())
    simple = " ".join(_PARENTHETICAL.sub("", text).split()) or text
    target = max(1, min(limit, len(text) // 2 if len(text) > 40 else len(text)))
    kept = ""
    for clause in _CLAUSE_BREAK.split(simple):
        candidate = f"{kept}, {clause}" if kept else clause
        if len(candidate) > target:
            break
        kept = candidate
    if not kept:
        kept = _cut_at_word(simple, target)
    return kept.rstrip(" ,.;:-") or text[:target]


def _cut_at_word(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space] if space > limit // 3 else cut
