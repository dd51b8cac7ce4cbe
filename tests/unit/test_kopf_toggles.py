"""kopf's toggle sets, counted: the same answers as kopf's own, and waiters woken only when it matters."""

from __future__ import annotations

import asyncio
import random

import pytest
from kopf._cogs.aiokits import aiotoggles

import ecr_operator.handlers  # noqa: F401  (swaps kopf's toggle sets on import)
from ecr_operator.handlers.toggles import CountedToggleSet

pytestmark = pytest.mark.unit
KOPFS_TOGGLE_SET = CountedToggleSet.__mro__[1]


def test_kopf_makes_counted_toggle_sets_once_the_handlers_are_imported() -> None:
    assert aiotoggles.ToggleSet is CountedToggleSet
    assert KOPFS_TOGGLE_SET.__module__ == aiotoggles.__name__


@pytest.mark.parametrize("fn", [all, any])
async def test_a_counted_set_answers_as_kopfs_own_through_any_sequence(fn: type) -> None:
    choose = random.Random(7)
    ours, theirs = CountedToggleSet(fn), KOPFS_TOGGLE_SET(fn)  # type: ignore[arg-type]
    pairs: list[tuple[aiotoggles.Toggle, aiotoggles.Toggle]] = []
    for _ in range(500):
        step = choose.choice(["make", "turn", "drop"] if pairs else ["make"])
        if step == "make":
            state = choose.random() < 0.5
            pairs.append((await ours.make_toggle(state), await theirs.make_toggle(state)))
        elif step == "turn":
            state = choose.random() < 0.5
            for toggle in choose.choice(pairs):
                await toggle.turn_to(state)
        else:
            mine, kopfs = pairs.pop(choose.randrange(len(pairs)))
            await ours.drop_toggle(mine)
            await theirs.drop_toggle(kopfs)
        assert ours.is_on() == theirs.is_on()
        assert len(ours) == len(theirs)


async def test_start_up_readiness_waits_for_the_last_object_and_wakes_every_worker() -> None:
    # kopf's start-up: one toggle per object, every object's worker waiting for the whole set.
    indexed = CountedToggleSet(all)
    toggles = [await indexed.make_toggle(name=f"object {number}") for number in range(5000)]
    workers = [asyncio.create_task(indexed.wait_for(True)) for _ in toggles]
    await indexed.drop_toggles(toggles[:-1])
    await asyncio.sleep(0)
    assert not any(worker.done() for worker in workers)

    await indexed.drop_toggle(toggles[-1])

    await asyncio.wait_for(asyncio.gather(*workers), timeout=10)
    assert indexed.is_on()
