"""The fair share of ImageMirror sync slots, across namespaces and source registries."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

from ecr_operator.reconcile.mirror import SlotLimits, SlotRequest, next_admitted


class FairSlots:
    """Sync slots shared fairly: at most ``total`` passes at once, ``per_namespace`` of one namespace and
    ``per_source`` from one source registry; a freed slot goes to the namespace running the fewest passes
    (``reconcile.mirror.next_admitted`` decides). With every pass under a deadline, a tenant whose upstream
    hangs holds at most its share, for at most the deadline, and other namespaces keep syncing."""

    def __init__(self, limits: SlotLimits) -> None:
        self.limits = limits
        self._arrivals = itertools.count()
        self._waiting: dict[SlotRequest, asyncio.Future[None]] = {}
        self._running: list[SlotRequest] = []

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def slot(self, namespace: str, source: str) -> AsyncIterator[None]:
        request = SlotRequest(namespace, source, next(self._arrivals))
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[request] = admitted
        self._dispatch()
        try:
            await admitted
        except BaseException:
            if self._waiting.pop(request, None) is None:  # admitted just as it was cancelled
                self._release(request)
            raise
        try:
            yield
        finally:
            self._release(request)

    def _release(self, request: SlotRequest) -> None:
        with contextlib.suppress(ValueError):
            self._running.remove(request)
        self._dispatch()

    def _dispatch(self) -> None:
        while True:
            chosen = next_admitted(list(self._waiting), self._running, self.limits)
            if chosen is None:
                return
            future = self._waiting.pop(chosen)
            self._running.append(chosen)
            if not future.done():
                future.set_result(None)
