"""`flux-klein-mcp serve`: the MCP server on stdio (the default) or over HTTP.

Kept apart from the one-call commands so that start-up loads only what serving needs: the pipeline, httpx and
Pillow wait for the first tool call.
"""

from __future__ import annotations

import sys

import anyio

from .. import shutdown
from ..config import Settings
from ..errors import FluxKleinError
from .output import err, fail, failed, log_to_stderr


def serve() -> int:
    if sys.stdin is None or sys.stdout is None:
        return fail(f"standard {'input' if sys.stdin is None else 'output'} is closed, and the stdio server talks "
                    "JSON-RPC there; nothing was started. Let an MCP client start it, or use `serve --http`.", 2)
    log_to_stderr()
    from ..server import create_server

    if sys.stdin.isatty():
        err("flux-klein-mcp is an MCP server: it talks JSON-RPC on stdin/stdout and is meant to be started by an "
            "MCP client (see the README). To see it work, run `flux-klein-mcp demo`. Ctrl-C quits.")
    server = create_server()

    async def serve() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(shutdown.exit_on_sigterm)  # roll back the calls in flight, then exit
            await server.run_stdio_async()
            group.cancel_scope.cancel()

    try:
        anyio.run(serve)
    except KeyboardInterrupt:
        return 130
    return 0


def serve_http(host: str, port: int) -> int:
    log_to_stderr()
    from ..http_server import check_exposure, check_port_free
    from ..http_server import serve_http as run_http
    from ..remote.secret import check_secret
    from ..server import create_server

    try:
        settings = Settings.from_env()
        check_exposure(host, settings)
        check_secret(settings)
        check_port_free(host, port)
    except FluxKleinError as exc:
        return failed(exc)
    try:
        run_http(create_server(settings, remote=True), settings, host, port)
    except KeyboardInterrupt:
        return 130
    return 0
