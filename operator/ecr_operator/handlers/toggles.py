"""kopf's start-up readiness in O(1) per object instead of O(N) wake-ups of O(N) checks each.

Before any handler runs, kopf indexes every watched object: it makes one toggle per object in a
``ToggleSet(all)`` and every object's worker waits on that set until all are dropped. kopf's ToggleSet wakes
every waiter whenever a toggle is added or dropped, and each waiter re-evaluates every toggle: measured with
5,000 namespaces (and their ServiceAccounts) for a cluster-wide pull-secret policy, the operator spent
minutes at 100% CPU in ``Condition.notify_all`` and ``ToggleSet.is_on`` without running a handler.

``CountedToggleSet`` keeps the number of toggles that are on, answers ``is_on`` from it, and wakes waiters
only when the set's state flips (or one of its toggles is turned). ``use_counted_toggle_sets`` puts it in
kopf's place; ``ecr_operator.handlers`` calls it on import, before ``kopf.operator`` makes any set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from kopf._cogs.aiokits import aiotoggles


class CountedToggle(aiotoggles.Toggle):
    """A toggle of a ``CountedToggleSet``: turning it keeps the set's count."""

    def __init__(self, state: bool, *, name: str | None, owner: CountedToggleSet) -> None:
        super().__init__(state, name=name, condition=owner.condition)
        self._owner = owner

    async def turn_to(self, __state: bool) -> None:
        async with self._condition:
            if bool(__state) != self._state:
                self._state = bool(__state)
                self._owner.count_turned(self._state)
            self._condition.notify_all()  # waiters of this toggle itself, as kopf's does


class CountedToggleSet(aiotoggles.ToggleSet):
    """kopf's ToggleSet for ``all`` and ``any`` with the state kept as a count of the toggles on."""

    def __init__(self, fn: Callable[[Iterable[bool]], bool]) -> None:
        if fn not in (all, any):
            raise ValueError("a counted toggle set is either all() or any() of its toggles")
        super().__init__(fn)
        self._requires_all = fn is all
        self._on = 0

    @property
    def condition(self) -> asyncio.Condition:
        return self._condition

    def is_on(self) -> bool:
        return self._on == len(self._toggles) if self._requires_all else self._on > 0

    def count_turned(self, on: bool) -> None:
        self._on += 1 if on else -1

    async def make_toggle(self, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
        toggle = CountedToggle(__val, name=name, owner=self)
        async with self._condition:
            was_on = self.is_on()
            self._toggles.add(toggle)
            self._on += toggle.is_on()
            if self.is_on() != was_on:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        async with self._condition:
            was_on = self.is_on()
            for toggle in toggles:
                if toggle in self._toggles:
                    self._toggles.discard(toggle)
                    self._on -= toggle.is_on()
            if self.is_on() != was_on:
                self._condition.notify_all()


def use_counted_toggle_sets() -> None:
    """kopf makes its toggle sets (readiness, pauses) through ``aiotoggles.ToggleSet``: make them counted."""
    aiotoggles.ToggleSet = CountedToggleSet  # type: ignore[misc]
