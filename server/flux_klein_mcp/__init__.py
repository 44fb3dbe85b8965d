"""flux-klein-mcp: generate, edit and compose images with FLUX.2 [klein] 4B from any MCP client or the CLI.

The public surface: `create_server()` for an MCP host process, and the pipeline for embedding it elsewhere
(`Settings.from_env()`, `Runtime.open(settings)`, `ImageRequest(...)`, `run(request, runtime)`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Settings  # noqa: E402  (the version is set first: server.py reads it)
from .errors import FluxKleinError  # noqa: E402
from .pipeline import Outcome, run  # noqa: E402
from .request import ImageRequest  # noqa: E402
from .runtime import Runtime  # noqa: E402
from .server import create_server  # noqa: E402

__all__ = ["FluxKleinError", "ImageRequest", "Outcome", "Runtime", "Settings", "__version__", "create_server", "run"]
