"""Who the operator acts as: a value the pure plans reason about and the AWS adapter turns into clients."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class AwsIdentity:
    """Who the operator acts as in one region: its own credentials, or a role it assumes."""

    region: str
    role_arn: str | None = None

    def describe(self) -> str:
        return f"{self.role_arn or 'operator credentials'} in {self.region}"
