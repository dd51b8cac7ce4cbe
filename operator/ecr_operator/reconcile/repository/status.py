"""The status and Events one reconcile produces."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ecr_operator.conditions import (
    READY,
    SYNCED,
    DesiredCondition,
    EventNote,
    find_condition,
    format_time,
    set_conditions,
)
from ecr_operator.reconcile.repository.actions import (
    Action,
    ClaimRepository,
    CreateRepository,
    changed_aspects,
)
from ecr_operator.reconcile.repository.failures import Problem
from ecr_operator.reconcile.repository.identity_policies import ManagedPolicy
from ecr_operator.reconcile.repository.observed import RepositoryDescription
from ecr_operator.reconcile.repository.vocabulary import EventReason, Reason


@dataclass(frozen=True)
class SyncResult:
    """What one reconcile did and found: input of the status and Events it produces."""

    repository: RepositoryDescription | None = None
    applied: tuple[Action, ...] = ()
    problem: Problem | None = None
    managed_policies: tuple[ManagedPolicy, ...] | None = None
    """The identity policies now in place, or None when this reconcile did not get to them."""

    @property
    def created(self) -> bool:
        return any(isinstance(action, CreateRepository) for action in self.applied)

    @property
    def adopted(self) -> bool:
        return any(isinstance(action, ClaimRepository) for action in self.applied)


def was_converged(status: Mapping[str, Any] | None, generation: int | None) -> bool:
    """Whether the last reconcile had applied this very spec successfully: any change planned now was made
    outside the operator (drift), not asked for by the user."""
    status = status or {}
    synced = find_condition(status.get("conditions") or [], SYNCED)
    return (
        generation is not None
        and status.get("observedGeneration") == generation
        and synced is not None
        and synced.get("status") == "True"
    )


def repository_conditions(
    result: SyncResult, generation: int | None, status: Mapping[str, Any] | None
) -> list[DesiredCondition]:
    """Ready: the repository exists, is this object's, and matches the spec. Synced: the last reconcile
    finished without error. A transient error leaves a Ready=True alone: the repository still works."""
    problem = result.problem
    if problem is None:
        uri = result.repository.uri if result.repository else ""
        return [
            DesiredCondition(READY, "True", Reason.READY, f"Repository {uri} matches the spec.", generation),
            DesiredCondition(SYNCED, "True", Reason.UP_TO_DATE, "AWS matches the spec.", generation),
        ]
    synced = DesiredCondition(SYNCED, "False", problem.reason, problem.message, generation)
    ready_before = find_condition((status or {}).get("conditions") or [], READY)
    if problem.kind == "transient" and ready_before is not None and ready_before.get("status") == "True":
        return [synced]
    return [DesiredCondition(READY, "False", problem.reason, problem.message, generation), synced]


OWNED_CONDITIONS = frozenset({READY, SYNCED})
"""The condition types the repository controller writes; others on the object (``PullSecretReady``) are
another controller's."""
OWNED_FIELDS = (
    "observedGeneration",
    "repositoryUri",
    "repositoryArn",
    "registryId",
    "lastSyncTime",
    "driftCorrections",
    "identityPolicies",
)
_REPOSITORY_FIELDS = ("repositoryUri", "repositoryArn", "registryId")
# set_conditions stamps only conditions it sets; with none to set, it orders and copies, and reads no time.
_NO_TIME = datetime.fromtimestamp(0, UTC)


def owned_status(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of ``status`` the repository controller owns, in the form it writes it: what a new status
    is compared with, so that an idle pass writes nothing."""
    status = status or {}
    owned = {key: status[key] for key in OWNED_FIELDS if status.get(key) is not None}
    conditions = [
        entry
        for entry in status.get("conditions") or []
        if isinstance(entry, Mapping) and entry.get("type") in OWNED_CONDITIONS
    ]
    owned["conditions"] = set_conditions(conditions, (), _NO_TIME)
    return owned


def applied_status_fields(managed_fields: Iterable[Mapping[str, Any]], manager: str) -> frozenset[str]:
    """The top-level status fields ``manager`` owns by server-side apply, from ``metadata.managedFields``."""
    owned: set[str] = set()
    for entry in managed_fields:
        if entry.get("manager") != manager or entry.get("subresource") != "status":
            continue
        fields = (entry.get("fieldsV1") or {}).get("f:status") or {}
        owned |= {key.removeprefix("f:") for key in fields if key.startswith("f:")}
    return frozenset(owned)


def stranded_fields(
    previous: Mapping[str, Any] | None, status: Mapping[str, Any], applied: frozenset[str]
) -> dict[str, Any]:
    """Fields of ``previous`` that ``status`` leaves out but that were not applied by this controller (a
    tenant's patch, an older operator's merge patch): leaving them out of an apply would not remove them.
    Returned with their current values, so that one apply can take them over and the next drop them."""
    previous = previous or {}
    return {
        key: previous[key]
        for key in OWNED_FIELDS
        if previous.get(key) is not None and key not in status and key not in applied
    }


def repository_status(
    status: Mapping[str, Any] | None,
    result: SyncResult,
    *,
    generation: int | None,
    now: datetime,
    drift: bool,
) -> dict[str, Any]:
    """The whole status the repository controller owns after a reconcile: its previous value, with what
    this reconcile found and did. Equal to ``owned_status(status)`` when nothing changed."""
    whole = _with_conditions(status, repository_conditions(result, generation, status), now)
    # A transient failure is no verdict on this generation: its handler retries with backoff, and the
    # drift timer (which only checks reconciled generations) must not retry it as well, sooner.
    transient = result.problem is not None and result.problem.kind == "transient"
    if generation is not None and not transient:
        whole["observedGeneration"] = generation
    repository = result.repository
    if repository is not None:
        whole |= {
            "repositoryUri": repository.uri,
            "repositoryArn": repository.arn,
            "registryId": repository.registry_id,
        }
    elif result.problem is not None and result.problem.kind == "refused":
        # A refused object owns no repository: it must not advertise one.
        for key in _REPOSITORY_FIELDS:
            whole.pop(key, None)
    if result.applied:
        whole["lastSyncTime"] = format_time(now)
        if drift:
            whole["driftCorrections"] = int(whole.get("driftCorrections") or 0) + len(
                changed_aspects(result.applied)
            )
    if result.managed_policies is not None:
        _set_identity_policies(whole, result.managed_policies)
    return whole


def deletion_status(
    status: Mapping[str, Any] | None,
    problem: Problem,
    *,
    generation: int | None,
    now: datetime,
    managed_policies: tuple[ManagedPolicy, ...] | None,
) -> dict[str, Any]:
    """The whole owned status while a deletion cannot finish: Ready and Synced say why, and
    ``identityPolicies`` lists what is still in place (None: the deletion did not get to them)."""
    failed = [
        DesiredCondition(READY, "False", problem.reason, problem.message, generation),
        DesiredCondition(SYNCED, "False", problem.reason, problem.message, generation),
    ]
    whole = _with_conditions(status, failed, now)
    if managed_policies is not None:
        _set_identity_policies(whole, managed_policies)
    return whole


def _with_conditions(
    status: Mapping[str, Any] | None, desired: list[DesiredCondition], now: datetime
) -> dict[str, Any]:
    whole = owned_status(status)
    whole["conditions"] = set_conditions(whole["conditions"], desired, now)
    return whole


def _set_identity_policies(whole: dict[str, Any], policies: tuple[ManagedPolicy, ...]) -> None:
    if policies:
        whole["identityPolicies"] = [policy.to_wire() for policy in policies]
    else:
        whole.pop("identityPolicies", None)


def ready_status(status: Mapping[str, Any]) -> str:
    """The Ready condition's status ("True", "False", "Unknown") for the objects gauge."""
    ready = find_condition(status.get("conditions") or [], READY)
    return str(ready.get("status", "Unknown")) if ready is not None else "Unknown"


def repository_events(
    status: Mapping[str, Any] | None, result: SyncResult, *, drift: bool
) -> list[EventNote]:
    """Events for real changes and for *transitions* into a problem; a retry of the same failure is silent."""
    events: list[EventNote] = []
    uri = result.repository.uri if result.repository else ""
    aspects = [aspect for aspect in changed_aspects(result.applied) if aspect != "ownership"]
    if result.applied and drift:
        repaired = ", ".join("repository (re-created)" if a == "repository" else a for a in aspects)
        events.append(
            EventNote(
                "Warning",
                EventReason.DRIFT_CORRECTED,
                f"Repaired changes made outside the operator: {repaired}.",
            )
        )
    elif result.created:
        events.append(EventNote("Normal", EventReason.CREATED, f"Created ECR repository {uri}."))
    elif result.adopted:
        settled = f" and updated {', '.join(aspects)}" if aspects else ""
        events.append(EventNote("Normal", EventReason.ADOPTED, f"Adopted ECR repository {uri}{settled}."))
    elif result.applied:
        events.append(EventNote("Normal", EventReason.UPDATED, f"Updated {', '.join(aspects)} of {uri}."))
    synced_before = find_condition((status or {}).get("conditions") or [], SYNCED)
    problem = result.problem
    if problem is not None:
        unchanged = (
            synced_before is not None
            and synced_before.get("reason") == problem.reason
            and synced_before.get("message") == problem.message
        )
        if not unchanged:
            events.append(EventNote("Warning", problem.reason, problem.message))
    elif synced_before is not None and synced_before.get("status") == "False":
        events.append(EventNote("Normal", EventReason.RECOVERED, f"Repository {uri} matches the spec again."))
    return events
