"""flux-klein-mcp: generate, edit and compose images with FLUX.2 [klein] 4B from any MCP client or the CLI.

The public surface: `create_server()` for an MCP host process, and the pipeline for embedding it elsewhere
(`Settings.from_env()`, `Runtime.open(settings)`, `ImageRequest(...)`, `run(request, runtime)`).

Each is imported on first use (PEP 562): `flux-klein-mcp --help` should not load the MCP SDK, Pillow or httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["FluxKleinError", "ImageRequest", "Outcome", "Runtime", "Settings", "__version__", "create_server", "run"]

_WHERE = {
    "FluxKleinError": "errors",
    "ImageRequest": "request",
    "Outcome": "pipeline",
    "Runtime": "runtime",
    "Settings": "config",
    "create_server": "server",
    "run": "pipeline",
}

if TYPE_CHECKING:
    from .config import Settings
    from .errors import FluxKleinError
    from .pipeline import Outcome, run
    from .request import ImageRequest
    from .runtime import Runtime
    from .server import create_server


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
