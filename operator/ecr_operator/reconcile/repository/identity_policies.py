"""Inline identity policies on IAM roles: what each role should carry, and proof that a policy is this
object's before it is ever deleted."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ecr_operator.reconcile.policy import ACTIONS_BY_ACCESS, POLICY_VERSION, Access, render_policy
from ecr_operator.reconcile.repository.actions import Action, DeleteRolePolicy, IdentityAction, PutRolePolicy
from ecr_operator.reconcile.repository.desired import IdentityRole, Refusal
from ecr_operator.reconcile.repository.observed import RepositoryDescription
from ecr_operator.reconcile.repository.plan import same_policy
from ecr_operator.reconcile.repository.vocabulary import (
    AUTHORIZATION_TOKEN_ACTION,
    MAX_IAM_ROLE_NAME_LENGTH,
    PolicyStamp,
    Reason,
)


@dataclass(frozen=True, order=True)
class ManagedPolicy:
    """An inline policy the operator put on a role for this object (reported in status)."""

    role_name: str
    policy_name: str

    def to_wire(self) -> dict[str, str]:
        return {"roleName": self.role_name, "policyName": self.policy_name}


# The CRD bounds status.identityPolicies to this many entries; a longer list is cut, not followed.
MAX_STATUS_IDENTITY_POLICIES = 64


def identity_roles_in_status(status: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The role names ``status.identityPolicies`` lists: only a hint where this object's policies may
    still be (a role that left the spec), because a tenant may be able to write status. Every role is
    looked at in IAM, under this object's own policy name, before anything is deleted; the policy names
    in status are ignored."""
    roles: set[str] = set()
    entries = (status or {}).get("identityPolicies") or []
    if not isinstance(entries, list):
        return ()
    for entry in entries[:MAX_STATUS_IDENTITY_POLICIES]:
        role = entry.get("roleName") if isinstance(entry, Mapping) else None
        if isinstance(role, str) and 0 < len(role) <= MAX_IAM_ROLE_NAME_LENGTH:
            roles.add(role)
    return tuple(sorted(roles))


def identity_policy_document(repository_arn: str, access: Access, stamp: PolicyStamp) -> dict[str, Any]:
    """Access to one repository, plus the registry login every image pull or push starts with. Every
    statement's Sid starts with the object's stamp, so the document itself says whose it is."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": f"{stamp.sid_prefix}RepositoryAccess",
                "Effect": "Allow",
                "Action": list(ACTIONS_BY_ACCESS[access]),
                "Resource": repository_arn,
            },
            {
                "Sid": f"{stamp.sid_prefix}AuthorizationToken",
                "Effect": "Allow",
                "Action": AUTHORIZATION_TOKEN_ACTION,
                "Resource": "*",
            },
        ],
    }


def is_own_identity_policy(document: Mapping[str, Any] | None, stamp: PolicyStamp) -> bool:
    """Whether an inline policy (found under the stamp's name) is provably this object's: every statement
    carries the stamp's Sid prefix. Anything else (a policy a human wrote under that name, a document this
    operator wrote before it stamped documents) is left alone."""
    if not isinstance(document, Mapping):
        return False
    statements = document.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        return False
    return all(
        isinstance(statement, Mapping)
        and isinstance(statement.get("Sid"), str)
        and statement["Sid"].startswith(stamp.sid_prefix)
        for statement in statements
    )


def identity_role_arn(role: IdentityRole, repository: RepositoryDescription) -> str:
    """The ARN the admin's role allow-list is matched against: ``arn:<partition>:iam::<registry
    account>:role/<name>``. IAM's PutRolePolicy addresses a role by name alone, so a path written in
    ``roleArn`` proves nothing and is not part of what is matched."""
    parts = repository.arn.split(":")
    partition = parts[1] if len(parts) > 1 and parts[0] == "arn" and parts[1] else "aws"
    return f"arn:{partition}:iam::{role.account or repository.registry_id}:role/{role.name}"


def _no_role_allowed(_role_arn: str) -> bool:
    return False


@dataclass(frozen=True)
class IdentityPlan:
    actions: tuple[IdentityAction, ...] = ()
    refusal: Refusal | None = None
    in_place: tuple[str, ...] = ()
    """Roles that carried this object's policy before the actions (verified in IAM)."""
    left_alone: tuple[str, ...] = ()
    """Roles no longer wanted whose policy of this name is not provably this object's."""


def plan_identity_policies(
    roles: Sequence[IdentityRole],
    *,
    stamp: PolicyStamp,
    repository: RepositoryDescription,
    observed: Mapping[str, Mapping[str, Any] | None],
    role_allowed: Callable[[str], bool] = _no_role_allowed,
    namespace: str = "",
) -> IdentityPlan:
    """Put the policy on every role the spec names (where it differs), delete it from roles no longer named.

    ``observed`` holds, for every role the spec names and every role status hints at, the document IAM
    has under ``stamp.name`` (None: no such policy, or no such role). Only roles the admin allows
    (``role_allowed``, given the role's ARN: ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES) may get a
    policy; a policy is deleted only when IAM shows it is this object's (``is_own_identity_policy``).
    """
    in_place = tuple(
        sorted(role for role, document in observed.items() if is_own_identity_policy(document, stamp))
    )
    refusal = _role_refusal(roles, repository, role_allowed, namespace)
    if refusal is not None:
        return IdentityPlan(refusal=refusal, in_place=in_place)
    actions: list[IdentityAction] = []
    wanted = {role.name: role for role in roles}
    for name, role in sorted(wanted.items()):
        document = identity_policy_document(repository.arn, role.access, stamp)
        if not same_policy(document, observed.get(name)):
            actions.append(PutRolePolicy(name, stamp.name, render_policy(document)))
    left_alone: list[str] = []
    for stale in sorted(set(observed) - set(wanted)):
        current = observed[stale]
        if is_own_identity_policy(current, stamp):
            actions.append(DeleteRolePolicy(stale, stamp.name))
        elif current is not None:
            left_alone.append(stale)
    return IdentityPlan(tuple(actions), in_place=in_place, left_alone=tuple(left_alone))


def _role_refusal(
    roles: Sequence[IdentityRole],
    repository: RepositoryDescription,
    role_allowed: Callable[[str], bool],
    namespace: str,
) -> Refusal | None:
    """Why the spec's roles may not carry identity policies, or None."""
    foreign = [role for role in roles if role.account is not None and role.account != repository.registry_id]
    if foreign:
        names = ", ".join(role.name for role in foreign)
        return Refusal(
            Reason.INVALID_SPEC,
            f"access.identityPolicies: role(s) {names} are not in the registry's account"
            f" {repository.registry_id}; identity policies can only be put on roles of that account.",
        )
    refused = [
        identity_role_arn(role, repository)
        for role in roles
        if not role_allowed(identity_role_arn(role, repository))
    ]
    if refused:
        return Refusal(
            Reason.IDENTITY_ROLE_NOT_ALLOWED,
            f"access.identityPolicies: {', '.join(refused)} may not carry identity policies for"
            f" namespace {namespace}: the cluster admin must allow the role in"
            " ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES. No identity policy was changed.",
        )
    return None


def roles_after(in_place: Iterable[str], applied: Iterable[Action]) -> tuple[str, ...]:
    """The roles carrying this object's policy once ``applied`` succeeded (what status then reports)."""
    roles = set(in_place)
    for action in applied:
        if isinstance(action, PutRolePolicy):
            roles.add(action.role_name)
        elif isinstance(action, DeleteRolePolicy):
            roles.discard(action.role_name)
    return tuple(sorted(roles))
