"""The Agent Skill (SKILL.md and references/) as this package carries it, and `flux-klein-mcp skill install`.

A wheel holds the skill as package data (`flux_klein_mcp/skill/`, copied there at build time from the repository's
root, see setup.py). An editable install has no such copy: the skill is then read from the source tree it points at.
"""

from __future__ import annotations

import os
import re
import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

NAME = "generate-image-low-flux"


def skill_files() -> dict[str, bytes]:
    """Each file of the skill by its path inside the skill folder ("SKILL.md", "references/providers.md", ...)."""
    packaged = resources.files("flux_klein_mcp") / "skill"
    if packaged.is_dir():
        return dict(_walk(packaged, ""))
    root = Path(__file__).resolve().parents[2]  # server/flux_klein_mcp/skill.py -> the repository (editable install)
    found = {"SKILL.md": (root / "SKILL.md").read_bytes()} if (root / "SKILL.md").is_file() else {}
    found |= {f"references/{p.name}": p.read_bytes() for p in sorted((root / "references").glob("*.md"))}
    if not found:
        raise FileNotFoundError("this installation carries no Agent Skill (a wheel built without setup.py?)")
    return found


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for entry in folder.iterdir():
        if entry.is_dir():
            out += _walk(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".md"):
            out.append((f"{prefix}{entry.name}", entry.read_bytes()))
    return out


def default_dir() -> Path:
    """Claude Code's personal skills folder (~/.claude/skills, or $CLAUDE_CONFIG_DIR/skills)."""
    config = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(config).expanduser() if config else Path.home() / ".claude") / "skills"


class NotOurs(Exception):
    """The target folder holds something other than this skill: install leaves it alone."""


def install(parent: Path) -> tuple[Path, list[str], bool]:
    """Write the skill into `parent/generate-image-low-flux/`; returns that folder, the files, and whether it
    replaced an earlier copy.

    An earlier copy of this skill is replaced whole (so a file the new version dropped does not linger), by
    writing the new copy beside it and swapping the two; a folder of that name holding anything else is refused.
    """
    parent = parent.expanduser()
    folder = parent / NAME
    files = skill_files()
    existed = _check_replaceable(folder)
    parent.mkdir(parents=True, exist_ok=True)
    fresh = parent / f".{NAME}.new-{os.getpid()}"
    old = parent / f".{NAME}.old-{os.getpid()}"
    try:
        for relative, data in files.items():
            target = fresh / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if existed:
            folder.rename(old)
        elif folder.is_dir():
            folder.rmdir()  # empty (checked above)
        fresh.rename(folder)
    except BaseException:
        if old.exists() and not folder.exists():
            old.rename(folder)  # put the earlier copy back
        raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder, sorted(files), existed


def _check_replaceable(folder: Path) -> bool:
    """True if `folder` holds an earlier copy of this skill, False if it is absent or empty; NotOurs otherwise."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise NotOurs(f"{folder} exists and is not a folder")
    if not folder.exists() or not any(folder.iterdir()):
        return False
    try:
        head = (folder / "SKILL.md").read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        head = ""
    if not re.search(rf"^name:\s*{re.escape(NAME)}\s*$", head, re.MULTILINE):
        raise NotOurs(f"{folder} holds files that are not this skill")
    return True
