from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_operator.conditions import (
    MAX_MESSAGE_LENGTH,
    READY,
    SYNCED,
    DesiredCondition,
    StatusValue,
    conditions_patch,
    find_condition,
    format_time,
    set_conditions,
)

pytestmark = pytest.mark.unit

EARLIER = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = EARLIER + timedelta(minutes=10)


def ready(
    status: StatusValue, reason: str = "Reconciled", message: str = "", generation: int = 1
) -> DesiredCondition:
    return DesiredCondition(READY, status, reason, message, observed_generation=generation)


def test_a_new_condition_transitions_now() -> None:
    conditions = set_conditions([], [ready("True", message="repository in sync")], EARLIER)

    assert conditions == [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "repository in sync",
            "lastTransitionTime": "2025-01-02T03:04:05Z",
            "observedGeneration": 1,
        }
    ]


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = set_conditions([], [ready("False", "AccessDenied", "not allowed", generation=1)], EARLIER)

    second = set_conditions(first, [ready("False", "KmsKeyInvalid", "key disabled", generation=2)], LATER)

    assert second[0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"
    assert second[0]["reason"] == "KmsKeyInvalid"
    assert second[0]["message"] == "key disabled"
    assert second[0]["observedGeneration"] == 2


def test_a_status_flip_moves_transition_time() -> None:
    first = set_conditions([], [ready("False", "AccessDenied")], EARLIER)

    second = set_conditions(first, [ready("True")], LATER)

    assert second[0]["status"] == "True"
    assert second[0]["lastTransitionTime"] == "2025-01-02T03:14:05Z"


def test_ready_comes_first_and_other_types_are_kept_in_name_order() -> None:
    existing = [
        {"type": "Zeta", "status": "True", "reason": "Z", "lastTransitionTime": "2020-01-01T00:00:00Z"}
    ]

    conditions = set_conditions(
        existing,
        [DesiredCondition(SYNCED, "True", "Synced"), ready("True"), DesiredCondition("Alpha", "False", "A")],
        LATER,
    )

    assert [entry["type"] for entry in conditions] == ["Ready", "Alpha", "Synced", "Zeta"]
    assert find_condition(conditions, "Zeta") == existing[0]


def test_an_unchanged_condition_needs_no_patch() -> None:
    status = {"conditions": set_conditions([], [ready("True", message="in sync")], EARLIER)}

    assert conditions_patch(status, [ready("True", message="in sync")], LATER) is None


def test_a_changed_message_needs_a_patch_without_a_transition() -> None:
    status = {"conditions": set_conditions([], [ready("True", message="in sync")], EARLIER)}

    patch = conditions_patch(status, [ready("True", message="in sync, 3 tags")], LATER)

    assert patch is not None
    assert patch[0]["message"] == "in sync, 3 tags"
    assert patch[0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"


@pytest.mark.parametrize("status", [None, {}, {"conditions": None}, {"observedGeneration": 3}])
def test_an_object_without_conditions_gets_them(status: dict[str, Any] | None) -> None:
    patch = conditions_patch(status, [ready("Unknown", "Progressing")], EARLIER)

    assert patch is not None
    assert patch[0]["status"] == "Unknown"


def test_a_huge_message_is_truncated_to_what_the_apiserver_accepts() -> None:
    conditions = set_conditions([], [ready("False", "AwsError", "x" * (MAX_MESSAGE_LENGTH + 100))], EARLIER)

    message = conditions[0]["message"]
    assert len(message) == MAX_MESSAGE_LENGTH
    assert message.endswith("…")


@pytest.mark.parametrize("reason", ["", "has spaces", "1StartsWithDigit", "Ends-With-Dash-"])
def test_a_reason_the_apiserver_would_reject_is_a_bug_caught_early(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        ready("False", reason)


def test_times_are_utc_with_whole_seconds() -> None:
    moment = datetime(2025, 1, 2, 5, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2)))

    assert format_time(moment) == "2025-01-02T03:04:05Z"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        set_conditions([], [ready("True")], datetime(2025, 1, 2))


desired_conditions = st.lists(
    st.builds(
        DesiredCondition,
        type=st.sampled_from([READY, SYNCED, "Stalled"]),
        status=st.sampled_from(["True", "False", "Unknown"]),
        reason=st.sampled_from(["Reconciled", "AccessDenied", "Throttled"]),
        message=st.text(max_size=20),
        observed_generation=st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
    ),
    max_size=6,
)


@given(first=desired_conditions, second=desired_conditions)
def test_applying_the_same_conditions_again_writes_nothing(
    first: list[DesiredCondition], second: list[DesiredCondition]
) -> None:
    status = {"conditions": set_conditions(set_conditions([], first, EARLIER), second, EARLIER)}
    latest_of_each_type = {condition.type: condition for condition in second}.values()

    assert conditions_patch(status, latest_of_each_type, LATER) is None


@given(history=st.lists(desired_conditions, min_size=1, max_size=5))
def test_one_entry_per_type_and_transition_times_never_after_now(
    history: list[list[DesiredCondition]],
) -> None:
    conditions: list[dict[str, Any]] = []
    for step, desired in enumerate(history):
        conditions = set_conditions(conditions, desired, EARLIER + timedelta(seconds=step))

    types = [entry["type"] for entry in conditions]
    assert len(types) == len(set(types))
    assert all(
        entry["lastTransitionTime"] <= format_time(EARLIER + timedelta(seconds=len(history)))
        for entry in conditions
    )
