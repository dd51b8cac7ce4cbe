"""Per-repository locks: observe, decide and act never interleave for one repository."""

from __future__ import annotations

import asyncio

import pytest

from ecr_operator.locks import KeyedLocks

pytestmark = pytest.mark.unit


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
