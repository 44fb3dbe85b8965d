"""Stdin and stdout served by the event loop itself when they are pipes or sockets (as every MCP client starts a
stdio server), instead of by worker threads.

The SDK reads each line in a thread and writes each message in two more thread jobs (write, then flush): every
call paid those hand-offs between threads, and on a busy machine each one waits for a core. Here both ends are
non-blocking and served by the loop; the descriptors are claimed as the SDK claims them (fd 0 then reads the
null device and fd 1 goes to stderr while serving, so nothing else in the process can write on the wire), and
restored on exit. A terminal, a regular file or anything else keeps the SDK's own transport (`claim` returns
None): making a shared terminal non-blocking would disturb the shell it belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

#: The longest line read: a request carries its input images as data URLs (the SDK's reader has no limit at all).
MAX_LINE_BYTES = 1 << 30


@dataclass
class Claim:
    """Private duplicates of the wire's two ends, and copies of the descriptors 0 and 1 to put back on exit."""

    read_fd: int
    write_fd: int
    saved: tuple[int, int]

    def release(self) -> None:
        for fd, saved in zip((0, 1), self.saved, strict=True):
            with contextlib.suppress(OSError):
                os.dup2(saved, fd)
                os.set_blocking(fd, True)  # (the loop made the shared pipe end non-blocking)
            with contextlib.suppress(OSError):
                os.close(saved)


@contextlib.contextmanager
def claim() -> Iterator[Claim | None]:
    """The wire's descriptors, claimed, when both are pipes or sockets on a POSIX system; else None."""
    if sys.platform == "win32" or not all(_pipe_or_socket(fd) for fd in (0, 1)):
        yield None
        return
    taken: list[int] = []
    try:
        taken = [os.dup(0), os.dup(1)]
        taken += [os.dup(0), os.dup(1)]
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
        os.dup2(2, 1)
    except OSError:  # out of descriptors: undo, and leave the wire to the SDK
        if len(taken) == 4:
            Claim(taken[0], taken[1], (taken[2], taken[3])).release()
            taken = taken[:2]
        for fd in taken:
            os.close(fd)
        yield None
        return
    held = Claim(taken[0], taken[1], (taken[2], taken[3]))
    try:
        yield held
    finally:
        held.release()


def _pipe_or_socket(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class LineReader:
    """`async for line in reader`: the wire's lines as text (UTF-8, undecodable bytes replaced, as the SDK reads)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:  # end of input: a last line without its newline still counts
                if end.partial:
                    yield end.partial.decode("utf-8", "replace")
                return
            yield line.decode("utf-8", "replace")


class LineWriter:
    """`await writer.write(text)` then `await writer.flush()`, as the SDK's stdout writer calls them."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()  # (waits only while the client is slow to read)


@contextlib.asynccontextmanager
async def served(held: Claim) -> AsyncIterator[tuple[LineReader, LineWriter]]:
    """The claimed descriptors as the loop's own non-blocking streams."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    with open(held.read_fd, "rb", buffering=0, closefd=True) as rfile, \
            open(held.write_fd, "wb", buffering=0, closefd=True) as wfile:
        read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), rfile)
        write_transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wfile)
        writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
        try:
            yield LineReader(reader), LineWriter(writer)
        finally:
            read_transport.close()
            write_transport.close()
