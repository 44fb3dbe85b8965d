"""What every client driver shares (standard library only: each driver runs in its own client's environment).

A driver is run as `<venv>/bin/python -m deployment.drivers.<client> '<plan as JSON>'` and prints one JSON line:
what its client saw, step by step. The plan says where the server is and what to do:

    {"target": {"url": "http://127.0.0.1:8000/mcp", "token": "..."}        # or:
               {"command": ".../flux-klein-mcp", "env": {...}, "cwd": "..."},  # the server over stdio
     "answer": "accept" | "decline" | null,   # what the person answers when asked; null: no elicitation declared
     "apps": false,                           # declare the MCP Apps extension (clients that can)
     "mode": "legacy",                        # the 2.x Client's protocol choice ("auto": 2026-07-28)
     "client": {"name": "an-ide", "version": "1"},   # clientInfo (the SDKs': name only; default mcp/0.1.0)
     "steps": [["list"], ["call", "generate_image", {"prompt": "a fox"}]]}

The report: {"steps": [{"tools": [...]} | {"error": bool, "text": str, "kinds": [...], "asked": [...]}]}.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def read_plan() -> dict[str, Any]:
    plan = json.loads(sys.argv[1])
    assert isinstance(plan, dict)
    return plan


def report(steps: list[dict[str, Any]]) -> None:
    print(json.dumps({"steps": steps}), flush=True)
