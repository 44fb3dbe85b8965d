"""One image request, checked before anything is sent: the same object for the MCP tools and the CLI."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from .errors import InputError
from .rules import (
    ASPECT_RATIOS,
    COMPOSE_MAX_IMAGES,
    COMPOSE_MIN_IMAGES,
    MAX_IMAGES_PER_CALL,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    OUTPUT_FORMATS,
    AspectRatio,
    Operation,
    OutputFormat,
    Tier,
)
from .words import arg, either, tool

TIERS: tuple[Tier, ...] = ("low", "high")


@dataclass(frozen=True)
class InputImage:
    """An input image as it will be sent: a `data:` URL (local files, cleaned) or an `https://` URL (as given)."""

    url: str
    #: What the caller passed, for the sidecar; a data URL is abbreviated.
    source: str
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source}
        if self.mime_type:
            out.update(mime_type=self.mime_type, width=self.width, height=self.height)
        return out


@dataclass(frozen=True)
class ImageRequest:
    operation: Operation
    prompt: str
    aspect_ratio: AspectRatio | None = None
    n: int = 1
    seed: int | None = None
    tier: Tier = "low"
    filename: str | None = None
    provider: str | None = None
    #: The image references exactly as the caller gave them (paths, URIs, URLs).
    image_refs: tuple[str, ...] = ()
    output_format: OutputFormat = "png"
    #: Filled in by `inputs.resolve_inputs` before the request is sent.
    inputs: tuple[InputImage, ...] = field(default=())

    def __post_init__(self) -> None:
        check_request(self)


def check_request(req: ImageRequest) -> None:
    """Refuse a bad request before any spend, naming the parameter and the accepted values."""
    texts = (("prompt", req.prompt), ("filename", req.filename), *(("image", ref) for ref in req.image_refs))
    for parameter, text in texts:
        if isinstance(text, str) and any("\ud800" <= char <= "\udfff" for char in text):
            # (Never quoted back: a lone surrogate cannot be encoded, and the whole reply would be lost.)
            raise InputError(f"{arg(parameter)} contains an invalid character (an unpaired UTF-16 surrogate). "
                             "Remove it.")
    if not isinstance(req.prompt, str) or not any(_visible(char) for char in req.prompt):
        raise InputError(f"{arg('prompt')} is empty. Describe the image you want (subject first, then style and "
                         "setting).")
    if len(req.prompt) > MAX_PROMPT_CHARS:
        raise InputError(
            f"{arg('prompt')} is {len(req.prompt)} characters; the limit is {MAX_PROMPT_CHARS}. "
            "Shorten it: keep the subject, style and the details that matter most."
        )
    if req.aspect_ratio is not None and req.aspect_ratio not in ASPECT_RATIOS:
        raise InputError(f"{arg('aspect_ratio')} {req.aspect_ratio!r} is not supported. Use one of: "
                         f"{', '.join(ASPECT_RATIOS)}.")
    if isinstance(req.n, bool) or not isinstance(req.n, int) or not 1 <= req.n <= MAX_IMAGES_PER_CALL:
        raise InputError(f"{arg('n')} must be a whole number from 1 to {MAX_IMAGES_PER_CALL}, got {req.n!r}.")
    if req.n > 1 and req.operation != "generate":
        raise InputError(f"{arg('n')} applies to {tool('generate')} only; {either('call', 'run')} "
                         f"{tool(req.operation)} once per variation.")
    if req.seed is not None and (isinstance(req.seed, bool) or not 0 <= req.seed <= MAX_SEED):
        raise InputError(f"{arg('seed')} must be a whole number from 0 to {MAX_SEED}, got {req.seed!r}.")
    if req.tier not in TIERS:
        raise InputError(
            f"{arg('tier')} must be 'low' or 'high', got {req.tier!r}. Use 'low' "
            + either("unless the user asked for a final.", "for drafts.")
        )
    if req.output_format not in OUTPUT_FORMATS:
        raise InputError(f"{arg('output_format')} must be one of: {', '.join(OUTPUT_FORMATS)}, got "
                         f"{req.output_format!r}.")
    _check_image_count(req.operation, req.image_refs)


def _visible(char: str) -> bool:
    """A character that shows: not whitespace, not a control or format character (zero-width spaces and marks)."""
    return not char.isspace() and unicodedata.category(char) not in ("Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me")


def _check_image_count(operation: Operation, refs: tuple[str, ...]) -> None:
    if any(not isinstance(r, str) or not r.strip() for r in refs):
        raise InputError("An image reference is empty. Give a file path, a file:// URI, an https:// URL or a data URL.")
    if operation == "generate" and refs:
        raise InputError(f"{tool('generate')} takes no input images; use {tool('edit')} (one) or {tool('compose')} "
                         "(2-4).")
    if operation == "edit" and len(refs) != 1:
        raise InputError(f"{tool('edit')} takes exactly one image; to combine several use {tool('compose')}.")
    if operation == "compose" and not COMPOSE_MIN_IMAGES <= len(refs) <= COMPOSE_MAX_IMAGES:
        raise InputError(
            either(f"images must hold {COMPOSE_MIN_IMAGES} to {COMPOSE_MAX_IMAGES} references",
                   f"compose needs {COMPOSE_MIN_IMAGES} to {COMPOSE_MAX_IMAGES} --image options")
            + f", got {len(refs)}. "
            + (f"For a single image use {tool('edit')}." if len(refs) == 1 else "Pick the most important ones.")
        )
