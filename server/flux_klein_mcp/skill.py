"""The Agent Skill (SKILL.md and references/) as this package carries it, and `flux-klein-mcp skill install`.

A wheel holds the skill as package data (`flux_klein_mcp/skill/`, copied there at build time from the repository's
root, see setup.py). An editable install has no such copy: the skill is then read from the source tree it points at.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
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


#: What an install wrote (each file's SHA-256), kept in the skill folder: a later install replaces only that.
RECORD = ".flux-klein-mcp-install.json"


def install(parent: Path) -> tuple[Path, list[str], bool]:
    """Write the skill into `parent/generate-image-low-flux/`; returns that folder, the files, and whether it
    replaced an earlier copy.

    An earlier copy of this skill is replaced whole (so a file the new version dropped does not linger), by
    writing the new copy beside it and swapping the two. What a person changed or added there since it was
    installed, and a folder of that name holding anything else, are refused and left untouched. The working
    folders are made with unguessable names, so nothing planted beside the target can redirect the writes.
    """
    parent = parent.expanduser()
    folder = parent / NAME
    files = skill_files()
    existed = _check_replaceable(folder)
    parent.mkdir(parents=True, exist_ok=True)
    fresh_dir = Path(tempfile.mkdtemp(prefix=f".{NAME}.new-", dir=parent))
    old_dir: Path | None = None
    fresh = fresh_dir / NAME
    try:
        record = {}
        for relative, data in files.items():
            target = fresh / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            record[relative] = hashlib.sha256(data).hexdigest()
        (fresh / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if existed:
            old_dir = Path(tempfile.mkdtemp(prefix=f".{NAME}.old-", dir=parent))
            folder.rename(old_dir / NAME)
        elif folder.is_dir():
            folder.rmdir()  # empty (checked above)
        fresh.rename(folder)
    except BaseException:
        if old_dir is not None and (old_dir / NAME).exists() and not folder.exists():
            (old_dir / NAME).rename(folder)  # put the earlier copy back
        raise
    finally:
        shutil.rmtree(fresh_dir, ignore_errors=True)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    return folder, sorted(files), existed


def _check_replaceable(folder: Path) -> bool:
    """True if `folder` holds an earlier copy of this skill, False if it is absent or empty; NotOurs otherwise."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise NotOurs(f"{folder} exists and is not a folder" + (" (it is a link)" if folder.is_symlink() else ""))
    if not folder.exists():
        return False
    contents = _contents(folder)
    if not contents:
        return False
    head = contents.get("SKILL.md", b"")[:2000].decode("utf-8", errors="replace")
    if not re.search(rf"^name:\s*{re.escape(NAME)}\s*$", head, re.MULTILINE):
        raise NotOurs(f"{folder} holds files that are not this skill")
    record = _record(contents.pop(RECORD, None))
    if record is not None:
        changed = sorted(name for name, data in contents.items()
                         if record.get(name) != hashlib.sha256(data).hexdigest())
        if changed:
            raise NotOurs(f"{folder} holds files changed or added since the skill was installed "
                          f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})")
    return True


def _contents(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path; NotOurs for anything but plain folders and regular files (a link
    or a named pipe is not what an install leaves), or for more than a skill holds."""
    found: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(root) / name
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                continue
            relative = path.relative_to(folder).as_posix()
            if not stat.S_ISREG(info.st_mode):
                raise NotOurs(f"{folder} holds {relative}, which is not a regular file")
            if info.st_size > MAX_FILE_BYTES or len(found) >= MAX_FILES:
                raise NotOurs(f"{folder} holds more than this skill does ({relative})")
            found[relative] = path.read_bytes()
    return found


def _record(data: bytes | None) -> dict[str, str] | None:
    if data is None:
        return None  # a copy from before installs were recorded: replaced as it is
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise NotOurs(f"its {RECORD} is damaged")
    return {str(k): str(v) for k, v in record.items()}


#: More than this in the folder is not a copy of this skill.
MAX_FILES = 64
MAX_FILE_BYTES = 1024 * 1024
