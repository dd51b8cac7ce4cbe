"""The status and Events one reconcile produces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ecr_operator.conditions import (
    READY,
    SYNCED,
    DesiredCondition,
    EventNote,
    conditions_patch,
    find_condition,
    format_time,
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


def repository_status_patch(
    status: Mapping[str, Any] | None,
    result: SyncResult,
    *,
    generation: int | None,
    now: datetime,
    drift: bool,
) -> dict[str, Any] | None:
    """The merge patch for ``status``, holding only what changed, or None: an idle pass writes nothing."""
    status = status or {}
    patch: dict[str, Any] = {}
    conditions = conditions_patch(status, repository_conditions(result, generation, status), now)
    if conditions is not None:
        patch["conditions"] = conditions
    # A transient failure is no verdict on this generation: its handler retries with backoff, and the
    # drift timer (which only checks reconciled generations) must not retry it as well, sooner.
    transient = result.problem is not None and result.problem.kind == "transient"
    if generation is not None and status.get("observedGeneration") != generation and not transient:
        patch["observedGeneration"] = generation
    repository = result.repository
    fields: dict[str, Any] = {}
    if repository is not None:
        fields = {
            "repositoryUri": repository.uri,
            "repositoryArn": repository.arn,
            "registryId": repository.registry_id,
        }
    elif result.problem is not None and result.problem.kind == "refused":
        # A refused object owns no repository: it must not advertise one.
        fields = {"repositoryUri": None, "repositoryArn": None, "registryId": None}
    patch.update({key: value for key, value in fields.items() if status.get(key) != value})
    if result.applied:
        patch["lastSyncTime"] = format_time(now)
        if drift:
            patch["driftCorrections"] = int(status.get("driftCorrections") or 0) + len(
                changed_aspects(result.applied)
            )
    if result.managed_policies is not None:
        wanted = [policy.to_wire() for policy in result.managed_policies]
        if (status.get("identityPolicies") or []) != wanted:
            patch["identityPolicies"] = wanted or None
    return patch or None


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
