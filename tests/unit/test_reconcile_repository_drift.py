"""Drift passes shared by every object (so their checks batch), and per-repository locks."""

from __future__ import annotations

import asyncio

import pytest

from ecr_operator.drift import DriftSchedule
from ecr_operator.locks import KeyedLocks

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def schedule(clock: Clock, jitter_fraction: float = 0.0) -> DriftSchedule:
    return DriftSchedule(600.0, 60.0, clock=clock, random_fraction=lambda: jitter_fraction)


def test_objects_created_at_different_times_share_the_next_pass() -> None:
    clock = Clock()
    drift = schedule(clock)

    first = drift.delay("a")
    clock.now += 250.0
    second = drift.delay("b")

    assert first == 600.0
    assert clock.now + second == 1600.0


def test_after_a_check_the_next_one_is_a_whole_pass_later() -> None:
    clock = Clock()
    drift = schedule(clock, jitter_fraction=0.5)
    drift.delay("a")

    clock.now = 1630.0  # the pass: 1000 + 600 + 0.5 * 60
    assert drift.delay("a") == 0.0
    clock.now += 2.0  # the check took two seconds
    drift.checked("a")

    assert clock.now + drift.delay("a") == pytest.approx(1630.0 + 630.0)


def test_passes_are_jittered_each_time() -> None:
    fractions = iter([0.0, 1.0, 0.25])
    clock = Clock()
    drift = DriftSchedule(600.0, 60.0, clock=clock, random_fraction=lambda: next(fractions))

    passes = [drift.next_pass(1000.0), drift.next_pass(1600.0), drift.next_pass(2260.0)]

    assert passes == [1600.0, 2260.0, 2875.0]


def test_a_check_that_failed_is_overdue_at_once() -> None:
    clock = Clock()
    drift = schedule(clock)
    drift.delay("a")
    clock.now = 1600.0 + 30.0  # the pass came; the check raised (throttled) and did not record itself

    assert drift.delay("a") == 0.0


def test_an_object_that_missed_many_passes_is_checked_now_and_old_passes_are_forgotten() -> None:
    clock = Clock()
    drift = schedule(clock)
    drift.delay("a")
    clock.now += 10 * 600.0 + 1.0
    drift.delay("b")

    assert drift.delay("a") == 0.0
    assert len(drift._passes) <= 3


def test_forgotten_objects_start_over() -> None:
    clock = Clock()
    drift = schedule(clock)
    drift.delay("a")
    drift.checked("a")
    drift.forget("a")
    clock.now += 300.0

    assert drift.delay("a") == 300.0


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DriftSchedule(0.0)


async def test_a_key_is_held_by_one_task_at_a_time_and_released_afterwards() -> None:
    locks = KeyedLocks()
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def work(key: str, name: str) -> None:
        async with locks.hold(key):
            inside.append(name)
            overlaps.append(tuple(inside))
            await asyncio.sleep(0.01)
            inside.remove(name)

    await asyncio.gather(work("repo", "a"), work("repo", "b"), work("other", "c"))

    assert all(len(names) <= 2 for names in overlaps)
    assert not any({"a", "b"} <= set(names) for names in overlaps)
    assert len(locks) == 0
