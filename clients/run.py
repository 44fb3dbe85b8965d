"""`make test-clients`: every check module under its client's interpreter, a few at a time; one line per check, then
a count, and exit 1 if any check failed (or a module died before reporting).

Run: `.venv/bin/python -m clients.run [module ...]` (after `make test-clients` has built the venvs)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from clients.common import ROOT

PROJECT, CLIENTS, LANGCHAIN = (str(ROOT / venv / "bin" / "python") for venv in (".venv", ".venv-clients",
                                                                              ".venv-langchain"))
#: (module, interpreter), slowest first so that they overlap best.
MODULES = [
    ("check_langchain", LANGCHAIN),
    ("check_inspector", PROJECT),
    ("check_pydantic_ai", CLIENTS),
    ("check_packaging", PROJECT),
    ("check_openai_agents", CLIENTS),
    ("check_sdk", PROJECT),
    ("check_fastmcp", PROJECT),
]
#: Nothing of the developer's reaches the server: no provider key, no FLUX_KLEIN_* setting, no budget.
SECRET = re.compile(r"(_API_KEY|_TOKEN|_SECRET)$|^FLUX_KLEIN_")


@dataclass
class Outcome:
    module: str
    code: int
    stdout: str
    stderr: str
    seconds: float

    def count(self, status: str) -> int:
        return sum(line.startswith(status + " ") for line in self.stdout.splitlines())


def run(module: str, python: str) -> Outcome:
    env = {key: value for key, value in os.environ.items() if not SECRET.search(key)}
    started = time.monotonic()
    try:
        done = subprocess.run([python, "-m", f"clients.{module}"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as late:
        code, stdout, stderr = -1, str(late.stdout or ""), "timed out after 600 s"
    except OSError as error:
        code, stdout, stderr = -1, "", f"{python}: {error} (run `make test-clients` to build the venvs)"
    return Outcome(module, code, stdout, stderr, time.monotonic() - started)


def main(selected: list[str]) -> int:
    modules = [(module, python) for module, python in MODULES if not selected or module in selected]
    started = time.monotonic()
    passed = failed = skipped = 0
    with ThreadPoolExecutor(max_workers=int(os.environ.get("CLIENT_JOBS", "3"))) as pool:
        for outcome in pool.map(lambda item: run(*item), modules):
            print(outcome.stdout, end="", flush=True)
            passed, skipped = passed + outcome.count("PASS"), skipped + outcome.count("SKIP")
            failed += outcome.count("FAIL")
            if outcome.code != 0:
                if not outcome.count("FAIL"):
                    failed += 1
                    print(f"FAIL {outcome.module}: exited {outcome.code} before reporting")
                print(f"--- {outcome.module} stderr (last lines):\n" + "\n".join(outcome.stderr.splitlines()[-25:]))
    print(f"client checks took {time.monotonic() - started:.0f} s")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
