"""What AWS holds: one repository as the adapters observed it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ecr_operator.reconcile.repository.vocabulary import ADOPTED_TAG, OWNER_TAG

ExclusionFilter = tuple[str, str]
"""(filterType, filter) of an image tag mutability exclusion filter."""


@dataclass(frozen=True)
class RepositoryDescription:
    """One repository as DescribeRepositories reports it."""

    name: str
    arn: str
    uri: str
    registry_id: str
    image_tag_mutability: str
    exclusion_filters: frozenset[ExclusionFilter]
    scan_on_push: bool
    encryption_type: str
    kms_key: str | None = None


@dataclass(frozen=True)
class ObservedRepository:
    """A repository with its tags and policies, as AWS returned them (policies as raw JSON text)."""

    description: RepositoryDescription
    tags: Mapping[str, str]
    lifecycle_policy: str | None = None
    repository_policy: str | None = None

    @property
    def owner(self) -> str | None:
        return self.tags.get(OWNER_TAG)

    @property
    def adopted(self) -> bool:
        """Whether the operator adopted this repository rather than created it (a tag in AWS says so)."""
        return ADOPTED_TAG in self.tags
