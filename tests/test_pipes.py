"""The stdio server's pipes, served by the event loop (pipes.py): the wire is claimed (nothing else in the process
writes on it), lines come and go whole, and descriptors 0 and 1 are given back as they were; anything that is not
a pipe or socket is left to the SDK's own transport."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import asyncio, os, sys, threading
    from flux_klein_mcp.pipes import claim, served

    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    os.dup2(to_server_r, 0); os.dup2(from_server_w, 1)
    before = (os.fstat(0).st_ino, os.fstat(1).st_ino)

    async def main(held):
        async with served(held) as (reader, writer):
            os.write(1, b"stray output\\n")  # a library printing while the server runs: not on the wire
            assert os.read(0, 10) == b""  # and fd 0 reads nothing of the client's
            def client():  # more than a pipe holds: written while the server reads
                os.write(to_server_w, "é line one\\n".encode() + b"\\xff two\\n" + b"x" * 200_000 + b"\\nlast")
                os.close(to_server_w)

            threading.Thread(target=client).start()
            lines = [line async for line in reader]
            await writer.write("answer\\n")
            await writer.flush()
        return lines

    with claim() as held:
        assert held is not None
        lines = asyncio.run(main(held))
    assert lines[:2] == ["é line one\\n", "\\ufffd two\\n"] and len(lines[2]) == 200_001 and lines[3] == "last", lines
    assert (os.fstat(0).st_ino, os.fstat(1).st_ino) == before
    assert os.get_blocking(0) and os.get_blocking(1)
    os.close(1)
    assert os.read(from_server_r, 100) == b"answer\\n"
    print("ok", file=sys.stderr)
''')


def test_the_wire_is_claimed_served_and_given_back():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["stray output", "ok"]


def test_a_terminal_or_a_file_is_left_to_the_sdk(tmp_path):
    script = "from flux_klein_mcp.pipes import claim\nwith claim() as held: print(held is None)"
    source = tmp_path / "requests.jsonl"
    source.write_text("")
    with source.open() as stdin:
        done = subprocess.run([sys.executable, "-c", script], stdin=stdin, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True", done.stderr
