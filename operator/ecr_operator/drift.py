"""When drift checks run: in passes shared by every object, so one pass's AWS reads can be batched.

Per-object timers with their own phase would spread 250 checks over the whole interval and leave nothing
to batch. Instead every object waits for the same pass times: ``interval`` apart plus a random
``0..jitter`` each time, so that two operators (or one restarted) do not stay in lockstep. An object
created between passes is first checked at the next pass (its create handler has just looked at AWS); an
object whose check failed transiently is retried at once by its timer's backoff, not a pass later.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class DriftSchedule:
    """Pass times for drift checks, and when each object (by key, e.g. its uid) was last checked."""

    def __init__(
        self,
        interval: float,
        jitter: float = 0.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        if interval <= 0 or jitter < 0:
            raise ValueError("the drift interval must be positive and its jitter not negative")
        self._interval = interval
        self._jitter = jitter
        self._clock = clock
        self._random_fraction = random_fraction
        self._passes = [clock() + self._gap()]
        self._last_checked: dict[str, float] = {}

    def _gap(self) -> float:
        return self._interval + self._random_fraction() * self._jitter

    def next_pass(self, after: float) -> float:
        """The first pass later than ``after`` (a missed one, in the past, if ``after`` is that old)."""
        while self._passes[-1] <= after:
            self._passes.append(self._passes[-1] + self._gap())
        # Passes more than one interval old cannot be anyone's next one but the oldest kept: forget them.
        horizon = self._clock() - self._interval
        while len(self._passes) > 1 and self._passes[1] <= horizon:
            self._passes.pop(0)
        return next(moment for moment in self._passes if moment > after)

    def delay(self, key: str) -> float:
        """Seconds until the object's next check is due (0 when overdue). A new object starts now."""
        now = self._clock()
        last = self._last_checked.setdefault(key, now)
        return max(0.0, self.next_pass(last) - now)

    def checked(self, key: str) -> None:
        """The object's check finished (with or without repairs): its next one is at the next pass."""
        self._last_checked[key] = self._clock()

    def forget(self, key: str) -> None:
        self._last_checked.pop(key, None)
