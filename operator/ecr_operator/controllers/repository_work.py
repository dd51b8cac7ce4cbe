"""When EcrRepository objects are reconciled: at once when their spec is new or changed, after a backoff when
a reconcile failed transiently, and otherwise once per drift pass.

kopf hands over watch events (an ``on.event`` handler) and runs deletions (``on.delete``, which owns the
finalizer); this class owns everything else. Between reconciles nothing is kept per object but its key
(namespace and name): a drift pass reads each object from the apiserver when its turn comes, in chunks of
one DescribeRepositories batch, paced over the interval and under the drift AWS request rate. That replaces
a kopf timer per object, which held an asyncio task and the object's whole body for the object's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.aws.calls import RequestRate, paced_by
from ecr_operator.aws.ecr import MAX_DESCRIBE_BATCH
from ecr_operator.config import Settings
from ecr_operator.controllers.repository import RepositoryController, RepositoryObject, RetryLater
from ecr_operator.kube import Kube, KubeApiError

logger = logging.getLogger(__name__)

# A pass takes at least this share of the interval, so that many objects do not all ask at once.
PASS_SPREAD = 0.5
# A failure outside the controller's own handling (the apiserver unreachable for a read) is retried after.
READ_RETRY_DELAY = 10.0


@dataclass(frozen=True)
class ObjectKey:
    namespace: str
    name: str


@dataclass
class _Pending:
    due: float
    retry: int
    obj: RepositoryObject | None
    """The object as last watched; None for a retry, which reads it afresh."""


def reconcile_due(generation: int | None, status: Mapping[str, Any]) -> bool:
    """A watch event asks for a reconcile when the spec was never reconciled at this generation."""
    return status.get("observedGeneration") != generation


class RepositoryWork:
    """The EcrRepository work queue: keys of every watched object, due reconciles, and the drift passes."""

    def __init__(
        self,
        controller: RepositoryController,
        kube: Kube,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        self._controller = controller
        self._kube = kube
        self._workers = settings.repository_workers
        self._interval = settings.drift_interval.total_seconds()
        self._jitter = settings.drift_pass_jitter.total_seconds()
        self._drift_rate = settings.drift_aws_requests_per_second
        self._clock = clock
        self._random_fraction = random_fraction
        self._keys: dict[str, ObjectKey] = {}
        self._pending: dict[str, _Pending] = {}
        self._due: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._running: dict[str, int | None] = {}
        """UIDs being reconciled or checked, with the generation they are reconciled at."""
        self._reconciled: dict[str, int | None] = {}
        """The generation each object was last reconciled at: watch events that predate that reconcile's
        status write (kopf's finalizer patch, say) still show the old observedGeneration."""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"repository worker {number}")
            for number in range(self._workers)
        ]
        self._tasks.append(asyncio.create_task(self._drift_passes(), name="repository drift passes"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # --- what kopf's watch tells --------------------------------------------------------------------

    def watched(self, obj: RepositoryObject, *, deleting: bool) -> None:
        """The object as a watch event (or kopf's initial listing) shows it."""
        if deleting:
            # kopf's delete handler takes over; nothing more is reconciled for it.
            self._controller.deletion_started(obj.uid)
            self._forget(obj.uid)
            return
        self._keys[obj.uid] = ObjectKey(obj.namespace, obj.name)
        pending = self._pending.get(obj.uid)
        if pending is not None:
            pending.obj = obj  # the newest view, at the same time
        elif reconcile_due(obj.generation, obj.status) and not self._reconciling(obj.uid, obj.generation):
            self._schedule(obj.uid, 0.0, retry=0, obj=obj)

    def _reconciling(self, uid: str, generation: int | None) -> bool:
        """This generation is being reconciled now, or was already."""
        if uid in self._running:
            return self._running[uid] == generation
        return uid in self._reconciled and self._reconciled[uid] == generation

    def gone(self, uid: str) -> None:
        """The object no longer exists."""
        self._forget(uid)
        self._controller.forget(uid)

    def _forget(self, uid: str) -> None:
        self._keys.pop(uid, None)
        self._pending.pop(uid, None)
        self._reconciled.pop(uid, None)

    def __len__(self) -> int:
        return len(self._keys)

    # --- reconciles ---------------------------------------------------------------------------------

    def _schedule(self, uid: str, delay: float, *, retry: int, obj: RepositoryObject | None) -> None:
        due = self._clock() + delay
        self._pending[uid] = _Pending(due, retry, obj)
        heapq.heappush(self._due, (due, next(self._order), uid))
        self._wake.set()

    async def _next_due(self) -> tuple[str, _Pending]:
        while True:
            now = self._clock()
            while self._due:
                due, _, uid = self._due[0]
                pending = self._pending.get(uid)
                if pending is None or pending.due != due:
                    heapq.heappop(self._due)  # superseded or forgotten
                    continue
                if due > now or uid in self._running:
                    break
                heapq.heappop(self._due)
                del self._pending[uid]
                return uid, pending
            self._wake.clear()
            timeout = max(0.0, self._due[0][0] - now) if self._due else None
            if self._due and self._due[0][2] in self._running:
                timeout = 0.05  # its previous reconcile is about to end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _work(self) -> None:
        while True:
            uid, pending = await self._next_due()
            self._running[uid] = pending.obj.generation if pending.obj else None
            try:
                later = await self._reconcile(uid, pending)
            finally:
                generation = self._running.pop(uid, None)
            if later is None:
                if uid in self._keys:
                    self._reconciled[uid] = generation
            else:
                self._retry(uid, later, retry=pending.retry + 1)

    def _retry(self, uid: str, later: RetryLater, *, retry: int) -> None:
        """Queue the object again after ``later.delay``, unless it is gone or already due again."""
        if uid in self._keys and uid not in self._pending:
            self._schedule(uid, later.delay, retry=retry, obj=None)

    async def _reconcile(self, uid: str, pending: _Pending) -> RetryLater | None:
        try:
            obj = pending.obj or await self._read(uid)
            if obj is None:
                return None
            self._running[uid] = obj.generation
            return await self._controller.reconcile(obj, pending.retry)
        except Exception as error:  # one object's failure must not end the worker
            logger.exception("reconcile failed", extra={"uid": uid})
            return RetryLater(str(error), READ_RETRY_DELAY)

    async def _read(self, uid: str) -> RepositoryObject | None:
        """The object as stored now; None when it is gone or being deleted."""
        key = self._keys.get(uid)
        if key is None:
            return None
        body = await self._kube.read_object(ECR_REPOSITORY, key.namespace, key.name)
        metadata = (body or {}).get("metadata") or {}
        if body is None or metadata.get("uid") != uid or metadata.get("deletionTimestamp"):
            return None
        return RepositoryObject.from_body(body)

    # --- drift passes -------------------------------------------------------------------------------

    def pass_delay(self) -> float:
        """Seconds from one pass's start to the next: the interval plus up to ``jitter`` more."""
        return self._interval + self._random_fraction() * self._jitter

    async def _drift_passes(self) -> None:
        # The first pass comes soon after start-up, as kopf's resume handlers used to: a restarted operator
        # must not wait a whole interval to notice what changed while it was away.
        # It checks only what this process has not reconciled itself: that is AWS as the spec says already.
        await asyncio.sleep(self._random_fraction() * min(self._jitter, self._interval))
        resuming = True
        while True:
            started = self._clock()
            try:
                await self.drift_pass(resuming=resuming)
            except Exception:
                logger.exception("drift pass failed")
            resuming = False
            await asyncio.sleep(max(0.0, started + self.pass_delay() - self._clock()))

    async def drift_pass(self, *, resuming: bool = False) -> None:
        """Check every known object once, a DescribeRepositories batch at a time, under the drift rate;
        ``resuming``: only those found converged when the process started (none reconciled since)."""
        uids = [uid for uid in self._keys if not (resuming and uid in self._reconciled)]
        chunks = [uids[at : at + MAX_DESCRIBE_BATCH] for at in range(0, len(uids), MAX_DESCRIBE_BATCH)]
        if not chunks:
            return
        gap = self._interval * PASS_SPREAD / len(chunks)
        rate = RequestRate(self._drift_rate, clock=self._clock)
        started = self._clock()
        with paced_by(rate):
            for number, chunk in enumerate(chunks):
                if number:
                    await asyncio.sleep(max(0.0, started + gap - self._clock()))
                started = self._clock()
                await self._check_chunk(chunk)

    async def _check_chunk(self, chunk: Sequence[str]) -> None:
        """Read the chunk's objects, then check them all at once: their describes join one
        DescribeRepositories batch however slowly the apiserver answered the reads."""
        # An object whose reconcile is due or under way is skipped: that reconcile checks AWS anyway.
        claimed = [uid for uid in chunk if uid not in self._pending and uid not in self._running]
        for uid in claimed:
            self._running[uid] = None
        try:
            objects = await asyncio.gather(*(self._read_for_check(uid) for uid in claimed))
            outcomes = await asyncio.gather(*(self._check(obj) for obj in objects))
        finally:
            for uid in claimed:
                self._running.pop(uid, None)
        for uid, later in zip(claimed, outcomes, strict=True):
            if later is not None:
                self._retry(uid, later, retry=1)

    async def _read_for_check(self, uid: str) -> RepositoryObject | RetryLater | None:
        try:
            obj = await self._read(uid)
        except KubeApiError as error:
            logger.warning("could not read an EcrRepository for its drift check", extra={"error": str(error)})
            return RetryLater(str(error), READ_RETRY_DELAY)
        if obj is not None:
            self._running[uid] = obj.generation
        return obj

    async def _check(self, obj: RepositoryObject | RetryLater | None) -> RetryLater | None:
        """The drift check of what ``_read_for_check`` found; an outcome it already knew is passed on."""
        if not isinstance(obj, RepositoryObject):
            return obj
        try:
            return await self._controller.check_drift(obj, 0)
        except Exception as error:  # one object's failure must not end the pass
            logger.exception("drift check failed")
            return RetryLater(str(error), READ_RETRY_DELAY)
