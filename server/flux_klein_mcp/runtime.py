"""What one server (or one CLI run) shares across calls: the settings, the one HTTP client, the providers, the
output folder, the bounded worker pool and the spend accountant."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from .config import Settings
from .errors import StorageError
from .images import return_freed_images_to_the_os
from .providers import Providers
from .providers.base import Sleep
from .spend import Accountant, Ledger
from .store import Store

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now().astimezone()


@dataclass
class Runtime:
    """What one server (or one CLI run) shares across calls: settings, the one HTTP client, the output folder."""

    settings: Settings
    http: httpx.AsyncClient
    providers: Providers
    store: Store
    spend: Accountant
    #: Bounds the Pillow and disk work running at once, however many calls arrive (memory is bounded in images.py).
    image_work: anyio.CapacityLimiter
    sleep: Sleep = anyio.sleep
    clock: Callable[[], datetime] = _now
    #: Serving clients on other machines (HTTP): their roots and this process's working directory name nothing
    #: they may read here, so input files come only from FLUX_KLEIN_INPUT_DIRS and the output folder.
    remote: bool = False

    async def in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking image or file work in a worker thread, a bounded number at a time."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.image_work)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncIterator[Runtime]:
        """A runtime with its one shared HTTP client, closed on exit. `transport` is the tests' seam."""
        return_freed_images_to_the_os()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(transport=transport, limits=limits, follow_redirects=False) as http:
            store = Store(settings.output_dir, explicit=settings.output_dir_explicit)
            work = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
            spend = Accountant(Ledger(settings.ledger), settings.budget_usd, settings.daily_budget_usd,
                               clock=lambda: runtime.clock())
            runtime = cls(settings=settings, http=http, providers=Providers(settings), store=store, spend=spend,
                          image_work=work)
            with contextlib.suppress(StorageError):  # sweeps what a killed run left; a bad folder is reported per call
                await runtime.in_worker(lambda: store.folder)
            yield runtime
