"""MCP wiring only: the three tools, their descriptions and annotations, the lifespan and a resource reader.

The descriptions are written for the model: they carry the skill's rules because the model reads them.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import anyio
import anyio.lowlevel
from mcp.server import MCPServer
from mcp.server.apps import Apps, ResourcePermissions, client_supports_apps
from mcp.server.context import ServerRequestContext
from mcp.server.elicitation import ElicitationResult
from mcp.server.lowlevel.server import Server
from mcp.server.mcpserver import Context, ListRoots, Resolve, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.types import (
    CallToolResult,
    ImageContent,
    ListRootsResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    ToolAnnotations,
)
from pydantic import BeforeValidator, Field, ValidationError

from . import __version__, shutdown
from .arguments import explain
from .asking import Approval, GenerateConsent, OneImageConsent, consent_of
from .config import Settings
from .errors import ConfigError, FluxKleinError, InputError, StorageError
from .gallery import Thumbnails, recent
from .remote.once import answered_round, note_answered_rounds, use_approval
from .remote.secret import request_state_security
from .remote.shared import SqliteShared, beside_ledger
from .request import ImageRequest
from .rules import (
    ASPECT_RATIO_BY_USE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    OPENROUTER_CREDITS_URL,
    OPENROUTER_SIZES,
    PROVIDER_NAMES,
    AspectRatio,
    ProviderName,
    Tier,
)
from .runtime import Runtime
from .spend import Consent
from .store import FORMATS

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

Returns: first a JSON text block (images[] with absolute path, uri, width, height, format, bytes, seed; model, \
provider, tier, cost_usd, prompt_sent, spent_session_usd, spent_today_usd, budget_left_usd when a budget is set), \
then one small JPEG thumbnail per image for you to look at, then (for clients that use them) a resource_link per \
full-size file. Full-size files stay on disk in the output folder (never overwritten, each with a .json sidecar): \
tell the user the paths."""

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
    "free (OpenRouter). Use it before a large batch, or when the user asks what has been spent."
)

#: The MCP Apps view hosts show beside the three image tools (view.html, served as text/html;profile=mcp-app).
VIEW_URI = "ui://flux-klein/view.html"
VIEW = {"ui": {"resourceUri": VIEW_URI}}
#: Tools only the view calls: hosts keep them from the model, and clients without the view do not list them.
APP_ONLY = {"ui": {"resourceUri": VIEW_URI, "visibility": ["app"]}}
RECENT = ("The newest images in the output folder with small thumbnails, for the image view's strip of recent work "
          "(each with its prompt, seed, provider, cost and the arguments that would make it again).")


def view_html() -> str:
    """view.html, with the pixel size of each aspect ratio filled in (its placeholders take the images' shape)."""
    from importlib import resources

    html = resources.files("flux_klein_mcp").joinpath("view.html").read_text(encoding="utf-8")
    return html.replace("{/*ASPECT_SIZES*/}", json.dumps(dict(OPENROUTER_SIZES), separators=(",", ":")))


def _view() -> Apps:
    apps = Apps()
    apps.add_html_resource(VIEW_URI, view_html(),
        name="flux-klein-view", title="FLUX.2 klein images",
        description="The images of a call, with their details and next steps (variations, edit, compose, final).",
        permissions=ResourcePermissions(clipboard_write={}), prefers_border=True)
    return apps


def _not_a_boolean(value: object) -> object:
    """JSON true/false would otherwise pass as 1/0 (and n=true be paid for): booleans are not numbers."""
    if isinstance(value, bool):
        raise ValueError("a whole number is needed, not true or false")
    return value


Prompt = Annotated[
    str,
    Field(description=f"What the image should show, as descriptive prose (at most {MAX_PROMPT_CHARS} characters)."),
]
_SHAPE = f"Shape of the image: {_USE_TABLE}."
AspectRatioArg = Annotated[AspectRatio | None, Field(description=f"{_SHAPE} Omit for 1:1 (1024x1024).")]
EditAspectRatio = Annotated[AspectRatio | None, Field(
    description=f"{_SHAPE} Omit to keep the input image's shape (the nearest of these ratios; for an https:// "
    "input, whose size is unknown here, the model chooses).")]
ComposeAspectRatio = Annotated[AspectRatio | None, Field(
    description=f"{_SHAPE} Omit to let the model choose (usually 1:1).")]
_SEED = ("Fixes the result: the same seed and arguments give the same image. Pass any number whenever you may "
         "want to refine or reproduce an image; omitted, the image is random and cannot be reproduced. Providers "
         "that take no seed ignore it (the result says so).")
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
    Field(max_length=200, description="Optional name for the saved file (reduced to a safe slug; a timestamp is "
          "prefixed and nothing is overwritten). Defaults to a slug of the prompt."),
]
ProviderArg = Annotated[
    ProviderName | None,
    Field(description="Provider for this call only. Omit to use the configured one. \"sandbox\" makes free "
          "offline placeholders."),
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
) -> _Server:
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

    server = _Server(
        "flux-klein-mcp",
        title="FLUX.2 klein images",
        version=__version__,
        instructions="Generate, edit and compose images with FLUX.2 [klein] 4B. Draft on the low tier; the "
        "high tier only for an explicitly requested final, and only with the person's approval. On a 402 (out of "
        "credits) or a reached budget, stop and tell the user. get_usage tells what has been spent.",
        lifespan=lifespan,
        extensions=[_view()],
        # Over HTTP, approval rounds are sealed with the secret every replica shares: any of them continues any call.
        request_state_security=request_state_security(active) if remote else None,
    )
    server.redact = lambda text: active.redact(text, shapes=False)
    note_answered_rounds(server.middleware)
    replicas = functools.cache(lambda: SqliteShared(beside_ledger(active.ledger)))

    async def run(ctx: Context, roots: ListRootsResult, consent: ElicitationResult[Approval],
                  build: Callable[[], ImageRequest]) -> CallToolResult:
        with shutdown.cancellable():  # SIGTERM cancels the call like a client's cancel: its files are rolled back
            return await call(ctx, roots, consent_of(consent), build)
        raise ToolError("The server is shutting down: this call was cancelled and nothing it made was kept.")

    @contextlib.contextmanager
    def in_our_words(runtime: Runtime) -> Iterator[None]:
        """A configuration error, or any of our errors raised inside, as the tool error the client shows (secrets
        removed)."""
        try:
            if config_error is not None:
                raise config_error
            yield
        except FluxKleinError as exc:
            raise ToolError(runtime.settings.redact(str(exc), shapes=False)) from None

    async def call(ctx: Context, roots: ListRootsResult, consent: Consent | None,
                   build: Callable[[], ImageRequest]) -> CallToolResult:
        from . import pipeline
        from .present import tool_result

        runtime = _runtime(ctx)
        outcome: pipeline.Outcome | None = None
        try:
            if config_error is not None:
                raise config_error
            if consent is Consent.GRANTED and (round_digest := answered_round()) is not None:
                await runtime.in_worker(use_approval, replicas(), round_digest)  # once, whichever replica
            outcome = await pipeline.run(build(), runtime, root_dirs=_root_dirs(roots), report=ctx.report_progress,
                                         consent=consent)
            result = await runtime.in_worker(tool_result, outcome, runtime.settings.thumbnail_px,
                                             wants_links(ctx, runtime.settings.resource_links))
            # A cancel that arrived while the worker thread ran is delivered here, inside this try, not later.
            await anyio.lowlevel.checkpoint()
            return result
        except FluxKleinError as exc:
            raise ToolError(runtime.settings.redact(str(exc), shapes=False)) from None
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
    ) -> CallToolResult:
        return await run(ctx, roots, consent, lambda: ImageRequest(
            "generate", prompt, aspect_ratio, n, seed, tier, filename, provider))

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
    ) -> CallToolResult:
        return await run(ctx, roots, consent, lambda: ImageRequest(
            "edit", prompt, aspect_ratio, 1, seed, tier, filename, provider, image_refs=(image,)))

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
    ) -> CallToolResult:
        return await run(ctx, roots, consent, lambda: ImageRequest(
            "compose", prompt, aspect_ratio, 1, seed, tier, filename, provider, image_refs=tuple(images)))

    @server.tool(title="Spending so far (FLUX.2 klein images)", description=USAGE, annotations=READ_ONLY,
                 structured_output=False)
    async def get_usage(ctx: Context) -> CallToolResult:
        runtime = _runtime(ctx)
        with in_our_words(runtime):  # (a ledger that cannot be read is named)
            usage = await runtime.in_worker(runtime.spend.usage)
        usage["high_tier"] = runtime.settings.high_tier
        from .spend.report import provider_credit

        usage["provider_credit"] = await provider_credit(runtime.providers, runtime.http)
        text = json.dumps(runtime.settings.redact.value(usage, shapes=False), indent=2, allow_nan=False)
        return CallToolResult(content=[TextContent(text=text)])

    @server.tool(title="Recent images (for the image view)", description=RECENT, annotations=READ_ONLY,
                 structured_output=False, meta=APP_ONLY)
    async def recent_images(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=48, description="How many of the newest images, 1-48."),
                         BeforeValidator(_not_a_boolean)] = 12,
    ) -> CallToolResult:
        runtime = _runtime(ctx)
        with in_our_words(runtime):
            if not client_supports_apps(ctx):  # hidden from tools/list for these clients, refused if called anyway
                raise ToolError("recent_images serves the image view (MCP Apps) only; this client did not declare "
                                "it. Images are in the output folder, named in each image tool's result.")
            folder = await runtime.in_worker(runtime.store.present)
        found = await runtime.in_worker(recent, folder, limit, thumbnails)
        summary = {"folder": str(folder), "images": [r.entry for r in found]}
        text = json.dumps(runtime.settings.redact.value(summary, shapes=False), indent=2, allow_nan=False)
        return CallToolResult(content=[TextContent(text=text), *(
            ImageContent(data=base64.b64encode(r.thumbnail).decode(), mime_type="image/jpeg") for r in found)])

    thumbnails = Thumbnails()
    _add_output_reader(server)
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


class _Server(MCPServer[Runtime]):
    """The SDK's server, except that arguments breaking a tool's schema are answered in our words, and tools only
    the view calls are listed only to clients that can show the view."""

    async def _handle_list_tools(self, ctx: ServerRequestContext[Runtime],
                                 params: PaginatedRequestParams | None) -> ListToolsResult:
        listed = await super()._handle_list_tools(ctx, params)
        if client_supports_apps(ctx):
            return listed
        return listed.model_copy(update={"tools": [t for t in listed.tools if not _app_only(t.meta)]})

    @property
    def lowlevel(self) -> Server[Runtime]:
        """The SDK's low-level server, which `serve --http` hands to its session manager."""
        return self._lowlevel_server

    #: Removes secrets from what is quoted back (an argument may hold a key); `create_server` sets it.
    redact: Callable[[str], str] = staticmethod(lambda text: text)

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError) or isinstance(exc, UnexpectedToolError):
                raise
            tool = next((t for t in await self.list_tools() if t.name == name), None)
            schema = tool.input_schema if tool is not None else {}
            raise ToolError(explain(name, schema, exc.__cause__, self.redact)) from exc.__cause__


def _app_only(meta: Mapping[str, Any] | None) -> bool:
    ui = (meta or {}).get("ui")
    return isinstance(ui, Mapping) and list(ui.get("visibility") or ["model", "app"]) == ["app"]


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


def _add_output_reader(server: MCPServer[Runtime]) -> None:
    """Let a client read the files the tools link to, and nothing else: `file://` URIs inside the output folder."""
    # (.jpeg too: the tools write .jpg, but the view's strip lists any JPEG name the folder holds.)
    for name, mime, ext in [(fmt.lower(), mime, ext) for fmt, (mime, ext) in FORMATS.items()] + [
            ("jpeg-long", "image/jpeg", "jpeg")]:
        server.resource(
            f"file://{{+path}}.{ext}",
            name=f"output-{name}",
            description="A generated image in the output folder.",
            mime_type=mime,
            security=ResourceSecurity(exempt_params={"path"}),
        )(_output_reader(ext))


def _output_reader(ext: str) -> Callable[[str, Context], Awaitable[bytes]]:
    async def read(path: str, ctx: Context) -> bytes:
        runtime = _runtime(ctx)
        try:
            return await runtime.in_worker(runtime.store.read, Path(f"{path}.{ext}"))
        except StorageError as exc:
            raise ResourceError(str(exc)) from None

    return read


__all__ = ["create_server", "PROVIDER_NAMES"]
