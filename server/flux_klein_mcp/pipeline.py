"""The path every request takes, for the MCP tools and the CLI alike:

check → choose provider → prepare inputs → plan calls → send (in parallel, under the error policy) → save.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio

from . import pricing
from .checks import check_capabilities, refuse_secrets
from .errors import AuthFailed, BadReply, CreditsExhausted, FluxKleinError, ProviderError, StorageError
from .images import ImageInfo
from .inputs import InputPolicy, resolve_inputs
from .policy import send_with_policy
from .providers import Call, Provider, Reply
from .providers.base import Gate, Link
from .request import ImageRequest, InputImage
from .rules import nearest_aspect_ratio
from .runtime import Runtime
from .saving import FORMAT_NAMES, SIMULATED, Pending, begin, finish, sidecar_fields
from .spend import Accountant, Bill, Charge, Consent, Delivered, Tab, quote_for, require_consent
from .store import SavedFile, Store, file_stem, name_stem, timestamp
from .words import arg, plural

log = logging.getLogger("flux_klein_mcp")

#: Where a GeneratedImage's files go until `saving.finish` has named them.
_NOT_YET = SavedFile(Path(), Path(), 0)
#: `report(done, total, message)`: progress for the client, as each image finishes.
Report = Callable[[float, float, str], Awaitable[None]]


async def _no_report(done: float, total: float, message: str) -> None:
    return None


@dataclass(frozen=True)
class GeneratedImage:
    saved: SavedFile
    info: ImageInfo
    seed: int | None
    prompt_sent: str
    cost_usd: float | None
    #: "provider", "price list", "sandbox", or None when the provider reports no cost and publishes no price.
    cost_source: str | None
    generation_id: str | None
    #: The JPEG thumbnail the model sees, made from the pixels decoded to check the image (None: thumbnails off).
    thumbnail: bytes | None = field(repr=False)

    def delivered(self) -> Delivered:
        """What the ledger needs to know of this image."""
        return Delivered(self.cost_usd, self.cost_source, self.generation_id, str(self.saved.path))

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.saved.path),
            "uri": self.saved.uri,
            "width": self.info.width,
            "height": self.info.height,
            "format": self.info.extension,
            "bytes": self.saved.bytes,
            "seed": self.seed,
            "sidecar": str(self.saved.sidecar),
        }


@dataclass
class Outcome:
    request: ImageRequest
    provider: str
    model: str
    images: list[GeneratedImage]
    prompt_sent: str
    cost_usd: float | None
    would_cost_usd: float | None = None
    notes: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: spent_session_usd, spent_today_usd and (with a budget) budget_left_usd, after this call settled.
    spend: dict[str, float] = field(default_factory=dict)

    def discard(self) -> None:
        """Remove every file this outcome saved (its call was cancelled before the result was delivered)."""
        for image in self.images:
            Store.discard(image.saved)

    def summary(self) -> dict[str, Any]:
        """The JSON object the tools return first, the CLI prints, and the tests read."""
        out: dict[str, Any] = {
            "images": [image.summary() for image in self.images],
            "model": self.model,
            "provider": self.provider,
            "tier": self.request.tier,
            "cost_usd": self.cost_usd,
            "prompt_sent": self.prompt_sent,
            "aspect_ratio": self.request.aspect_ratio,
        }
        if self.would_cost_usd is not None:
            out["would_cost_usd"] = self.would_cost_usd
        if self.failed:
            out["failed"] = self.failed
        out.update(self.spend)
        if self.notes:
            out["notes"] = self.notes
        return out


async def run(
    request: ImageRequest,
    runtime: Runtime,
    *,
    root_dirs: Iterable[Path] = (),
    report: Report = _no_report,
    consent: Consent | None = None,
) -> Outcome:
    """Make the images a request asks for. Raises a `FluxKleinError` with a user-facing message on failure.

    `consent` is the person's answer for a high-tier call (see `spend.consent`), asked by the caller.
    """
    settings = runtime.settings
    refuse_secrets(request, settings.redact)
    provider = runtime.providers.choose(request.provider)
    check_capabilities(provider, request, runtime.providers)
    require_consent(settings.high_tier, request.tier, provider.name, consent)
    quote = quote_for(provider, request.tier, request.n)

    def prepare() -> tuple[tuple[InputImage, ...], Tab]:
        """One worker job before the request (each hop to a thread and back costs the call time): the folder that
        must take the image, the inputs, then the budget's reservation, each refusing before any spend."""
        folder = runtime.store.ready()
        dirs = [folder, *settings.input_dirs, *([] if runtime.remote else root_dirs)]
        policy = InputPolicy.build(settings.cwd, dirs, settings.max_input_bytes, remote=runtime.remote)
        parameter = "images" if request.operation == "compose" else "image"
        inputs = resolve_inputs(request.image_refs, policy, parameter)
        return inputs, runtime.spend.reserve(quote)  # a budget it would pass refuses it before any request

    inputs, tab = await runtime.in_worker(prepare)
    request = replace(request, inputs=inputs)
    notes: list[str] = []
    source = inputs[0] if request.operation == "edit" and inputs else None
    if request.aspect_ratio is None and source is not None and source.width and source.height:
        # An edit keeps its input's shape unless told otherwise (an https input's size is unknown here).
        request = replace(request, aspect_ratio=nearest_aspect_ratio(source.width, source.height))
        notes.append(f"aspect_ratio {request.aspect_ratio} was taken from the input image "
                     f"({source.width}x{source.height}); pass {arg('aspect_ratio')} to choose another.")
    batch = _Batch(request, provider, runtime, report, notes)
    outcome: Outcome | None = None
    try:
        await report(0, request.n, f"Asking {provider.label} for {plural(request.n, 'image')}")
        outcome = await batch.run(provider.plan(request))
    finally:
        # Settled to what the provider made (kept or not); whatever else was reserved is freed. With the standing
        # the result reports, in the same worker job, shielded: a cancel here still settles.
        with anyio.CancelScope(shield=True):
            charges = batch.bill.charges([image.delivered() for image in batch.kept()], tab.quote, settings.redact)
            warning, standing = await runtime.in_worker(_settle, runtime.spend, tab, charges, outcome is not None)
    assert outcome is not None  # (batch.run returned, or its exception left above)
    if warning:
        outcome.notes.append(warning)
    outcome.spend = standing
    return outcome


def _settle(spend: Accountant, tab: Tab, charges: list[Charge], succeeded: bool) -> tuple[str | None, dict[str, Any]]:
    """Settle the call's tab; after a call that made images, also what has been spent (for the result)."""
    warning = spend.settle(tab, charges)
    return warning, spend.standing(tab.quote) if succeeded else {}


class _Batch:
    """One tool call's provider requests, run in parallel; saves each image as it arrives."""

    def __init__(
        self, request: ImageRequest, provider: Provider, runtime: Runtime, report: Report, notes: list[str]
    ) -> None:
        self.request = request
        self.notes = notes
        self.provider = provider
        self.runtime = runtime
        self.report = report
        self.when = runtime.clock()
        self.stem = name_stem(request.filename, request.prompt)
        self.results: list[GeneratedImage | None] = [None] * request.n
        self.replies: list[Reply] = []
        self.failures: list[ProviderError] = []
        self.fatal: FluxKleinError | None = None
        self.done = 0
        self.bill = Bill()

    async def run(self, calls: list[Call]) -> Outcome:
        try:
            async with anyio.create_task_group() as group:
                for call in calls:
                    group.start_soon(self._one, call, group.cancel_scope)
        except anyio.get_cancelled_exc_class():
            # The client cancelled: it will never see these files, so none are left behind (they were billed).
            with anyio.CancelScope(shield=True):
                for image in self._saved():
                    await self.runtime.in_worker(Store.discard, image.saved)
                self.bill.discarded += [image.delivered() for image in self._saved()]
                self.results = [None] * self.request.n
            raise
        return self._outcome()

    def kept(self) -> list[GeneratedImage]:
        """The images saved and left in place (a fatal error keeps those that finished; a cancel keeps none)."""
        return list(self._saved())

    async def _one(self, call: Call, scope: anyio.CancelScope) -> None:
        reply, saved = None, 0
        gate = Gate(self.runtime.replies)
        try:
            kept: list[GeneratedImage | Exception] = []  # what `_keep` did, where the provider parses in a worker
            link = Link(self.runtime.http, self._call_progress(call), self.runtime.sleep, self.runtime.in_worker, gate,
                        functools.partial(self._keep, call, kept))
            try:
                reply = (await send_with_policy(self.provider, call, link)).clipped()
            except anyio.get_cancelled_exc_class():
                if not kept:  # (a reply that came back is booked with what it made, as the call is rolled back)
                    self._unanswered(call)
                raise
            self.replies.append(reply)
            for k, data in enumerate(reply.images[: call.count]):
                if k < len(kept):
                    done_there = kept[k]
                    if isinstance(done_there, Exception):
                        raise done_there
                    image = done_there
                else:  # Shielded: a save that started finishes, so a cancellation can roll it back cleanly.
                    with anyio.CancelScope(shield=True):
                        image = await self.runtime.in_worker(self._save, call, k, reply, data)
                self.results[call.index + k] = image
                saved += 1
                self.done += 1
                await self.report(self.done, self.request.n, f"Saved {image.saved.path.name}")
            if len(reply.images) < call.count:
                missing = call.count - len(reply.images)
                self.failures.append(BadReply(f"{self.provider.label} returned {plural(missing, 'image')} fewer than "
                                              "asked.", provider=self.provider.label))
        except (StorageError, ProviderError) as exc:
            if isinstance(exc, ProviderError) and exc.charged:
                self.bill.failed.append(exc.charged)
            if isinstance(exc, StorageError) or exc.fatal:
                self.fatal = self.fatal or exc
                scope.cancel()
            else:
                self.failures.append(exc)
        except Exception:
            # A reply shaped in a way nobody foresaw must still end in a message the model can act on.
            log.exception("Unexpected failure handling a %s reply", self.provider.label)
            self.failures.append(BadReply(
                f"{self.provider.label} sent a reply this server could not understand. Nothing was saved from it; "
                "try again, and report it if it keeps happening.", provider=self.provider.label))
        finally:
            gate.leave()  # this reply is saved (or given up): the next one may come in
            if reply is not None and reply.billed_images > saved:  # made and billed, but unusable or not kept
                self.bill.unsaved.append((reply, reply.billed_images - saved))

    def _keep(self, call: Call, kept: list[GeneratedImage | Exception], reply: Reply) -> None:
        """`Link.keep`: save a parsed reply's images in the worker thread that parsed it (one job, not two). Each is
        recorded at once, so a cancel from here on rolls it back with the rest; the first failure stops the saving
        and is raised again in `_one`, where each kind of failure is handled."""
        reply = reply.clipped()
        kept.clear()
        begun: list[tuple[Pending, GeneratedImage]] = []
        failure: Exception | None = None
        for k, data in enumerate(reply.images[: call.count]):  # all written and synced at once, in the disk threads
            try:
                begun.append(self._begin(call, k, reply, data))
            except Exception as exc:
                failure = exc
                break
        for i, (pending, image) in enumerate(begun):  # then each decoded and named in turn
            try:
                saved, info, thumbnail = finish(pending, self.runtime, self.provider.label)
            except Exception as exc:
                for later, _ in begun[i + 1:]:
                    later.abandon()
                kept.append(exc)
                return
            image = replace(image, saved=saved, info=info, thumbnail=thumbnail)
            self.results[call.index + i] = image
            kept.append(image)
        if failure is not None:
            kept.append(failure)

    def _unanswered(self, call: Call) -> None:
        """A request cancelled after it was sent may still be charged: booked at its worst case. Not when a sibling
        found the key out of credits or rejected (the provider charges nothing then), nor on the free sandbox."""
        if not isinstance(self.fatal, CreditsExhausted | AuthFailed):
            self.bill.unanswered += call.count

    def _call_progress(self, call: Call) -> Callable[[float, str], Awaitable[None]]:
        async def progress(fraction: float, message: str) -> None:
            await self.report(self.done + fraction * call.count, self.request.n, message)

        return progress

    def _save(self, call: Call, k: int, reply: Reply, data: bytes) -> GeneratedImage:
        pending, image = self._begin(call, k, reply, data)
        saved, info, thumbnail = finish(pending, self.runtime, self.provider.label)
        return replace(image, saved=saved, info=info, thumbnail=thumbnail)

    def _begin(self, call: Call, k: int, reply: Reply, data: bytes) -> tuple[Pending, GeneratedImage]:
        """Start keeping one image (`saving.begin`); with what is known of it so far (its files come with `finish`)."""
        index = call.index + k
        seed = call.seed if call.count == 1 else None  # a batch shares one request: no per-image seed
        costs: list[tuple[float | None, str | None]] = []

        def sidecar(info: ImageInfo) -> dict[str, Any]:
            costs.append(self._cost(reply, info))
            return sidecar_fields(self.request, reply, self.provider.name, info, seed, *costs[0],
                                  timestamp(self.runtime.clock()))

        stem = file_stem(self.when, self.stem, index + 1 if self.request.n > 1 else None)
        pending = begin(data, sidecar, stem, self.runtime, self.provider.label)
        self._note_format(pending.info)
        image = GeneratedImage(_NOT_YET, pending.info, seed, reply.prompt_sent, *costs[0], reply.generation_id, None)
        return pending, image

    def _note_format(self, info: ImageInfo) -> None:
        """Say so (once) when the provider answered in another format than the one asked for: saved as it came."""
        asked = self.request.output_format
        if info.format != FORMAT_NAMES[asked]:
            note = (f"{self.provider.label} returned {info.format} although {arg('output_format')} {asked!r} was "
                    f"asked for (its API may ignore the format); the image was saved as it came, as .{info.extension}.")
            if note not in self.notes:
                self.notes.append(note)

    def _cost(self, reply: Reply, info: ImageInfo) -> tuple[float | None, str | None]:
        if reply.simulated:
            return 0.0, "sandbox"
        if reply.reported_cost_usd is not None:
            return round(reply.reported_cost_usd / max(1, reply.billed_images), 6), "provider"
        price = pricing.list_price(self.provider.name, reply.model, info.width, info.height)
        return price, (None if price is None else "price list")

    def _saved(self) -> Iterator[GeneratedImage]:
        return (image for image in self.results if image is not None)

    def _outcome(self) -> Outcome:
        images = list(self._saved())
        if self.fatal is not None:
            raise _with_saved_note(self.fatal, images)
        if not images:
            raise _all_failed(self.failures, self.request.n)
        first = self.replies[0]
        notes = list(dict.fromkeys(self.notes + [note for reply in self.replies for note in reply.notes]))
        if self.runtime.store.note:
            notes.append(self.runtime.store.note)
        if self.request.seed is not None and not self.provider.capabilities.seed:
            notes.append(f"{self.provider.label} does not take a seed: it was not sent, so these images cannot be "
                         f"reproduced by seed. Use {arg('provider', 'openrouter')} or {arg('provider', 'empiriolabs')} "
                         "for seeded results.")
        cost = pricing.total([image.cost_usd for image in images])
        if cost is None:
            notes.append(
                f"cost_usd is null: {self.provider.label} did not report a cost and publishes no fixed price we "
                "know for this model; see its dashboard for the charge."
            )
        would_cost = None
        if first.simulated:
            would_cost = pricing.total(
                [pricing.list_price(SIMULATED, first.model, i.info.width, i.info.height) for i in images]
            )
            notes.append("Sandbox: offline placeholders, nothing was sent and nothing was charged.")
        return Outcome(
            request=self.request,
            provider=self.provider.name,
            model=first.model,
            images=images,
            prompt_sent=images[0].prompt_sent,
            cost_usd=cost,
            would_cost_usd=would_cost,
            notes=notes,
            failed=[f.raw for f in self.failures],  # (both audiences' words: each exit renders its own)
        )


def _with_saved_note(error: FluxKleinError, images: list[GeneratedImage]) -> FluxKleinError:
    if images:
        paths = ", ".join(str(image.saved.path) for image in images)
        error.args = (f"{error.raw} ({plural(len(images), 'image')} finished before this and "
                      f"{'were' if len(images) > 1 else 'was'} saved: {paths}.)",)
    return error


def _all_failed(failures: list[ProviderError], n: int) -> FluxKleinError:
    if not failures:  # pragma: no cover - a call either saves an image or records why not
        return BadReply("The provider returned no image. Nothing was saved; try again.", provider="?")
    first = failures[0]
    if n > 1:
        first.args = (f"All {n} images failed. {first.raw}",)
    return first
