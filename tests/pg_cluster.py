"""A throw-away PostgreSQL server for the ledger's suite: `python -m tests.pg_cluster -- COMMAND...`.

It makes a cluster in a temporary folder (initdb), starts it on 127.0.0.1 on a port chosen now (pg_ctl), runs
COMMAND with FLUX_KLEIN_TEST_POSTGRES set to its URL, then stops it and removes the folder, whatever COMMAND did.
PostgreSQL refuses to run as root (and CI runs as root): there, the cluster runs as the `postgres` user that
Debian's package creates. Authentication is `trust`, on loopback only: nothing but this machine can reach it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

VARIABLE = "FLUX_KLEIN_TEST_POSTGRES"


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise SystemExit("pg_cluster: PostgreSQL is not installed (apt-get install postgresql)")
    return Path(versions[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise SystemExit("pg_cluster: running as root needs the 'postgres' user (Debian's postgresql "
                                 "package makes it)") from None
        # /tmp rather than $TMPDIR: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="flux-pg-", dir="/tmp" if self.user else None))
        if self.user:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.port = 0

    def _run(self, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if self.user:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        return subprocess.run([str(self.bin / argv[0]), *argv[1:]], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, cwd=self.root, **kwargs)

    def start(self) -> str:
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                         "-E", "UTF8", "--locale=C")
        if done.returncode:
            raise SystemExit(f"pg_cluster: initdb failed:\n{done.stdout}{done.stderr}")
        for _ in range(5):  # the port was free a moment ago; another process may take it first
            self.port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options,
                             "-w", "-t", "60", "start")
            if done.returncode == 0:
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        log = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"pg_cluster: the server did not start:\n{done.stdout}{done.stderr}\n{log}")

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SystemExit("usage: python -m tests.pg_cluster -- COMMAND [ARGS...]")
    cluster = Cluster()
    try:
        url = cluster.start()
        print(f"pg_cluster: PostgreSQL at {url} (data in {cluster.root})", file=sys.stderr, flush=True)
        return subprocess.call(argv, env={**os.environ, VARIABLE: url})
    finally:
        cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
