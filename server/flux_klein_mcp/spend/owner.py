"""Who made a reservation, and whether that process is still alive: a reservation whose owner died is booked as
spent (the provider may have charged its call), never silently freed.

An owner is written as `host|boot|pid|start`: the host name and pid namespace (two containers sharing a host name
cannot see each other's pids), the boot (a pid from before a reboot means nothing now), the pid, and the process's
start time (a pid reused by a new process, as pid 1 is in every container restart, is not the owner). A process
on another host cannot be checked from here: its reservations end when they expire (and, on PostgreSQL, when the
owner's connection is gone: see `postgres.py`).
"""

from __future__ import annotations

import os
import socket
import sys

_UNKNOWN = "-"
_ME: dict[int, str] = {}


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return _UNKNOWN


def _host() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    # (No "|" in the result: it separates the owner's fields.)
    return f"{socket.gethostname()} {namespace}".strip().replace("|", "/")


def _started(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc), "-" where /proc is not there, None when the
    process is gone or a zombie (killed, not yet reaped by its parent: it will never settle anything)."""
    if not os.path.isdir("/proc/self"):
        return _UNKNOWN
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # there, but not ours to read: ask the kernel instead
        return _UNKNOWN
    fields = stat.rsplit(")", 1)[-1].split()  # (the command name in parentheses may hold spaces)
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def me() -> str:
    """This process, as an owner (computed once per process: a forked child is another owner)."""
    pid = os.getpid()
    if pid not in _ME:
        boot = _read("/proc/sys/kernel/random/boot_id")
        _ME[pid] = "|".join((_host(), boot, str(pid), _started(pid) or _UNKNOWN))
    return _ME[pid]


def alive(owner: str) -> bool | None:
    """True while the process that wrote `owner` runs, False once it is gone, None when this host cannot tell (it
    was another host; the caller then goes by the reservation's expiry)."""
    if owner == me():
        return True
    parts = owner.split("|")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    host, boot, pid_text, started = parts
    here_host, here_boot, _, _ = me().split("|")
    if host != here_host:
        return None
    if boot != _UNKNOWN and here_boot != _UNKNOWN and boot != here_boot:
        return False  # written before this host rebooted
    pid = int(pid_text)
    if sys.platform == "win32":  # pragma: no cover - no /proc, and os.kill(pid, 0) would end the process
        return None
    now = _started(pid)
    if now is None:
        return False
    if now != _UNKNOWN:
        return started == _UNKNOWN or now == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
