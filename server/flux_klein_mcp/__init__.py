"""flux-klein-mcp: generate, edit and compose images with FLUX.2 [klein] 4B from any MCP client or the CLI."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
