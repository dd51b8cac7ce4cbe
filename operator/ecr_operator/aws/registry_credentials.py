"""Registry credentials for pushing to ECR: the identity's authorization token, from a ``EcrTokenCache``.

An ECR token opens every registry its IAM principal may reach in the region, so one cache entry per
identity serves every repository and mirror using it. The registry client asks for credentials before
each request it authenticates; this answers from the cache and refreshes only when the cache says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from datetime import datetime

from ecr_operator.aws.tokens import EcrTokenCache, utc_now
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.registry.auth import Credentials
from ecr_operator.registry.errors import AuthError


@dataclass(frozen=True, eq=False)
class EcrCredentials:
    """A registry ``CredentialsProvider`` for one ECR registry host, pushed to as ``identity``."""

    tokens: EcrTokenCache
    identity: AwsIdentity
    registry_host: str
    _: KW_ONLY
    clock: Callable[[], datetime] = utc_now

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        if registry != self.registry_host:
            return None
        # Shared with the pull secrets of the same identity: a token they just refreshed is used as it is.
        status = await self.tokens.refresh_if_due(self.identity)
        token = status.token
        if token is None or token.expires_at <= self.clock():
            problem = status.problem.message if status.problem else "no token"
            raise AuthError(f"no ECR authorization token for {self.identity.describe()}: {problem}")
        return Credentials(token.username, token.password)
