"""Which status fields an operator manager takes away from writers outside the operator (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from ecr_operator.kube.managed_fields import claim_status_fields

pytestmark = pytest.mark.unit

OURS = "ecr-operator-pullsecrets"
PREFIX = "ecr-operator-"
PULL_SECRET_READY = 'k:{"type":"PullSecretReady"}'
READY = 'k:{"type":"Ready"}'
WHOLE = {".": {}, "f:type": {}, "f:status": {}, "f:reason": {}, "f:message": {}, "f:lastTransitionTime": {}}


def entry(
    manager: str, fields: dict[str, Any], operation: str = "Update", subresource: str | None = "status"
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource is not None:
        found["subresource"] = subresource
    return found


def conditions(**items: dict[str, Any]) -> dict[str, Any]:
    return {"f:status": {"f:conditions": {".": {}, **items}}}


def test_nothing_to_claim_when_only_operator_managers_own_status() -> None:
    entries = [
        entry(OURS, conditions(**{PULL_SECRET_READY: WHOLE}), "Apply"),
        entry("ecr-operator-repository", conditions(**{READY: WHOLE}), "Apply"),
        entry("ecr-operator", {"f:spec": {"f:scanOnPush": {}}}, subresource=None),
    ]

    assert claim_status_fields(entries, OURS, PREFIX) is None


def test_a_shared_condition_leaves_the_outside_writer_which_keeps_what_only_it_wrote() -> None:
    kopf = entry(
        "kopf",
        {"f:status": {"f:conditions": {".": {}, PULL_SECRET_READY: {".": {}, "f:type": {}}, READY: WHOLE}}},
    )
    ours = entry(OURS, conditions(**{PULL_SECRET_READY: WHOLE}), "Apply")

    claimed = claim_status_fields([ours, kopf], OURS, PREFIX)

    # The list itself (its ".") is shared too: only Ready stays the outside writer's.
    assert claimed == [ours, entry("kopf", {"f:status": {"f:conditions": {READY: WHOLE}}})]


def test_every_field_inside_a_condition_the_manager_owns_is_claimed() -> None:
    """Someone applied just a message into our condition: the whole condition is ours again."""
    ours = entry(OURS, conditions(**{PULL_SECRET_READY: WHOLE}), "Apply")
    kubectl = entry(
        "kubectl", conditions(**{PULL_SECRET_READY: {".": {}, "f:type": {}, "f:message": {}}}), "Apply"
    )

    claimed = claim_status_fields([kubectl, ours], OURS, PREFIX)

    assert claimed == [ours]


def test_an_outside_entry_left_with_nothing_goes() -> None:
    ours = entry(OURS, {"f:status": {"f:repositoryUri": {}}}, "Apply")
    edit = entry("kubectl-edit", {"f:status": {"f:repositoryUri": {}}})

    assert claim_status_fields([ours, edit], OURS, PREFIX) == [ours]


def test_nothing_is_claimed_for_a_manager_that_owns_no_status_yet() -> None:
    kopf = entry("kopf", conditions(**{READY: WHOLE}))

    assert claim_status_fields([kopf], OURS, PREFIX) is None


def test_the_input_is_left_as_it_was() -> None:
    kopf = entry("kopf", conditions(**{PULL_SECRET_READY: WHOLE}))
    ours = entry(OURS, conditions(**{PULL_SECRET_READY: WHOLE}), "Apply")
    before = [
        entry("kopf", conditions(**{PULL_SECRET_READY: WHOLE})),
        entry(OURS, conditions(**{PULL_SECRET_READY: WHOLE}), "Apply"),
    ]

    claim_status_fields([kopf, ours], OURS, PREFIX)

    assert [kopf, ours] == before
