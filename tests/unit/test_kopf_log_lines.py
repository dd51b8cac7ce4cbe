"""kopf's per-event success lines of the watch handlers are dropped; everything else kopf logs stays."""

from __future__ import annotations

import logging

import kopf
import pytest

import ecr_operator.handlers  # noqa: F401  (registers the handlers with kopf's default registry)
from ecr_operator.handlers.startup import QUIET_ON_SUCCESS, QuietSuccessOf

pytestmark = pytest.mark.unit


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_the_quiet_handlers_are_the_operators_watch_handlers() -> None:
    watching = {handler.id for handler in kopf.get_default_registry()._watching.get_all_handlers()}

    assert watching >= QUIET_ON_SUCCESS


def test_only_the_success_line_of_a_quiet_handler_is_dropped() -> None:
    quiet = QuietSuccessOf(["repository_watched"])

    assert not quiet.filter(record("Handler 'repository_watched' succeeded."))
    assert quiet.filter(record("Handler 'repository_watched' failed with an exception.", logging.ERROR))
    assert quiet.filter(record("Handler 'delete_repository' succeeded."))
    assert quiet.filter(record("changed repository"))
