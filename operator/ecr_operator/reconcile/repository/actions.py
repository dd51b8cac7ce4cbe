"""The calls a plan is made of: one small frozen value per AWS write, each naming the aspect it changes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from ecr_operator.reconcile.repository.observed import ExclusionFilter


@dataclass(frozen=True)
class CreateRepository:
    repository: str
    image_tag_mutability: str
    exclusion_filters: tuple[ExclusionFilter, ...]
    scan_on_push: bool
    encryption_type: str
    kms_key: str | None
    tags: tuple[tuple[str, str], ...]
    aspect: ClassVar[str] = "repository"


@dataclass(frozen=True)
class ClaimRepository:
    """Put this object's owner tag, and the adopted tag, on an unowned repository in one TagResource;
    the executor reads the owner tag back to confirm."""

    arn: str
    owner: str
    aspect: ClassVar[str] = "ownership"


@dataclass(frozen=True)
class PutImageTagMutability:
    repository: str
    image_tag_mutability: str
    exclusion_filters: tuple[ExclusionFilter, ...]
    aspect: ClassVar[str] = "image tag mutability"


@dataclass(frozen=True)
class PutImageScanningConfiguration:
    repository: str
    scan_on_push: bool
    aspect: ClassVar[str] = "scan on push"


@dataclass(frozen=True)
class TagRepository:
    arn: str
    tags: tuple[tuple[str, str], ...]
    aspect: ClassVar[str] = "tags"


@dataclass(frozen=True)
class UntagRepository:
    arn: str
    keys: tuple[str, ...]
    aspect: ClassVar[str] = "tags"


@dataclass(frozen=True)
class PutLifecyclePolicy:
    repository: str
    text: str
    aspect: ClassVar[str] = "lifecycle policy"


@dataclass(frozen=True)
class DeleteLifecyclePolicy:
    repository: str
    aspect: ClassVar[str] = "lifecycle policy"


@dataclass(frozen=True)
class SetRepositoryPolicy:
    repository: str
    text: str
    aspect: ClassVar[str] = "repository policy"


@dataclass(frozen=True)
class DeleteRepositoryPolicy:
    repository: str
    aspect: ClassVar[str] = "repository policy"


@dataclass(frozen=True)
class PutRolePolicy:
    role_name: str
    policy_name: str
    text: str
    aspect: ClassVar[str] = "identity policies"


@dataclass(frozen=True)
class DeleteRolePolicy:
    role_name: str
    policy_name: str
    aspect: ClassVar[str] = "identity policies"


@dataclass(frozen=True)
class DeleteRepository:
    repository: str
    force: bool
    aspect: ClassVar[str] = "repository"


RepositoryAction = (
    CreateRepository
    | ClaimRepository
    | PutImageTagMutability
    | PutImageScanningConfiguration
    | TagRepository
    | UntagRepository
    | PutLifecyclePolicy
    | DeleteLifecyclePolicy
    | SetRepositoryPolicy
    | DeleteRepositoryPolicy
    | DeleteRepository
)
IdentityAction = PutRolePolicy | DeleteRolePolicy
Action = RepositoryAction | IdentityAction


def changed_aspects(actions: Iterable[Action]) -> tuple[str, ...]:
    """What the actions changed, each aspect once, in order ("tags", "lifecycle policy", ...)."""
    return tuple(dict.fromkeys(action.aspect for action in actions))
