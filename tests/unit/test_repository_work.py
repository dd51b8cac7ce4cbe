"""The EcrRepository work queue: new specs reconciled at once and only once, retries read afresh, deleting
objects left to kopf's delete handler, and drift passes that check every object in describe-sized chunks
under the drift request rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, cast

import pytest

from ecr_operator.api.common import ResourceInfo
from ecr_operator.aws.calls import RequestRate, call_aws, paced_by
from ecr_operator.config import Settings
from ecr_operator.controllers.repository import RepositoryController, RepositoryObject, RetryLater
from ecr_operator.controllers.repository_work import RepositoryWork
from ecr_operator.kube import Kube

pytestmark = pytest.mark.unit


def body(name: str, *, generation: int = 1, observed: int | None = None, **metadata: Any) -> dict[str, Any]:
    status = {} if observed is None else {"observedGeneration": observed}
    return {
        "metadata": {
            "namespace": "team",
            "name": name,
            "uid": f"uid-{name}",
            "generation": generation,
            **metadata,
        },
        "spec": {"registry": {"region": "us-east-1"}},
        "status": status,
    }


class FakeController:
    def __init__(self) -> None:
        self.reconciled: list[tuple[str, int, int | None]] = []
        self.checked: list[str] = []
        self.deleting: set[str] = set()
        self.forgotten: list[str] = []
        self.answers: list[RetryLater | None] = []

    async def reconcile(self, obj: RepositoryObject, retry: int) -> RetryLater | None:
        self.reconciled.append((obj.name, retry, obj.status.get("observedGeneration")))
        return self.answers.pop(0) if self.answers else None

    async def check_drift(self, obj: RepositoryObject, retry: int) -> RetryLater | None:
        self.checked.append(obj.name)
        return None

    def deletion_started(self, uid: str) -> None:
        self.deleting.add(uid)

    def forget(self, uid: str) -> None:
        self.forgotten.append(uid)


class FakeKube:
    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.reads = 0

    async def read_object(self, resource: ResourceInfo, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.stored.get(name)


def work(controller: FakeController, kube: FakeKube, **settings: Any) -> RepositoryWork:
    return RepositoryWork(
        cast(RepositoryController, controller),
        cast(Kube, kube),
        Settings(**settings),
        random_fraction=lambda: 0.5,  # the first pass after start is half a jitter away
    )


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def running(queue: RepositoryWork, test: Callable[[], Awaitable[None]]) -> None:
    await queue.start()
    try:
        await test()
    finally:
        await queue.stop()


async def test_a_new_spec_is_reconciled_once_and_a_status_change_not_at_all() -> None:
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="1h")

    async def test() -> None:
        queue.watched(RepositoryObject.from_body(body("app")), deleting=False)
        await until(lambda: len(controller.reconciled) == 1)
        # The reconcile's own status write comes back as an event: it asks for nothing.
        queue.watched(RepositoryObject.from_body(body("app", observed=1)), deleting=False)
        # Neither does a late event of a write made before it (kopf's finalizer): same generation.
        queue.watched(RepositoryObject.from_body(body("app", finalizers=["f"])), deleting=False)
        await asyncio.sleep(0.1)

    await running(queue, test)
    assert controller.reconciled == [("app", 0, None)]
    assert len(queue) == 1
    assert kube.reads == 0  # the watched view was fresh: nothing was read


async def test_an_event_during_the_reconcile_of_its_generation_asks_for_nothing_more() -> None:
    controller, kube = FakeController(), FakeKube()
    release = asyncio.Event()
    reconcile = controller.reconcile

    async def slow_reconcile(obj: RepositoryObject, retry: int) -> RetryLater | None:
        await release.wait()
        return await reconcile(obj, retry)

    controller.reconcile = slow_reconcile  # type: ignore[method-assign]
    queue = work(controller, kube, drift_interval="1h")

    async def test() -> None:
        queue.watched(RepositoryObject.from_body(body("app")), deleting=False)
        await asyncio.sleep(0.05)
        queue.watched(RepositoryObject.from_body(body("app", finalizers=["f"])), deleting=False)
        queue.watched(RepositoryObject.from_body(body("app", generation=2)), deleting=False)
        release.set()
        await until(lambda: len(controller.reconciled) == 2)
        await asyncio.sleep(0.1)

    await running(queue, test)
    assert [generation for _, _, generation in controller.reconciled] == [None, None]
    assert len(controller.reconciled) == 2  # generation 1 once, then generation 2


async def test_a_changed_spec_is_reconciled_with_the_newest_view() -> None:
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="1h")
    queue.watched(RepositoryObject.from_body(body("app", generation=2, observed=1)), deleting=False)
    queue.watched(RepositoryObject.from_body(body("app", generation=3, observed=1)), deleting=False)

    async def test() -> None:
        await until(lambda: len(controller.reconciled) == 1)
        await asyncio.sleep(0.1)

    await running(queue, test)
    assert controller.reconciled == [("app", 0, 1)]


async def test_a_transient_failure_is_retried_after_its_delay_reading_the_object_afresh() -> None:
    controller, kube = FakeController(), FakeKube()
    controller.answers = [RetryLater("throttled", 0.2)]
    kube.stored["app"] = body("app", observed=1)
    queue = work(controller, kube, drift_interval="1h")

    async def test() -> None:
        queue.watched(RepositoryObject.from_body(body("app")), deleting=False)
        await until(lambda: len(controller.reconciled) == 1)
        started = time.monotonic()
        await until(lambda: len(controller.reconciled) == 2)
        assert time.monotonic() - started >= 0.15

    await running(queue, test)
    assert controller.reconciled == [("app", 0, None), ("app", 1, 1)]
    assert kube.reads == 1


async def test_a_deleting_object_is_left_to_the_delete_handler() -> None:
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="1h")
    queue.watched(RepositoryObject.from_body(body("app")), deleting=False)
    queue.watched(RepositoryObject.from_body(body("app")), deleting=True)

    async def test() -> None:
        await asyncio.sleep(0.1)

    await running(queue, test)
    assert controller.reconciled == []
    assert controller.deleting == {"uid-app"}
    assert len(queue) == 0
    queue.gone("uid-app")
    assert controller.forgotten == ["uid-app"]


async def test_a_drift_pass_checks_every_object_once_reading_each_when_its_turn_comes() -> None:
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="0.2s", drift_jitter="0s")
    names = [f"r{number:03d}" for number in range(250)]
    for name in names:
        kube.stored[name] = body(name, observed=1)
        queue.watched(RepositoryObject.from_body(body(name, observed=1)), deleting=False)
    del kube.stored["r007"]  # deleted meanwhile: not checked

    await queue.drift_pass()

    assert sorted(controller.checked) == [name for name in names if name != "r007"]
    assert kube.reads == 250
    assert controller.reconciled == []


async def test_a_chunk_is_checked_only_once_all_its_reads_are_answered() -> None:
    # Its describes then join one DescribeRepositories batch, however slowly the apiserver answers.
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="1h")
    read = kube.read_object
    reads_done: list[int] = []

    async def uneven_read(resource: ResourceInfo, namespace: str, name: str) -> dict[str, Any] | None:
        await asyncio.sleep(int(name[1:]) / 1000)  # answers spread over 0.1 s
        reads_done.append(1)
        return await read(resource, namespace, name)

    kube.read_object = uneven_read  # type: ignore[method-assign]
    checked_after: list[int] = []
    check = controller.check_drift

    async def counting_check(obj: RepositoryObject, retry: int) -> RetryLater | None:
        checked_after.append(len(reads_done))
        return await check(obj, retry)

    controller.check_drift = counting_check  # type: ignore[method-assign]
    for number in range(100):
        name = f"r{number:03d}"
        kube.stored[name] = body(name, observed=1)
        queue.watched(RepositoryObject.from_body(body(name, observed=1)), deleting=False)

    await queue.drift_pass()

    assert checked_after == [100] * 100


async def test_the_first_pass_after_start_up_checks_only_what_this_process_did_not_reconcile() -> None:
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="1h")
    kube.stored["old"] = body("old", observed=1)
    kube.stored["new"] = body("new", observed=1)

    async def test() -> None:
        queue.watched(RepositoryObject.from_body(body("old", observed=1)), deleting=False)
        queue.watched(RepositoryObject.from_body(body("new")), deleting=False)
        await until(lambda: len(controller.reconciled) == 1)
        await until(lambda: "uid-new" not in queue._running)

        await queue.drift_pass(resuming=True)
        assert controller.checked == ["old"]
        await queue.drift_pass()
        assert sorted(controller.checked) == ["new", "old", "old"]

    await running(queue, test)


async def test_a_drift_pass_spaces_its_chunks_over_part_of_the_interval() -> None:
    controller, kube = FakeController(), FakeKube()
    queue = work(controller, kube, drift_interval="1s", drift_jitter="0s")
    for number in range(150):  # two chunks
        name = f"r{number:03d}"
        kube.stored[name] = body(name, observed=1)
        queue.watched(RepositoryObject.from_body(body(name, observed=1)), deleting=False)

    started = time.monotonic()
    await queue.drift_pass()

    assert len(controller.checked) == 150
    assert time.monotonic() - started >= 0.24  # half the interval, shared by the gaps between chunks


async def test_aws_calls_inside_a_paced_block_keep_to_the_rate_and_others_do_not_wait() -> None:
    def answer() -> str:
        return "ok"

    started = time.monotonic()
    with paced_by(RequestRate(50.0)):
        await asyncio.gather(*(call_aws("ecr", "ListTagsForResource", answer) for _ in range(11)))
    paced = time.monotonic() - started

    started = time.monotonic()
    await asyncio.gather(*(call_aws("ecr", "CreateRepository", answer) for _ in range(11)))
    unpaced = time.monotonic() - started

    assert paced >= 0.19  # ten gaps of 20 ms
    assert unpaced < 0.15


def test_the_default_jitter_is_a_tenth_of_the_interval_and_at_most_a_minute() -> None:
    assert Settings(drift_interval="60s").drift_pass_jitter == timedelta(seconds=6)
    assert Settings().drift_pass_jitter == timedelta(minutes=1)
    assert Settings(drift_interval="60s", drift_jitter="5s").drift_pass_jitter == timedelta(seconds=5)
