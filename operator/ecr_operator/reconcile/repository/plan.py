"""Desired vs observed: the ordered calls that converge a repository, or why none may be made."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ecr_operator.api.repository import AdoptionPolicy
from ecr_operator.reconcile.lifecycle import (
    LifecyclePolicyError,
    lifecycle_policies_equal,
    render_lifecycle_policy,
)
from ecr_operator.reconcile.policy import PolicyError, policies_equal, render_policy
from ecr_operator.reconcile.repository.actions import (
    ClaimRepository,
    CreateRepository,
    DeleteLifecyclePolicy,
    DeleteRepositoryPolicy,
    PutImageScanningConfiguration,
    PutImageTagMutability,
    PutLifecyclePolicy,
    RepositoryAction,
    SetRepositoryPolicy,
    TagRepository,
    UntagRepository,
)
from ecr_operator.reconcile.repository.desired import DesiredRepository, Refusal
from ecr_operator.reconcile.repository.observed import ObservedRepository, RepositoryDescription
from ecr_operator.reconcile.repository.vocabulary import (
    ADOPTED_TAG,
    ADOPTED_TAG_VALUE,
    OWNER_TAG,
    Reason,
    describe_owner,
)


@dataclass(frozen=True)
class RepositoryPlan:
    """The calls that make AWS match the spec, in order; or why none may be made."""

    actions: tuple[RepositoryAction, ...] = ()
    refusal: Refusal | None = None


def plan_repository(
    desired: DesiredRepository, observed: ObservedRepository | None, *, adoption_allowed: bool = False
) -> RepositoryPlan:
    """Decide the calls that converge the repository.

    Ownership is read from AWS only (the owner tag), never from the object's status, which its tenant may
    be able to write. A repository without an owner tag is adopted only where the admin allows adoption
    (``adoption_allowed``: ECR_OPERATOR_ADOPTION_NAMESPACES) and the spec does not say ``adoption: Fail``;
    that includes a repository whose owner tag was removed outside the operator: nothing in AWS proves
    any more that this object created it.
    """
    if observed is None:
        return RepositoryPlan((_create(desired), *_policy_actions(desired, None)))
    refusal = _ownership_refusal(desired, observed, adoption_allowed)
    mismatch = encryption_mismatch(desired, observed.description)
    if refusal is None and mismatch is not None:
        refusal = Refusal(Reason.ENCRYPTION_MISMATCH, mismatch)
    if refusal is not None:
        return RepositoryPlan(refusal=refusal)
    adopting = observed.owner != desired.owner
    claim = [ClaimRepository(observed.description.arn, desired.owner)] if adopting else []
    return RepositoryPlan(
        (
            *claim,
            *_setting_actions(desired, observed.description),
            *_tag_actions(desired, observed, adopting=adopting),
            *_policy_actions(desired, observed),
        )
    )


def _ownership_refusal(
    desired: DesiredRepository, observed: ObservedRepository, adoption_allowed: bool
) -> Refusal | None:
    """Why an existing repository is not this object's to manage, or None."""
    owner = observed.owner
    if owner == desired.owner:
        return None
    if owner is not None:
        return Refusal(
            Reason.CONFLICT,
            f"ECR repository {desired.name} belongs to {describe_owner(owner)} (tag {OWNER_TAG});"
            " nothing was changed. Choose another repositoryName.",
        )
    if desired.adoption is AdoptionPolicy.FAIL:
        return Refusal(
            Reason.ADOPTION_REFUSED,
            f"ECR repository {desired.name} already exists and adoption is Fail; nothing was changed."
            " Set adoption: Adopt to manage it, or choose another repositoryName.",
        )
    if not adoption_allowed:
        return Refusal(
            Reason.ADOPTION_NOT_ALLOWED,
            f"ECR repository {desired.name} already exists without an owner tag ({OWNER_TAG}), and"
            f" adopting an unowned repository is not allowed in namespace {desired.namespace}: the"
            " cluster admin decides where, with ECR_OPERATOR_ADOPTION_NAMESPACES. Nothing was"
            " changed. Choose another repositoryName; or, if this object created the repository and"
            f" the tag was removed outside the operator, put back the tag {OWNER_TAG}={desired.owner}.",
        )
    return None


def _setting_actions(
    desired: DesiredRepository, description: RepositoryDescription
) -> list[RepositoryAction]:
    actions: list[RepositoryAction] = []
    if (desired.image_tag_mutability, desired.exclusion_filters) != (
        description.image_tag_mutability,
        description.exclusion_filters,
    ):
        filters = tuple(sorted(desired.exclusion_filters))
        actions.append(PutImageTagMutability(desired.name, desired.image_tag_mutability, filters))
    if desired.scan_on_push != description.scan_on_push:
        actions.append(PutImageScanningConfiguration(desired.name, desired.scan_on_push))
    return actions


def _tag_actions(
    desired: DesiredRepository, observed: ObservedRepository, *, adopting: bool
) -> list[TagRepository | UntagRepository]:
    current_tags = dict(observed.tags)
    wanted_tags = dict(desired.tags)
    if adopting:  # ClaimRepository has put these two already
        current_tags |= {OWNER_TAG: desired.owner, ADOPTED_TAG: ADOPTED_TAG_VALUE}
    # Once adopted, always adopted: the tag is what keeps the repository from being deleted by default.
    if ADOPTED_TAG in current_tags:
        wanted_tags[ADOPTED_TAG] = current_tags[ADOPTED_TAG]
    return plan_tags(observed.description.arn, wanted_tags, current_tags)


def _create(desired: DesiredRepository) -> CreateRepository:
    return CreateRepository(
        repository=desired.name,
        image_tag_mutability=desired.image_tag_mutability,
        exclusion_filters=tuple(sorted(desired.exclusion_filters)),
        scan_on_push=desired.scan_on_push,
        encryption_type=desired.encryption_type,
        kms_key=desired.kms_key,
        tags=tuple(sorted(desired.tags.items())),
    )


def plan_tags(
    arn: str, desired: Mapping[str, str], current: Mapping[str, str]
) -> list[TagRepository | UntagRepository]:
    """Order-insensitive delta: tag what is missing or different, untag what the spec does not have.

    ``aws:`` tags belong to AWS (CloudFormation and friends) and cannot be removed by anyone else.
    """
    actions: list[TagRepository | UntagRepository] = []
    to_tag = tuple(sorted((key, value) for key, value in desired.items() if current.get(key) != value))
    to_untag = tuple(
        sorted(key for key in current if key not in desired and not key.lower().startswith("aws:"))
    )
    if to_tag:
        actions.append(TagRepository(arn, to_tag))
    if to_untag:
        actions.append(UntagRepository(arn, to_untag))
    return actions


def _policy_actions(
    desired: DesiredRepository, observed: ObservedRepository | None
) -> list[RepositoryAction]:
    name, lifecycle, policy = desired.name, desired.lifecycle_policy, desired.repository_policy
    actions: list[RepositoryAction] = []
    if not _same(lifecycle_policies_equal, lifecycle, observed.lifecycle_policy if observed else None):
        actions.append(
            DeleteLifecyclePolicy(name)
            if lifecycle is None
            else PutLifecyclePolicy(name, render_lifecycle_policy(lifecycle))
        )
    if not _same(policies_equal, policy, observed.repository_policy if observed else None):
        actions.append(
            DeleteRepositoryPolicy(name)
            if policy is None
            else SetRepositoryPolicy(name, render_policy(policy))
        )
    return actions


def same_policy(desired: Mapping[str, Any], current: str | Mapping[str, Any] | None) -> bool:
    """Whether ``current`` (as IAM or ECR returned it) is the policy document ``desired``."""
    return _same(policies_equal, desired, current)


def _same(
    equal: Callable[[Mapping[str, Any], Any], bool],
    desired: Mapping[str, Any] | None,
    current: str | Mapping[str, Any] | None,
) -> bool:
    """Whether AWS holds the desired document (None: no document at all), compared semantically."""
    if desired is None or current is None:
        return desired is None and current is None
    try:
        return equal(desired, current)
    except (LifecyclePolicyError, PolicyError, AttributeError, TypeError):
        return False  # whatever AWS holds is not a policy the operator wrote: replace it


def encryption_mismatch(desired: DesiredRepository, description: RepositoryDescription) -> str | None:
    """Why the repository's encryption differs from the spec, or None. ECR cannot re-encrypt a repository.

    A KMS key given by alias cannot be compared without asking KMS, so only its type is compared; a key ID
    matches the key ARN AWS reports for it.
    """
    wanted, actual = desired.encryption_type, description.encryption_type
    if wanted != actual:
        return (
            f"ECR repository {desired.name} is encrypted with {actual}, the spec asks for {wanted};"
            " ECR cannot change the encryption of an existing repository. Nothing was changed."
        )
    key, actual_key = desired.kms_key, description.kms_key
    if key is None or actual_key is None or "alias/" in key or key == actual_key:
        return None
    if key.startswith("arn:") or not actual_key.endswith(f":key/{key}"):
        return (
            f"ECR repository {desired.name} is encrypted with KMS key {actual_key}, the spec asks for {key};"
            " ECR cannot change the key of an existing repository. Nothing was changed."
        )
    return None
