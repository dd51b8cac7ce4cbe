"""Inline identity policies on IAM roles: read them, and execute the actions ``reconcile.repository`` planned.

IAM is global, but the client comes from the same identity (region, role) as the registry's, so a
``roleArn`` that reaches another account puts policies on that account's roles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ecr_operator.aws.calls import call_aws, call_aws_unless_absent
from ecr_operator.aws.session import AwsClients
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.actions import DeleteRolePolicy, IdentityAction, PutRolePolicy
from ecr_operator.reconcile.repository.identity_policies import ManagedPolicy

SERVICE = "iam"
NO_SUCH_ENTITY = "NoSuchEntity"


class IamRolePolicies:
    """The IAM side of the EcrRepository controller."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def document(self, identity: AwsIdentity, policy: ManagedPolicy) -> Mapping[str, Any] | None:
        """The inline policy's document, or None when the role has no policy of that name (or no role)."""
        client = await self._clients.client_off_loop("iam", identity)
        response = await call_aws_unless_absent(
            NO_SUCH_ENTITY,
            SERVICE,
            "GetRolePolicy",
            client.get_role_policy,
            RoleName=policy.role_name,
            PolicyName=policy.policy_name,
        )
        if response is None:
            return None
        # boto3 decodes the URL-encoded JSON into a dict; a plain string would be the raw JSON.
        document: Any = response["PolicyDocument"]
        parsed: Mapping[str, Any] = json.loads(document) if isinstance(document, str) else document
        return parsed

    async def apply(self, identity: AwsIdentity, action: IdentityAction) -> None:
        """Put or delete one inline policy; deleting an absent one (or from an absent role) succeeds."""
        client = await self._clients.client_off_loop("iam", identity)
        where = {"RoleName": action.role_name, "PolicyName": action.policy_name}
        match action:
            case PutRolePolicy():
                await call_aws(
                    SERVICE, "PutRolePolicy", client.put_role_policy, PolicyDocument=action.text, **where
                )
            case DeleteRolePolicy():
                await call_aws_unless_absent(
                    NO_SUCH_ENTITY, SERVICE, "DeleteRolePolicy", client.delete_role_policy, **where
                )
