"""Lifecycle policy validation and semantic comparison (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ecr_operator.reconcile.lifecycle import (
    LifecyclePolicyError,
    lifecycle_policies_equal,
    parse_lifecycle_policy,
    validate_lifecycle_policy,
)

pytestmark = pytest.mark.unit


def rule(priority: int, **selection: Any) -> dict[str, Any]:
    return {"rulePriority": priority, "selection": selection, "action": {"type": "expire"}}


KEEP_LAST_10 = rule(
    1, tagStatus="tagged", tagPrefixList=["v", "release"], countType="imageCountMoreThan", countNumber=10
)
EXPIRE_UNTAGGED = rule(2, tagStatus="untagged", countType="sinceImagePushed", countUnit="days", countNumber=7)


def test_valid_policy_passes() -> None:
    validate_lifecycle_policy({"rules": [KEEP_LAST_10, EXPIRE_UNTAGGED]})


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "at least one rule"),
        (
            [rule(0, tagStatus="untagged", countType="imageCountMoreThan", countNumber=1)],
            r"rules\[0\].rulePriority",
        ),
        ([KEEP_LAST_10, {**EXPIRE_UNTAGGED, "rulePriority": 1}], "used by another rule"),
        ([rule(1, tagStatus="tagged", countType="imageCountMoreThan", countNumber=1)], "needs tagPrefixList"),
        ([rule(1, tagStatus="untagged", countType="sinceImagePushed", countNumber=1)], "countUnit must be"),
        ([rule(1, tagStatus="untagged", countType="imageCountMoreThan", countNumber=0)], "countNumber"),
        (
            [rule(1, tagStatus="sometimes", countType="imageCountMoreThan", countNumber=1)],
            "tagStatus must be",
        ),
        (
            [rule(1, tagStatus="any", countType="imageCountMoreThan", countNumber=5), EXPIRE_UNTAGGED],
            "tagStatus any must have the highest",
        ),
        ([{**EXPIRE_UNTAGGED, "action": {"type": "archive"}}], "action.type"),
        (
            [{**EXPIRE_UNTAGGED, "rulePriority": i} for i in range(1, 52)],
            "at most 50",
        ),
    ],
)
def test_invalid_policies_name_the_rule_and_field(rules: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(LifecyclePolicyError, match=message):
        validate_lifecycle_policy({"rules": rules})


def test_rule_and_list_order_is_not_a_difference() -> None:
    ours = {"rules": [KEEP_LAST_10, EXPIRE_UNTAGGED]}
    reordered_prefixes = {
        **KEEP_LAST_10,
        "selection": {**KEEP_LAST_10["selection"], "tagPrefixList": ["release", "v"]},
    }
    theirs = json.dumps({"rules": [EXPIRE_UNTAGGED, reordered_prefixes]}, indent=4)
    assert lifecycle_policies_equal(ours, theirs)


def test_changed_count_is_a_difference() -> None:
    changed = {**KEEP_LAST_10, "selection": {**KEEP_LAST_10["selection"], "countNumber": 11}}
    assert not lifecycle_policies_equal({"rules": [KEEP_LAST_10]}, {"rules": [changed]})
    assert not lifecycle_policies_equal({"rules": [KEEP_LAST_10]}, None)


def test_raw_policy_that_is_not_json_names_the_field() -> None:
    with pytest.raises(LifecyclePolicyError, match=r"lifecyclePolicy.raw is not valid JSON"):
        parse_lifecycle_policy("{rules:")
    with pytest.raises(LifecyclePolicyError, match='"rules" list'):
        parse_lifecycle_policy('{"rule": []}')
