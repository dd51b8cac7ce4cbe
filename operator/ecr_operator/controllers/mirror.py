"""The ImageMirror controller: one loop per mirror syncing on its schedule, woken early on demand.

A loop (a kopf daemon) rather than a timer: each mirror has its own interval (minutes to days, jittered),
a spec change must cut the wait short, and deleting a mirror must stop a copy in flight. The loop survives
every exception: a pass that fails unexpectedly is logged and retried with a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ecr_operator.controllers.mirror_pass import (
    DEFAULT_INTERVAL,
    KIND,
    Logger,
    MirrorObject,
    MirrorPass,
    MirrorServices,
)
from ecr_operator.reconcile.mirror import first_sync_delay, retry_delay, unexpected_failure


class StopSignal(Protocol):
    """Set when the loop must end (kopf's ``DaemonStopped``): true once set, and awaitable with a timeout."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[Any]: ...


class MirrorController:
    """Shared by every mirror's loop: the registries and their clients, the fair share of syncs at once,
    per-mirror wake-ups, and the bookkeeping passes leave for the next one."""

    def __init__(self, services: MirrorServices) -> None:
        self.services = services
        self._wakeups: dict[str, asyncio.Event] = {}

    async def keep_mirrored(
        self, current: Callable[[], MirrorObject], *, restarted: bool, stopped: StopSignal, logger: Logger
    ) -> None:
        """Sync the mirror ``current()`` describes (re-read before every pass: the spec may have changed)
        until ``stopped``. A loop kopf restarted (it never ends by itself but for stopping) syncs at once."""
        mirror = current()
        delay: float | None = 0.0
        if not restarted:
            spread = random.random()  # noqa: S311 -- scheduling jitter
            delay = first_sync_delay(mirror.status, mirror.generation, datetime.now(UTC), spread)
        while not stopped:
            await self.sleep(mirror.uid, delay, stopped)
            if stopped:
                break
            delay = await self._pass(current(), logger)

    async def _pass(self, mirror: MirrorObject, logger: Logger) -> float | None:
        try:
            return await MirrorPass(self.services, mirror, logger).run()
        except Exception as error:
            # MirrorPass reports its own failures; this is the last line, so the loop never dies.
            logger.exception("Mirror pass failed unexpectedly")
            spread = random.uniform(-1.0, 1.0)  # noqa: S311 -- scheduling jitter
            failures = self.services.count_failure(mirror.uid)
            return retry_delay(failures, unexpected_failure(error), spread, DEFAULT_INTERVAL)

    # --- wake-ups -------------------------------------------------------------------------------------

    def request_sync(self, uid: str) -> None:
        """Make the mirror's loop sync now (spec changed, or a sync was requested)."""
        self._wakeups.setdefault(uid, asyncio.Event()).set()

    async def sleep(self, uid: str, seconds: float | None, stopped: StopSignal) -> None:
        """Wait ``seconds`` (None: until woken), or less when a sync is requested or the loop stops."""
        wake = self._wakeups.setdefault(uid, asyncio.Event())
        if not wake.is_set() and not stopped:
            waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(_stopped(stopped, seconds))]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        wake.clear()

    def forget(self, uid: str, namespace: str, name: str) -> None:
        """A deleted mirror leaves nothing behind: wake-up, bookkeeping, readiness, its gauge."""
        self._wakeups.pop(uid, None)
        self.services.failures.pop(uid, None)
        self.services.statuses.pop(uid, None)
        self.services.readiness.forget(KIND, uid)
        with contextlib.suppress(KeyError):
            self.services.metrics.mirror_last_success.remove(namespace, name)


async def _stopped(stopped: StopSignal, seconds: float | None) -> None:
    await stopped.wait(seconds)  # awaitable in async daemons (kopf.AsyncFlagPromise)
