"""What one server (or one CLI run) shares across calls: the settings, the one HTTP client, the providers, the
output folder, the bounded worker pool and the spend accountant.

When people sign in (OAuth over HTTP), each person has an output folder and an accountant of their own, inside the
output folder and on the same ledger: `store` and `spend` give the ones of the person the request comes from
(`people.current()`), so the code that saves and books never has to be told who that is.

The HTTP client (and its TLS context) and the providers are made on first use: listing the tools, which every
client does at start-up, needs neither.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread

from . import people
from .config import Settings
from .errors import StorageError
from .people import PEOPLE_FOLDER, Person
from .spend import Accountant, open_ledger
from .store import Store, user_output_dir

if TYPE_CHECKING:
    import httpx

    from .providers import Providers
    from .providers.base import Sleep

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now().astimezone()


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


@dataclass
class Runtime:
    """What one server (or one CLI run) shares across calls. Build it with `Runtime.open`."""

    settings: Settings
    #: The output folder and the accountant when nobody is signed in (stdio, the CLI, the static token).
    anyone_store: Store
    anyone_spend: Accountant
    #: Bounds the Pillow and disk work running at once, however many calls arrive (memory is bounded in images.py).
    image_work: anyio.CapacityLimiter
    #: Bounds the large provider replies held at once, from their bodies to their saved images (`providers.Gate`).
    replies: anyio.CapacityLimiter
    sleep: Sleep = _sleep
    clock: Callable[[], datetime] = _now
    #: Serving clients on other machines (HTTP): their roots and this process's working directory name nothing
    #: they may read here, so input files come only from FLUX_KLEIN_INPUT_DIRS and the output folder.
    remote: bool = False
    #: The tests' seam: an httpx transport to use instead of the network.
    transport: Any = field(default=None, repr=False)
    _http: httpx.AsyncClient | None = field(default=None, repr=False)
    _disk: ThreadPoolExecutor | None = field(default=None, repr=False)
    _providers: Providers | None = field(default=None, repr=False)
    #: Each signed-in person's output folder and accountant, made on their first request and kept for the process's
    #: life (an accountant holds their calls in flight; people are only those the authorization server signs in).
    _people: dict[str, tuple[Store, Accountant]] = field(default_factory=dict, repr=False)
    _people_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def store(self) -> Store:
        """The output folder of the person this request comes from (or the one folder when nobody signs in)."""
        person = people.current()
        return self.anyone_store if person is None else self._desk(person)[0]

    @property
    def spend(self) -> Accountant:
        """The accountant of the person this request comes from: their budget, their ledger rows."""
        person = people.current()
        return self.anyone_spend if person is None else self._desk(person)[1]

    def _desk(self, person: Person) -> tuple[Store, Accountant]:
        with self._people_lock:
            desk = self._people.get(person.key)
            if desk is None:
                settings, shared = self.settings, self.anyone_spend
                inside = f"{PEOPLE_FOLDER}/{person.folder}"
                store = Store(settings.output_dir / inside, explicit=settings.output_dir_explicit,
                              fallback=user_output_dir() / inside)
                # (their own books on the one ledger connection, which the shared accountant opens and closes)
                spend = Accountant(lambda: shared.ledger, settings.budget_usd, settings.daily_budget_usd,
                                   clock=lambda: self.clock(), person=person.key,
                                   everyone_daily_budget=settings.server_daily_budget_usd)
                desk = self._people[person.key] = (store, spend)
            return desk

    @property
    def http(self) -> httpx.AsyncClient:
        """The one shared HTTP client, made on first use."""
        if self._http is None:
            import httpx

            limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
            self._http = httpx.AsyncClient(transport=self.transport, limits=limits, follow_redirects=False)
        return self._http

    @property
    def disk(self) -> ThreadPoolExecutor:
        """The threads that write and sync images while worker threads decode them (`saving`), made on first use."""
        if self._disk is None:
            # More than the decoding threads: they wait on the disk, not the CPU, and concurrent fsyncs share one
            # journal commit (a burst of saves costs a few commits, not one each).
            self._disk = ThreadPoolExecutor(4 * int(self.image_work.total_tokens), thread_name_prefix="flux-klein-disk")
        return self._disk

    @property
    def providers(self) -> Providers:
        if self._providers is None:
            from .providers import Providers

            self._providers = Providers(self.settings)
        return self._providers

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking image or file work in a worker thread, a bounded number at a time."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.image_work)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, transport: Any = None) -> AsyncIterator[Runtime]:
        """A runtime whose HTTP client is closed on exit. `transport` (an httpx transport) is the tests' seam."""
        return_freed_images_to_the_os()
        store = Store(settings.output_dir, explicit=settings.output_dir_explicit)
        # Image work is admitted by memory (images.MEMORY); threads only need to cover the cores and the disk waits.
        work = anyio.CapacityLimiter(max(4, 2 * (os.cpu_count() or 2)))
        spend = Accountant(lambda: open_ledger(settings.ledger, settings.timezone), settings.budget_usd,
                           settings.daily_budget_usd, clock=lambda: runtime.clock(),
                           everyone_daily_budget=settings.server_daily_budget_usd)
        replies = anyio.CapacityLimiter(max(4, 2 * (os.cpu_count() or 2)))
        runtime = cls(settings=settings, anyone_store=store, anyone_spend=spend, image_work=work, replies=replies,
                      transport=transport)
        with contextlib.suppress(StorageError):  # sweeps what a killed run left; a bad folder is reported per call
            await runtime.in_worker(lambda: store.folder)
        try:
            yield runtime
        finally:
            spend.close()
            if runtime._disk is not None:
                runtime._disk.shutdown()  # (idle by now: every save waits for its write before it returns)
            if runtime._http is not None:
                with anyio.CancelScope(shield=True):
                    await runtime._http.aclose()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number
#: Allocations this large get their own mapping, returned to the system when freed: decoded images (a 1024x1024 RGB
#: image is 4 MiB in Pillow's 4 bytes a pixel) and larger. Smaller buffers (reply bodies, base64 text, thumbnails)
#: come from the heap and are reused: at 256 KiB each of them was a fresh mapping, paid for in page faults on every
#: call (2-5 ms of a warm call), for a few MB less peak memory under load (bench/, docs/performance.md).
_MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
_M_ARENA_MAX = -8
_ARENAS = 2


def return_freed_images_to_the_os() -> None:
    """Make glibc give every large allocation (a decoded image) its own mapping, returned to the system when freed.

    By default glibc raises that threshold after the first large free, so later 16 MB image blocks come from
    per-thread heaps that keep their memory: the budget above would bound the pixels in use, but each worker
    thread would still keep the high-water mark of the images it once decoded. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    mallopt(_M_ARENA_MAX, _ARENAS)
