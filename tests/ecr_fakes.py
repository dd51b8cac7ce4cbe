"""What ECR reports in the unit tests of the layers above the ECR adapter: one account, in us-east-1."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from ecr_operator.reconcile.repository.observed import RepositoryDescription
from ecr_operator.reconcile.tokens import IdentityToken

ACCOUNT = "123456789012"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


def repository_description(name: str, **changes: Any) -> RepositoryDescription:
    """DescribeRepositories' answer for ``name`` created with ECR's defaults, ``changes`` applied."""
    created = RepositoryDescription(
        name=name,
        arn=f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}",
        uri=f"{ECR_HOST}/{name}",
        registry_id=ACCOUNT,
        image_tag_mutability="MUTABLE",
        exclusion_filters=frozenset(),
        scan_on_push=False,
        encryption_type="AES256",
    )
    return dataclasses.replace(created, **changes)


def issued_token(
    issued_at: datetime,
    lifetime: timedelta = timedelta(hours=12),
    *,
    password: str = "pw",  # noqa: S107 -- a fake token
    host: str = ECR_HOST,
    verified: bool = True,
) -> IdentityToken:
    """A GetAuthorizationToken answer as the token cache holds it (ECR's tokens live 12 h)."""
    return IdentityToken("AWS", password, host, issued_at, issued_at + lifetime, verified)
