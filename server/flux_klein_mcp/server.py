"""MCP wiring only: the image tools and get_usage, their descriptions and annotations, and the lifespan. The MCP
Apps view (its resource, its app-only tools and the file reader) is wired in view.py.

The descriptions are written for the model: they carry the skill's rules because the model reads them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import anyio
import anyio.lowlevel
from mcp.server import MCPServer
from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, ListRoots, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolResult,
    ListRootsResult,
    TextContent,
    ToolAnnotations,
)
from pydantic import BeforeValidator, Field

from . import __version__, people, shutdown, view
from .asking import Approval, GenerateConsent, OneImageConsent, consent_of
from .config import Settings, redactor_for
from .errors import ConfigError, FluxKleinError, InputError
from .remote.once import answered_round, note_answered_rounds, use_approval
from .remote.secret import request_state_security
from .remote.shared import LedgerShared
from .request import ImageRequest
from .rules import (
    ASPECT_RATIO_BY_USE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    OPENROUTER_CREDITS_URL,
    PROVIDER_NAMES,
    AspectRatio,
    OutputFormat,
    ProviderName,
    Tier,
)
from .runtime import Runtime
from .sdk import FluxServer
from .spend import Consent
from .view import VIEW
from .words import for_mcp, mcp_json

# Deferred to the first call, so start-up and tools/list never pay for them: the pipeline (httpx, its TLS context,
# the providers), Pillow, and the result builder.
if TYPE_CHECKING:
    from . import pipeline
    from .providers.base import Sleep

log = logging.getLogger("flux_klein_mcp")

_USE_TABLE = "; ".join(f"{use} {ratio}" for use, ratio in ASPECT_RATIO_BY_USE)

RULES = f"""
Rules:
- tier="low" (FLUX.2 klein 4B: about $0.014 an image, a few seconds) is for ALL drafts, explorations and \
iterations. Use tier="high" (Seedream 4.5, $0.04) only when the user explicitly asks for a final production \
deliverable. The person approves each high-tier call (the server asks them); if they decline, or cannot be \
asked, do not retry or work around it: continue on the low tier or tell the user.
- Give the aspect ratio in aspect_ratio, never in the prompt text (it is added to the prompt for you): {_USE_TABLE}.
- If the result says the account is out of credits (402) or a budget is reached: STOP. Do not retry, do not switch \
tier, model or provider. Tell the user (credits: {OPENROUTER_CREDITS_URL}, or the page the message names).
- Every other error says what went wrong and what to fix. Rate limits and provider hiccups were already retried \
once for you: do not retry in a loop.

Returns: a JSON text block (images[] with absolute path, uri, width, height, format, bytes, seed; model, provider, \
tier, cost_usd, prompt_sent, what was spent and the budget left), a small JPEG thumbnail per image for you to look \
at, and (for clients that use them) a resource_link per file. Full-size files stay in the output folder (never \
overwritten, each with a .json sidecar): tell the user the paths."""

GENERATE = (
    "Generate 1-4 new images from a text description with FLUX.2 [klein] 4B. Write the prompt as descriptive "
    "prose: the subject first, then setting, composition, lighting, style and colours (hex codes work); put any "
    "text to render in quotes. For variations of one idea use n=2-4; to refine a chosen one, reuse its seed."
    + RULES
)
EDIT = (
    "Edit one existing image as the prompt says: change the background, restyle it, add, remove or recolour "
    "something. Say what to change and what must stay the same. Make one change per call and iterate. "
    "image: a local file path, a file:// URI, an https:// URL or a data:image/...;base64 URL." + RULES
)
COMPOSE = (
    "Compose a NEW image from 2-4 reference images, e.g. 'the person from image 1 wearing the jacket from image 2 "
    "in the room from image 3'. The model generates a fresh picture guided by the references: it is not a pixel "
    "overlay, collage or layout tool, so refer to the images by their number in the prompt. images: local file "
    "paths, file:// URIs, https:// URLs or data:image/...;base64 URLs, in the order the prompt numbers them."
    + RULES
)

ANNOTATIONS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)

USAGE = (
    "What image generation has cost so far, without spending anything: this session's and today's spend (by "
    "provider and model), the budgets (FLUX_KLEIN_BUDGET_USD, FLUX_KLEIN_DAILY_BUDGET_USD) and what they leave, "
    "whether the high tier asks the person first, and the provider's remaining credit where it can be read for "
    "free (OpenRouter). On a server people sign in to, only the signed-in person's own spend and budget. Use it "
    "before a large batch, or when the user asks what has been spent."
)

def _not_a_boolean(value: object) -> object:
    """JSON true/false would otherwise pass as 1/0 (and n=true be paid for): booleans are not numbers."""
    if isinstance(value, bool):
        raise ValueError("a whole number is needed, not true or false")
    return value


Prompt = Annotated[
    str,
    Field(description=f"What the image should show, as descriptive prose (at most {MAX_PROMPT_CHARS} characters)."),
]
_SHAPE = "Shape of the image (the tool description says which suits which use)."
AspectRatioArg = Annotated[AspectRatio | None, Field(description=f"{_SHAPE} Omit for 1:1 (1024x1024).")]
EditAspectRatio = Annotated[AspectRatio | None, Field(
    description=f"{_SHAPE} Omit to keep the input image's shape (the nearest of these ratios; for an https:// "
    "input, whose size is unknown here, the model chooses).")]
ComposeAspectRatio = Annotated[AspectRatio | None, Field(
    description=f"{_SHAPE} Omit to let the model choose (usually 1:1).")]
_SEED = ("Fixes the result: the same seed and arguments give the same image. Pass any number whenever you may "
         "want to refine or reproduce an image (omitted: random). Providers that take no seed ignore it (the result "
         "says so).")
Seed = Annotated[int | None, Field(ge=0, le=MAX_SEED, description=_SEED), BeforeValidator(_not_a_boolean)]
GenerateSeed = Annotated[int | None, Field(ge=0, le=MAX_SEED, description=_SEED + " n images get seed, seed+1, ..."),
                         BeforeValidator(_not_a_boolean)]
TierArg = Annotated[
    Tier,
    Field(description='"low" for every draft and iteration (default). "high" ONLY when the user explicitly asks '
          "for a final production deliverable; the person is asked to approve its price first."),
]
Filename = Annotated[
    str | None,
    Field(max_length=200, description="Name for the saved file (made a safe slug, a timestamp before it, never "
          "overwriting). Default: from the prompt."),
]
ProviderArg = Annotated[
    ProviderName | None,
    Field(description="Provider for this call only. Omit to use the configured one. \"sandbox\" makes free "
          "offline placeholders."),
]
FormatArg = Annotated[
    OutputFormat,
    Field(description='"png" (default, lossless). "jpeg" or "webp": files several times smaller and a faster call, '
          "when the user wants small files and no transparency. Only empiriolabs and openai-compatible offer them."),
]
ImageRef = Annotated[
    str,
    Field(description="The image to edit: a local path (absolute or relative to the server's working directory), "
          "a file:// URI, an https:// URL or a data:image/...;base64 URL. Local files are read only from the "
          "allowed folders (a refusal lists them)."),
]
ImageRefs = Annotated[
    list[str],
    Field(min_length=2, max_length=4, description="2 to 4 reference images (paths, file:// URIs, https:// URLs or "
          "data URLs), in the order the prompt refers to them (image 1, image 2, ...)."),
]


async def client_roots(ctx: Context) -> ListRoots | ListRootsResult:
    """The client's roots, when it declares them and runs on this machine: input images may also be read there.

    Over HTTP a client's roots are folders on *its* machine; applied here they would open this server's disk
    (a root of `file:///` would expose every image on it), so they are not even asked for.
    """
    caps = ctx.client_capabilities
    if caps is not None and caps.roots is not None and not _runtime(ctx).remote:
        return ListRoots()
    return ListRootsResult(roots=[])


Roots = Annotated[ListRootsResult, Resolve(client_roots)]


def create_server(
    settings: Settings | None = None,
    *,
    env: Mapping[str, str] | None = None,
    transport: Any = None,
    sleep: Sleep | None = None,
    remote: bool = False,
) -> FluxServer:
    """The MCP server. Production reads `os.environ`; tests pass `settings` (or `env`) and an httpx `transport`.

    `remote=True` (what `serve --http` passes) serves clients on other machines: their roots and this process's
    working directory are not folders they may read images from.
    """
    config_error: ConfigError | None = None
    if settings is None:
        try:
            settings = Settings.from_env(env)
        except ConfigError as exc:
            # Still start, so the model can read the fix from every tool result instead of a dead server.
            config_error = exc
            log.error("%s", exc)
            settings = Settings.from_env({})
    active = settings

    @asynccontextmanager
    async def lifespan(_: MCPServer[Runtime]) -> AsyncIterator[Runtime]:
        async with Runtime.open(active, transport) as runtime:
            if sleep is not None:
                runtime.sleep = sleep
            runtime.remote = remote
            yield runtime

    server = FluxServer(
        "flux-klein-mcp",
        title="FLUX.2 klein images",
        version=__version__,
        instructions="Generate, edit and compose images with FLUX.2 [klein] 4B. Draft on the low tier; the "
        "high tier only for an explicitly requested final, and only with the person's approval. On a 402 (out of "
        "credits) or a reached budget, stop and tell the user. get_usage tells what has been spent.",
        lifespan=lifespan,
        extensions=[view.extension()],
        # Over HTTP, approval rounds are sealed with the secret every replica shares: any of them continues any call.
        request_state_security=request_state_security(active) if remote else None,
    )
    server.secrets = active.redact if config_error is None else redactor_for(os.environ if env is None else env)
    note_answered_rounds(server.middleware)
    replicas = functools.cache(lambda: LedgerShared(active.ledger, active.timezone))

    async def run(ctx: Context, roots: ListRootsResult, consent: ElicitationResult[Approval],
                  build: Callable[[], ImageRequest]) -> CallToolResult:
        with shutdown.cancellable():  # SIGTERM cancels the call like a client's cancel: its files are rolled back
            return await call(ctx, roots, consent_of(consent), build)
        raise ToolError("The server is shutting down: this call was cancelled and nothing it made was kept.")

    @contextlib.contextmanager
    def in_our_words(runtime: Runtime) -> Iterator[None]:
        """A configuration error, or any of our errors raised inside, as the tool error the client shows."""
        try:
            if config_error is not None:
                raise config_error
            yield
        except FluxKleinError as exc:
            raise ToolError(str(exc)) from None

    async def call(ctx: Context, roots: ListRootsResult, consent: Consent | None,
                   build: Callable[[], ImageRequest]) -> CallToolResult:
        from . import pipeline
        from .present import quick, tool_result

        runtime = _runtime(ctx)
        outcome: pipeline.Outcome | None = None

        async def report(done: float, total: float, message: str) -> None:  # (progress is an exit too)
            await ctx.report_progress(done, total, runtime.settings.redact(for_mcp(message)))

        try:
            if config_error is not None:
                raise config_error
            if consent is Consent.GRANTED and (round_digest := answered_round()) is not None:
                await runtime.in_worker(use_approval, replicas(), round_digest)  # once, whichever replica
            outcome = await pipeline.run(build(), runtime, root_dirs=_root_dirs(roots), report=report,
                                         consent=consent)
            present = (outcome, runtime.settings.thumbnail_px, wants_links(ctx, runtime.settings.resource_links))
            result = tool_result(*present) if quick(outcome) else await runtime.in_worker(tool_result, *present)
            # A cancel that arrived while the worker thread ran is delivered here, inside this try, not later.
            await anyio.lowlevel.checkpoint()
            return result
        except FluxKleinError as exc:
            raise ToolError(str(exc)) from None
        except anyio.get_cancelled_exc_class():
            if outcome is not None:  # cancelled while the result was being built: the client never sees it
                with anyio.CancelScope(shield=True):
                    await runtime.in_worker(outcome.discard)
            raise
        except Exception:
            log.exception("Unexpected error in a tool call")
            raise ToolError("The server hit an unexpected error (its log on stderr has the details). Images "
                            "saved before it are in the output folder. Try again once; if it repeats, tell the "
                            "user.") from None

    @server.tool(title="Generate image (FLUX.2 klein)", description=GENERATE, annotations=ANNOTATIONS,
                 structured_output=False, meta=VIEW)
    async def generate_image(
        prompt: Prompt,
        ctx: Context,
        roots: Roots,
        consent: GenerateConsent,
        aspect_ratio: AspectRatioArg = None,
        n: Annotated[int, Field(ge=1, le=4, description="How many variations, 1-4 (made in parallel)."),
                     BeforeValidator(_not_a_boolean)] = 1,
        seed: GenerateSeed = None,
        tier: TierArg = "low",
        filename: Filename = None,
        provider: ProviderArg = None,
        output_format: FormatArg = "png",
    ) -> CallToolResult:
        return await run(ctx, roots, consent, lambda: ImageRequest(
            "generate", prompt, aspect_ratio, n, seed, tier, filename, provider, output_format=output_format))

    @server.tool(title="Edit image (FLUX.2 klein)", description=EDIT, annotations=ANNOTATIONS, structured_output=False,
                 meta=VIEW)
    async def edit_image(
        prompt: Prompt,
        image: ImageRef,
        ctx: Context,
        roots: Roots,
        consent: OneImageConsent,
        aspect_ratio: EditAspectRatio = None,
        seed: Seed = None,
        tier: TierArg = "low",
        filename: Filename = None,
        provider: ProviderArg = None,
        output_format: FormatArg = "png",
    ) -> CallToolResult:
        return await run(ctx, roots, consent, lambda: ImageRequest(
            "edit", prompt, aspect_ratio, 1, seed, tier, filename, provider, image_refs=(image,),
            output_format=output_format))

    @server.tool(title="Compose images (FLUX.2 klein)", description=COMPOSE, annotations=ANNOTATIONS,
                 structured_output=False, meta=VIEW)
    async def compose_images(
        prompt: Prompt,
        images: ImageRefs,
        ctx: Context,
        roots: Roots,
        consent: OneImageConsent,
        aspect_ratio: ComposeAspectRatio = None,
        seed: Seed = None,
        tier: TierArg = "low",
        filename: Filename = None,
        provider: ProviderArg = None,
        output_format: FormatArg = "png",
    ) -> CallToolResult:
        return await run(ctx, roots, consent, lambda: ImageRequest(
            "compose", prompt, aspect_ratio, 1, seed, tier, filename, provider, image_refs=tuple(images),
            output_format=output_format))

    @server.tool(title="Spending so far (FLUX.2 klein images)", description=USAGE, annotations=READ_ONLY,
                 structured_output=False)
    async def get_usage(ctx: Context) -> CallToolResult:
        runtime = _runtime(ctx)
        with in_our_words(runtime):  # (a ledger that cannot be read is named)
            usage = await runtime.in_worker(runtime.spend.usage)
        usage["high_tier"] = runtime.settings.high_tier
        from .spend.report import provider_credit

        if people.current() is None:  # (the provider's account is everyone's: what it used is not one person's)
            usage["provider_credit"] = await provider_credit(runtime.providers, runtime.http)
        return CallToolResult(content=[TextContent(text=mcp_json(usage))])

    view.install(server, in_our_words)
    return server


#: clientInfo sent by the mcp Python SDK when its user names no client (1.x and 2.x alike). LangChain's adapters
#: send it; they turn an image `resource_link` into an image block whose URL is the `file://` URI, which
#: langchain-openai and langchain-anthropic then send to the model provider, which cannot fetch it.
SDK_DEFAULT_CLIENT = ("mcp", "0.1.0")


def wants_links(ctx: Context, mode: str) -> bool:
    """Whether this client gets `resource_link`s: every client that names itself (Claude Code, Claude Desktop, VS
    Code, Cursor, Codex, Gemini CLI ...), but not the SDK's anonymous default or fastmcp's (what agent frameworks
    send), unless FLUX_KLEIN_RESOURCE_LINKS says always or never. The JSON block names every file either way."""
    if mode != "auto":
        return mode == "always"
    params = ctx.request_context.session.client_params
    info = params.client_info if params is not None else None
    if info is None:
        return True  # an anonymous stateless HTTP request: the protocol's own behaviour
    return (info.name, info.version) != SDK_DEFAULT_CLIENT and info.name != "fastmcp"


def _runtime(ctx: Context) -> Runtime:
    return cast(Runtime, ctx.request_context.lifespan_context)


def _root_dirs(roots: ListRootsResult) -> list[Path]:
    """The client's `file://` roots as folders (other schemes and remote hosts are not folders here)."""
    from .inputs import path_from_file_uri

    dirs = []
    for root in roots.roots:
        try:
            path = path_from_file_uri(str(root.uri))
        except InputError:
            log.info("Ignoring client root %r: not a local file:// URI", str(root.uri))
            continue
        if "\x00" not in str(path):
            dirs.append(path)
    return dirs


__all__ = ["create_server", "PROVIDER_NAMES"]
