"""What deleting an EcrRepository object does in AWS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ecr_operator.api.repository import DeletionPolicy
from ecr_operator.reconcile.repository.actions import Action, DeleteRepository, DeleteRolePolicy
from ecr_operator.reconcile.repository.identity_policies import is_own_identity_policy
from ecr_operator.reconcile.repository.observed import ObservedRepository
from ecr_operator.reconcile.repository.vocabulary import ADOPTED_TAG, PolicyStamp, describe_owner

DeletionOutcome = Literal["delete", "retain", "gone", "not-owned", "adopted"]


@dataclass(frozen=True)
class DeletionPlan:
    outcome: DeletionOutcome
    actions: tuple[Action, ...]
    message: str
    left_alone: tuple[str, ...] = ()
    """Roles with a policy of this object's name that is not provably this object's: not deleted."""


def plan_deletion(
    *,
    repository_name: str,
    deletion_policy: DeletionPolicy,
    owner: str,
    observed: ObservedRepository | None,
    stamp: PolicyStamp,
    identity_policies: Mapping[str, Mapping[str, Any] | None],
    adopted_deletion_allowed: bool = False,
    namespace: str = "",
) -> DeletionPlan:
    """What deleting the object does in AWS.

    Identity policies go in every case, but only those IAM shows are this object's: ``identity_policies``
    holds, per candidate role, the document found under the stamp's name just before. The repository goes
    only when the deletion policy says so, its owner tag, read just before, names this object, and it
    was created by the operator; an adopted one (tag ``ecr-operator.io/adopted``) predates its object and
    is deleted only where the admin allows it (``adopted_deletion_allowed``).

    Under Retain the repository is not looked at (``observed`` may be None): nothing about it can change
    the outcome, so deleting a thousand retained objects costs no repository read.
    """
    removals: tuple[Action, ...] = tuple(
        DeleteRolePolicy(role, stamp.name)
        for role, document in sorted(identity_policies.items())
        if is_own_identity_policy(document, stamp)
    )
    left_alone = tuple(
        sorted(
            role
            for role, document in identity_policies.items()
            if document is not None and not is_own_identity_policy(document, stamp)
        )
    )

    outcome, message, extra = _repository_fate(
        repository_name, deletion_policy, owner, observed, adopted_deletion_allowed, namespace
    )
    return DeletionPlan(outcome, (*removals, *extra), message, left_alone)


def _repository_fate(
    repository_name: str,
    deletion_policy: DeletionPolicy,
    owner: str,
    observed: ObservedRepository | None,
    adopted_deletion_allowed: bool,
    namespace: str,
) -> tuple[DeletionOutcome, str, tuple[Action, ...]]:
    """What happens to the repository itself: the outcome, its message, and the call (if any)."""
    if deletion_policy is DeletionPolicy.RETAIN:
        return (
            "retain",
            f"ECR repository {repository_name} and its images were retained (deletionPolicy Retain).",
            (),
        )
    if observed is None:
        return "gone", f"ECR repository {repository_name} does not exist.", ()
    if observed.owner != owner:
        holder = describe_owner(observed.owner) if observed.owner else "no owner tag"
        return (
            "not-owned",
            f"ECR repository {repository_name} was left alone: it is not this object's ({holder}).",
            (),
        )
    if observed.adopted and not adopted_deletion_allowed:
        return (
            "adopted",
            f"ECR repository {repository_name} and its images were retained although deletionPolicy is"
            f" {deletion_policy.value}: it existed before this object adopted it (tag {ADOPTED_TAG}), and"
            f" adopted repositories are deleted only in namespaces the cluster admin lists in"
            f" ECR_OPERATOR_ADOPTED_DELETION_NAMESPACES (namespace {namespace} is not).",
            (),
        )
    force = deletion_policy is DeletionPolicy.FORCE_DELETE
    return (
        "delete",
        f"ECR repository {repository_name} was deleted"
        + (" with its images (deletionPolicy ForceDelete)." if force else " (deletionPolicy DeleteIfEmpty)."),
        (DeleteRepository(repository_name, force=force),),
    )
