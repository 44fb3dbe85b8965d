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
from typing import NoReturn

from .errors import ConfigError

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
    config = os.environ.get("CLAUDE_CONFIG_DIR", "").strip()
    return _expanded(Path(config), "CLAUDE_CONFIG_DIR") / "skills" if config else _home() / ".claude" / "skills"


def _expanded(path: Path, named: str) -> Path:
    try:
        return path.expanduser()
    except RuntimeError:  # ~someone, and no such user
        raise ConfigError(f"{named} ({path}) starts with the home folder of a user this machine does not know. "
                          "Use an absolute path, or pass --dir.") from None


def _home() -> Path:
    try:
        return Path.home()
    except RuntimeError:
        raise ConfigError("There is no home folder (HOME is not set) to find ~/.claude in. Pass --dir, or set "
                          "CLAUDE_CONFIG_DIR.") from None


class NotOurs(Exception):
    """The target holds something this command did not write: install leaves it alone. `forcible`: `--force`
    may replace it (a folder that can be read whole)."""

    def __init__(self, message: str, *, forcible: bool = True) -> None:
        super().__init__(message)
        self.forcible = forcible


#: What an install wrote (each file's SHA-256), kept in the skill folder: a later install replaces only that.
RECORD = ".flux-klein-mcp-install.json"


def install(parent: Path | None, *, force: bool = False) -> tuple[Path, list[str], bool]:
    """Write the skill into `parent/generate-image-low-flux/` (default: `default_dir()`); returns that folder, the
    files, and whether it replaced an earlier copy.

    An earlier copy this command installed (its record names every file and its checksum) is replaced whole, so a
    file the new version dropped does not linger, by writing the new copy beside it and swapping the two. Anything
    else is never deleted: a person's changes or added files, a copy made by hand (no record), a folder holding
    something else, or one that cannot be read whole (so not checked) is refused, untouched, unless `force` (a
    folder that can be read whole is then replaced, whatever it holds). The working folders have unguessable names,
    so nothing planted beside the target can redirect the writes.
    """
    parent = default_dir() if parent is None else _expanded(parent, "--dir")
    folder = parent / NAME
    files = skill_files()
    existed = _check_replaceable(folder, force)
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


def _check_replaceable(folder: Path, force: bool) -> bool:
    """True if `folder` holds a copy this command may replace, False if it is absent or empty; NotOurs otherwise."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise NotOurs(f"{folder} exists and is not a folder" + (" (it is a link)" if folder.is_symlink() else ""),
                      forcible=False)
    if not folder.exists():
        return False
    contents = _contents(folder, limited=not force)
    if force or not contents:
        return bool(contents)
    head = contents.get("SKILL.md", b"")[:2000].decode("utf-8", errors="replace")
    if not re.search(rf"^name:\s*{re.escape(NAME)}\s*$", head, re.MULTILINE):
        raise NotOurs(f"{folder} holds files that are not this skill")
    if RECORD not in contents:
        raise NotOurs(f"{folder} holds a copy of this skill that this command did not install (it has no {RECORD}), "
                      "so it may hold your own changes")
    record = _record(contents.pop(RECORD))
    changed = sorted(name for name, data in contents.items() if record.get(name) != hashlib.sha256(data).hexdigest())
    if changed:
        raise NotOurs(f"{folder} holds files changed or added since the skill was installed "
                      f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})")
    return True


def _contents(folder: Path, limited: bool) -> dict[str, bytes]:
    """Every file under `folder` by relative path (read whole, so every byte is checked). NotOurs for anything but
    plain folders and regular files (a link or a named pipe is not what an install leaves), for a part that cannot
    be read (it could not be checked, nor surely deleted), or (`limited`) for more than a skill holds."""
    found: dict[str, bytes] = {}

    def unreadable(exc: OSError) -> NoReturn:
        where = Path(exc.filename).relative_to(folder).as_posix() if exc.filename else folder.name
        raise NotOurs(f"{folder} cannot be read whole ({where}: {exc.strerror or exc}), so it cannot be checked; fix "
                      "its permissions, or remove it yourself", forcible=False)

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        for name in dirs + names:
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            try:
                info = path.lstat()
                if not limited:  # (--force: what can be listed whole can be deleted; nothing is read)
                    found[relative] = b""
                    continue
                if stat.S_ISDIR(info.st_mode):
                    continue
                if not stat.S_ISREG(info.st_mode):
                    raise NotOurs(f"{folder} holds {relative}, which is not a regular file")
                if info.st_size > MAX_FILE_BYTES or len(found) >= MAX_FILES:
                    raise NotOurs(f"{folder} holds more than this skill does ({relative})")
                found[relative] = path.read_bytes()
            except OSError as exc:
                unreadable(exc)
    return found


def _record(data: bytes) -> dict[str, str]:
    try:
        record = json.loads(data)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise NotOurs(f"the skill's {RECORD} is damaged")
    return {str(k): str(v) for k, v in record.items()}


#: More than this in the folder is not a copy of this skill.
MAX_FILES = 64
MAX_FILE_BYTES = 1024 * 1024
