"""The one backoff formula of the operator: every retry of AWS, a registry or a token uses it."""

from __future__ import annotations

from collections.abc import Callable


def backoff_delay(retry: int, random: Callable[[], float], *, base: float = 5.0, cap: float = 300.0) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries of many objects spread."""
    ceiling: float = min(cap, base * 2.0 ** min(retry, 16))
    return ceiling / 2 + random() * ceiling / 2
