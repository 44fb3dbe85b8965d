"""The MCP Apps view (io.modelcontextprotocol/ui), server side: the `ui://` resource hosts render beside the image
tools, the app-only tools its buttons call, the filter that keeps those tools from clients without the view, and
the reader that hands the view (and other clients) the full-size files.

The view itself is view.html: one self-contained page. Hosts build its frame's Content-Security-Policy from what
the resource declares (`_meta.ui.csp`); declared nothing, a host may allow no image at all, so CSP below names
exactly what the page loads.

App-only tools carry `_meta.ui.visibility = ["app"]` and no `resourceUri` (a tool with one is listed by hosts as
an app of its own): hosts keep them from the model, and clients that cannot show the view never see them listed
(and are refused if they call one anyway).
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from mcp.server import MCPServer
from mcp.server.apps import Apps, ResourceCsp, ResourcePermissions, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import BeforeValidator, Field

from . import curate
from .errors import StorageError
from .gallery import MAX_LIMIT, Query, Thumbnails, cursor_error, page
from .rules import OPENROUTER_SIZES, ProviderName
from .runtime import Runtime
from .store import FORMATS
from .words import well_formed

if TYPE_CHECKING:
    from .providers.base import Provider

#: The view the image tools name (view.html, served as text/html;profile=mcp-app).
VIEW_URI = "ui://flux-klein/view.html"
VIEW = {"ui": {"resourceUri": VIEW_URI}}
#: Tools only the view calls: no resourceUri, so no host lists them as apps; visibility keeps them from the model.
APP_ONLY = {"ui": {"visibility": ["app"]}}
#: Everything the view loads is inline (its script and styles) or a data: URL (thumbnails from results, full-size
#: files through resources/read): it fetches nothing, connects nowhere and frames nothing.
CSP = ResourceCsp(resource_domains=["data:"])

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CHANGES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
REFUSED = ("{name} serves the image view (MCP Apps) only; this client did not declare it. Images are in the output "
           "folder, named in each image tool's result.")

#: Wraps a view tool's body so our errors (and a configuration error) reach the client in our words.
Guard = Callable[[Runtime], contextlib.AbstractContextManager[None]]


def view_html() -> str:
    """view.html, with the pixel size of each aspect ratio filled in (its placeholders take the images' shape)."""
    from importlib import resources

    html = resources.files("flux_klein_mcp").joinpath("view.html").read_text(encoding="utf-8")
    return html.replace("{/*ASPECT_SIZES*/}", json.dumps(dict(OPENROUTER_SIZES), separators=(",", ":")))


def extension() -> Apps:
    """The MCP Apps extension with the view's resource (the server declares the extension through it)."""
    apps = Apps()
    apps.add_html_resource(VIEW_URI, view_html(),
        name="flux-klein-view", title="FLUX.2 klein images",
        description="The images of a call and the output folder's gallery: full size, compare, pick, hide, and "
                    "the next steps (variations, edit, compose, final).",
        csp=CSP, permissions=ResourcePermissions(clipboard_write={}), prefers_border=True)
    return apps


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a whole number is needed, not true or false")
    return value


Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description=f"How many images, 1-{MAX_LIMIT}."),
                  BeforeValidator(_not_a_boolean)]
Cursor = Annotated[str | None, Field(max_length=300, description="The `next` of the previous page; omit for the "
                                     "newest.")]
Path_ = Annotated[str, Field(max_length=4096, description="An image's path, as the gallery gave it.")]


def install(server: MCPServer[Runtime], guard: Guard) -> None:
    """Add the view's app-only tools, the output reader and the tool-list filter to `server`."""
    thumbnails = Thumbnails()
    server.middleware.append(_hide_app_only_tools)

    def view_only(ctx: Context, name: str) -> Runtime:
        if shows_the_view(ctx.request_context) is False:
            raise ToolError(REFUSED.format(name=name))
        return _runtime(ctx)

    @server.tool(title="Gallery page (for the image view)", annotations=READ_ONLY, structured_output=False,
                 meta=APP_ONLY, description="A page of the output folder's images, newest first, with small "
                 "thumbnails, each with its prompt, seed, provider, cost, pick and the arguments that make it again.")
    async def recent_images(
        ctx: Context,
        limit: Limit = 12,
        cursor: Cursor = None,
        query: Annotated[str, Field(max_length=200, description="Only images whose prompt holds every word of "
                                    "this (any case).")] = "",
        picked: Annotated[bool, Field(description="Only picked (starred) images.")] = False,
        hidden: Annotated[bool, Field(description="The hidden images instead (to restore one).")] = False,
    ) -> CallToolResult:
        runtime = view_only(ctx, "recent_images")
        with guard(runtime):
            if cursor is not None and (why := cursor_error(cursor)):
                raise ToolError(why)
            folder = await runtime.in_worker(runtime.store.present)
            shown = await runtime.in_worker(curate.hidden_folder, folder) if hidden else folder
        found = await runtime.in_worker(page, shown, folder, Query(limit, cursor, query, picked), thumbnails)
        summary = {"folder": str(shown), "hidden": hidden, "total": found.total, "next": found.next,
                   "images": [r.entry for r in found.images]}
        text = json.dumps(summary, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return CallToolResult(content=[TextContent(text=text), *(
            ImageContent(data=base64.b64encode(r.thumbnail).decode(), mime_type="image/jpeg") for r in found.images)])

    @server.tool(title="Pick an image (for the image view)", annotations=CHANGES, structured_output=False,
                 meta=APP_ONLY, description="Star an image (or take the star away); kept in its sidecar.")
    async def pick_image(ctx: Context, path: Path_,
                         picked: Annotated[bool, Field(description="true to pick, false to unpick.")] = True
                         ) -> CallToolResult:
        runtime = view_only(ctx, "pick_image")
        with guard(runtime):
            folder = await runtime.in_worker(runtime.store.present)
            image = await runtime.in_worker(curate.set_picked, folder, path, picked)
        return _answer({"path": str(image), "picked": picked})

    @server.tool(title="Hide an image (for the image view)", annotations=CHANGES, structured_output=False,
                 meta=APP_ONLY, description="Move an image and its sidecar into the output folder's hidden folder "
                 "(nothing is deleted; restore_image moves it back).")
    async def hide_image(ctx: Context, path: Path_) -> CallToolResult:
        runtime = view_only(ctx, "hide_image")
        with guard(runtime):
            folder = await runtime.in_worker(runtime.store.present)
            hidden = await runtime.in_worker(curate.hide, folder, path)
        return _answer({"path": path, "hidden_path": str(hidden)})

    @server.tool(title="Restore a hidden image (for the image view)", annotations=CHANGES, structured_output=False,
                 meta=APP_ONLY, description="Move a hidden image and its sidecar back into the output folder.")
    async def restore_image(ctx: Context, path: Path_) -> CallToolResult:
        runtime = view_only(ctx, "restore_image")
        with guard(runtime):
            folder = await runtime.in_worker(runtime.store.present)
            restored = await runtime.in_worker(curate.restore, folder, path)
        return _answer({"hidden_path": path, "path": str(restored)})

    @server.tool(title="Price of a final (for the image view)", annotations=READ_ONLY, structured_output=False,
                 meta=APP_ONLY, description="What one high-tier image costs on a provider, and whether the person "
                 "is asked first (nothing is sent).")
    async def final_price(ctx: Context, provider: Annotated[ProviderName | None, Field(
            description="The provider the image was made on; omit for the configured one.")] = None
                          ) -> CallToolResult:
        from .asking import can_elicit

        runtime = view_only(ctx, "final_price")
        with guard(runtime):
            chosen = runtime.providers.choose(provider)
        return _answer(final_quote(chosen, runtime.settings.high_tier, can_elicit(ctx)))

    _add_output_reader(server)


def final_quote(provider: Provider, mode: str, host_can_ask: bool) -> dict[str, Any]:
    """What the view shows on its Final button: the price of one high-tier image on `provider` and what happens
    when it is pressed (FLUX_KLEIN_HIGH_TIER and whether this host can ask the person)."""
    from .spend import quote_for
    from .spend.consent import needs_consent

    if "high" not in provider.capabilities.tiers:
        return {"provider": provider.name, "available": False,
                "note": f"{provider.label} offers no high tier; a final cannot be made there."}
    quote = quote_for(provider, "high", 1)
    price = f"${quote.per_image_usd:.3f}" + (" (an estimate)" if quote.source == "estimate" else "")
    if provider.name == "sandbox":
        note = "Free on the sandbox: an offline placeholder, nothing is charged."
    elif mode == "deny":
        note = "The high tier is switched off on this server (FLUX_KLEIN_HIGH_TIER=deny)."
    elif not needs_consent(mode, "high", provider.name):
        note = f"Spends {price} without asking (FLUX_KLEIN_HIGH_TIER=allow)."
    elif host_can_ask:
        note = f"You are asked to approve {price} before anything is spent."
    else:
        note = (f"Costs {price}, and this host cannot ask you to approve it, so the server will refuse (set "
                "FLUX_KLEIN_HIGH_TIER=allow to allow finals without asking).")
    return {"provider": provider.name, "model": quote.model, "price_usd": quote.per_image_usd, "basis": quote.source,
            "available": mode != "deny", "note": note}


def _answer(value: Mapping[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=json.dumps(value, ensure_ascii=False, allow_nan=False))])


async def _hide_app_only_tools(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """tools/list for a client that cannot show the view lists no app-only tool (SDK middleware: the public way to
    rewrite an answer; it sees the answer as it goes on the wire)."""
    result = await call_next(ctx)
    if ctx.method != "tools/list" or not isinstance(result, dict) or shows_the_view(ctx):
        return result
    tools = result.get("tools")
    if not isinstance(tools, list):
        return result
    return {**result, "tools": [t for t in tools if not (isinstance(t, dict) and app_only(t.get("_meta")))]}


def shows_the_view(ctx: ServerRequestContext[Any, Any]) -> bool | None:
    """Whether the client declared MCP Apps; None when the request does not say who the client is: a stateless HTTP
    request on a protocol before 2026-07-28, whose client declared its capabilities once, at an initialize this
    server does not remember. Such a client is not listed the app-only tools (it may be a model's), but a call to
    one is served: it comes from a view, since nothing else was told their names."""
    if ctx.session.client_params is None and ctx.session.client_capabilities is None:
        return None
    return client_supports_apps(ctx)


def app_only(meta: Mapping[str, Any] | None) -> bool:
    ui = (meta or {}).get("ui")
    return isinstance(ui, Mapping) and list(ui.get("visibility") or ["model", "app"]) == ["app"]


def _runtime(ctx: Context) -> Runtime:
    return cast(Runtime, ctx.request_context.lifespan_context)


def _add_output_reader(server: MCPServer[Runtime]) -> None:
    """Let a client read the files the tools link to, and nothing else: `file://` URIs inside the output folder."""
    # (.jpeg too: the tools write .jpg, but the gallery lists any JPEG name the folder holds.)
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
            raise ResourceError(well_formed(str(exc))) from None  # (a path of bytes that are not UTF-8)

    return read
