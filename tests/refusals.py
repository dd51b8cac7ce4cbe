"""Property tests of parsers: hostile input is either parsed or refused with the one error that means so."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def unless_refused(
    refusal: type[Exception], function: Callable[..., T], *args: Any, **kwargs: Any
) -> T | None:
    """``function(*args, **kwargs)``, or None when it raises ``refusal`` (any other exception fails)."""
    try:
        return function(*args, **kwargs)
    except refusal:
        return None
