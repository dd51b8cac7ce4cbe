"""Polling for tests of every layer: the one way a test waits for the world to catch up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def first_within(probe: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T | None:
    """``probe()``'s first truthy answer within ``timeout`` seconds, else None (for a test that records
    what it measured before it asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def eventually(
    description: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.25
) -> T:
    """``probe()``'s first truthy answer within ``timeout``; fails the test naming ``description``. A falsy
    answer (None, False, an empty list: no Event yet) means "not yet"."""
    value = first_within(probe, timeout, interval)
    if not value:
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {description}")
    return value
