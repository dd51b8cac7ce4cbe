"""Status conditions in the Kubernetes/Flux shape, built by pure functions.

A controller says what each condition should be (``DesiredCondition``); ``set_conditions`` merges that
into the list already on the object. ``lastTransitionTime`` moves only when a condition's ``status``
flips, so a message update is not mistaken for a transition, and ``conditions_patch`` returns ``None``
when nothing changed at all, so an idle reconcile writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ecr_operator.api.common import CONDITION_REASON_PATTERN, CONDITION_TYPE_PATTERN

READY = "Ready"
SYNCED = "Synced"

StatusValue = Literal["True", "False", "Unknown"]

# metav1.Condition's validation: the apiserver rejects the whole status patch if one condition breaks it.
_TYPE = re.compile(CONDITION_TYPE_PATTERN)
_REASON = re.compile(CONDITION_REASON_PATTERN)
MAX_TYPE_LENGTH = 316
MAX_REASON_LENGTH = 1024
MAX_MESSAGE_LENGTH = 32768
_TRUNCATION_MARK = "…"


@dataclass(frozen=True)
class DesiredCondition:
    """What one condition should say now; its transition time is decided by ``set_conditions``."""

    type: str
    status: StatusValue
    reason: str
    message: str = ""
    observed_generation: int | None = None

    def __post_init__(self) -> None:
        if not _TYPE.match(self.type) or len(self.type) > MAX_TYPE_LENGTH:
            raise ValueError(f"condition type {self.type!r} is not a valid condition type")
        if self.status not in ("True", "False", "Unknown"):
            raise ValueError(f"condition status {self.status!r} is not True, False or Unknown")
        if not _REASON.match(self.reason) or len(self.reason) > MAX_REASON_LENGTH:
            raise ValueError(f"condition reason {self.reason!r} is not a CamelCase identifier")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with whole seconds, the precision of metav1.Time."""
    if moment.tzinfo is None:
        raise ValueError("condition times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_condition(conditions: Sequence[Mapping[str, Any]], condition_type: str) -> Mapping[str, Any] | None:
    return next((entry for entry in conditions if entry.get("type") == condition_type), None)


def set_conditions(
    existing: Sequence[Mapping[str, Any]],
    desired: Iterable[DesiredCondition],
    now: datetime,
) -> list[dict[str, Any]]:
    """Merge ``desired`` into ``existing``: replace by type, keep other types, order Ready first then by type.

    A condition whose ``status`` is unchanged keeps its ``lastTransitionTime``; a new or flipped one gets
    ``now``.
    """
    merged: dict[str, dict[str, Any]] = {
        entry["type"]: dict(entry) for entry in existing if isinstance(entry.get("type"), str)
    }
    for condition in desired:
        previous = merged.get(condition.type)
        unchanged_status = previous is not None and previous.get("status") == condition.status
        transition_time = previous.get("lastTransitionTime") if previous and unchanged_status else None
        merged[condition.type] = _to_dict(condition, transition_time or format_time(now))
    return sorted(merged.values(), key=lambda entry: (entry["type"] != READY, entry["type"]))


def conditions_patch(
    status: Mapping[str, Any] | None,
    desired: Iterable[DesiredCondition],
    now: datetime,
) -> list[dict[str, Any]] | None:
    """The condition list to write into ``status.conditions``, or ``None`` when it would change nothing."""
    existing = list((status or {}).get("conditions") or [])
    updated = set_conditions(existing, desired, now)
    return None if updated == existing else updated


def _to_dict(condition: DesiredCondition, last_transition_time: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": _truncate(condition.message),
        "lastTransitionTime": last_transition_time,
    }
    if condition.observed_generation is not None:
        entry["observedGeneration"] = condition.observed_generation
    return entry


def _truncate(message: str) -> str:
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


@dataclass(frozen=True)
class EventNote:
    """An Event to post on the object a controller works on."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
