"""What is refused before anything is sent: a request that holds a configured secret, and what the chosen provider
cannot do (an operation, a tier, a file format), each naming what to do instead."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import InputError
from .providers import Provider
from .redact import Redactor
from .request import ImageRequest
from .store import ascii_fold
from .words import arg, either, item


def refuse_secrets(request: ImageRequest, redact: Redactor) -> None:
    """Refuse, before anything is sent or saved, a request whose own text holds a configured secret: it would go to
    the provider and into the sidecar, the file name and the result."""
    refs = request.image_refs
    texts = [(arg("prompt"), request.prompt), (arg("filename"), request.filename or "")]
    texts += [(item("images", i) if len(refs) > 1 else arg("image"),
               ref.split(",", 1)[0] if ref.lstrip()[:5].lower() == "data:" else ref) for i, ref in enumerate(refs)]
    # Also as the file name will spell them: folding to ASCII drops emoji and accents a key may be padded with.
    texts += [(parameter, ascii_fold(text)) for parameter, text in texts[:2]]
    for parameter, text in texts:
        variable = redact.find(text)
        if variable is not None:
            raise InputError(f"{parameter} contains the value of {variable}, a secret; nothing was sent or saved. "
                             f"Remove it{either(' from the call', '')} (never put keys in prompts, file names or "
                             "image references).")


def check_capabilities(provider: Provider, request: ImageRequest, providers: Iterable[Provider]) -> None:
    """Refuse, before any spend, what the provider cannot do, naming the providers that can."""
    caps = provider.capabilities

    def able(p: Provider) -> bool:
        return bool(getattr(p.capabilities, request.operation))

    if not able(provider):
        others = [p.name for p in providers if able(p) and p.name != "sandbox"]
        raise InputError(f"{provider.label} cannot {request.operation} images. Use "
                         f"{' or '.join(arg('provider', n) for n in others)} for this call.")
    if request.tier not in caps.tiers:
        others = [p.name for p in providers if request.tier in p.capabilities.tiers and p.name != "sandbox"]
        raise InputError(
            f"tier {request.tier!r} is not offered by {provider.label}; it offers {', '.join(caps.tiers)}. "
            f"Use {arg('tier', 'low')}, or {' or '.join(arg('provider', n) for n in others)} for the high tier."
        )
    wanted = request.output_format
    if wanted not in caps.formats:
        others = [p.name for p in providers if wanted in p.capabilities.formats and p.name != "sandbox"]
        raise InputError(
            f"{arg('output_format', wanted)} is not offered by {provider.label}: its API takes no choice of file "
            f"format (its images come as PNG). Nothing was sent. Leave {arg('output_format')} out for PNG, or use "
            f"{' or '.join(arg('provider', n) for n in others)} for {wanted.upper()} files."
        )
