"""IAM policy documents: compile structured grants, and compare documents semantically.

AWS returns a policy in a shape of its own choosing: statements and values re-ordered, one-element lists
collapsed to scalars, bare account IDs rewritten to ``arn:aws:iam::<id>:root``, whitespace changed. Comparing
text would write the same policy forever, so every comparison goes through ``normalise_policy``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ecr_operator.json_object import parse_json_object

Access = Literal["pull", "push", "pullPush"]

PULL_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
)
PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)
ACTIONS_BY_ACCESS: dict[Access, tuple[str, ...]] = {
    "pull": PULL_ACTIONS,
    "push": PUSH_ACTIONS,
    "pullPush": tuple(sorted(set(PULL_ACTIONS) | set(PUSH_ACTIONS))),
}

ACCOUNT_ID = re.compile(r"^\d{12}$")
IAM_PRINCIPAL_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(root|role/.+|user/.+)$")
ORGANIZATION_ID = re.compile(r"^o-[a-z0-9]{10,32}$")
SERVICE_PRINCIPAL = re.compile(r"^[a-z0-9.-]+\.amazonaws\.com(\.cn)?$")

# Keys whose values are sets in IAM's grammar: order and scalar-vs-list carry no meaning.
_SET_VALUED_KEYS = frozenset({"Action", "NotAction", "Resource", "NotResource"})
POLICY_VERSION = "2012-10-17"


class PolicyError(ValueError):
    """A policy document that is not valid JSON or not shaped like an IAM policy."""


@dataclass(frozen=True)
class Grant:
    """One access grant: who (principals) may do what (pull, push or both)."""

    principals: tuple[str, ...]
    access: Access


def principal_kind(principal: str) -> Literal["account", "arn", "organization", "service"]:
    """Classify a grant principal; raises PolicyError naming the value when it is none of the four."""
    if ACCOUNT_ID.match(principal):
        return "account"
    if IAM_PRINCIPAL_ARN.match(principal):
        return "arn"
    if ORGANIZATION_ID.match(principal):
        return "organization"
    if SERVICE_PRINCIPAL.match(principal):
        return "service"
    raise PolicyError(
        f"principal {principal!r} is not a 12-digit account ID, an IAM role/user ARN, "
        "an organization ID (o-...) or a service principal (*.amazonaws.com)"
    )


def compile_grants(grants: Sequence[Grant], partition: str = "aws") -> dict[str, Any] | None:
    """Compile grants into one canonical repository policy, or None when there are no grants.

    Principals are grouped per access level into at most three statements per level (IAM principals,
    services, organizations), so the document stays small and its shape does not depend on the order
    in which the user listed principals.
    """
    statements: list[dict[str, Any]] = []
    for access in ("pull", "push", "pullPush"):
        principals = sorted({p for grant in grants if grant.access == access for p in grant.principals})
        if not principals:
            continue
        actions = list(ACTIONS_BY_ACCESS[access])
        by_kind: dict[str, list[str]] = {"account": [], "arn": [], "organization": [], "service": []}
        for principal in principals:
            by_kind[principal_kind(principal)].append(principal)
        iam_principals = sorted(
            [f"arn:{partition}:iam::{account}:root" for account in by_kind["account"]] + by_kind["arn"]
        )
        sid = _sid_prefix(access)
        if iam_principals:
            statements.append(
                {
                    "Sid": f"{sid}Principals",
                    "Effect": "Allow",
                    "Principal": {"AWS": iam_principals},
                    "Action": actions,
                }
            )
        if by_kind["service"]:
            statements.append(
                {
                    "Sid": f"{sid}Services",
                    "Effect": "Allow",
                    "Principal": {"Service": by_kind["service"]},
                    "Action": actions,
                }
            )
        if by_kind["organization"]:
            statements.append(
                {
                    "Sid": f"{sid}Organizations",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": actions,
                    "Condition": {"StringEquals": {"aws:PrincipalOrgID": by_kind["organization"]}},
                }
            )
    if not statements:
        return None
    return {"Version": POLICY_VERSION, "Statement": statements}


def _sid_prefix(access: Access) -> str:
    return {"pull": "EcrOperatorPull", "push": "EcrOperatorPush", "pullPush": "EcrOperatorPullPush"}[access]


def parse_policy(text: str, field: str = "policy") -> dict[str, Any]:
    """Parse a JSON policy document; the error names the field it came from."""
    document = parse_json_object(
        text, PolicyError, f"{field} is not valid JSON", f"{field} must be a JSON object"
    )
    statements = document.get("Statement")
    if statements is None:
        raise PolicyError(f"{field} has no Statement")
    if not isinstance(statements, dict | list) or (isinstance(statements, list) and not statements):
        raise PolicyError(f"{field}.Statement must be an object or a non-empty list")
    return document


def normalise_policy(document: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """Canonical form of an IAM policy: equal documents (in IAM's eyes) normalise to equal values."""
    if document is None:
        return None
    parsed = parse_policy(document) if isinstance(document, str) else dict(document)
    statements = parsed.get("Statement", [])
    if isinstance(statements, Mapping):
        statements = [statements]
    canonical_statements = sorted(
        (_normalise_statement(statement) for statement in statements),
        key=lambda statement: json.dumps(statement, sort_keys=True),
    )
    normalised: dict[str, Any] = {
        key: value for key, value in parsed.items() if key not in {"Statement", "Version", "Id"}
    }
    normalised["Version"] = parsed.get("Version", POLICY_VERSION)
    if "Id" in parsed:
        normalised["Id"] = parsed["Id"]
    normalised["Statement"] = canonical_statements
    return normalised


def _normalise_statement(statement: Mapping[str, Any]) -> dict[str, Any]:
    canonical: dict[str, Any] = {}
    for key, value in statement.items():
        if key in _SET_VALUED_KEYS:
            canonical[key] = _as_sorted_set(value)
        elif key in {"Principal", "NotPrincipal"}:
            canonical[key] = _normalise_principal(value)
        elif key == "Condition":
            canonical[key] = {
                operator: {name: _as_sorted_set(values) for name, values in sorted(pairs.items())}
                for operator, pairs in sorted(value.items())
            }
        else:
            canonical[key] = value
    return canonical


def _normalise_principal(value: Any) -> Any:
    if value == "*" or not isinstance(value, Mapping):
        return value
    principal: dict[str, Any] = {}
    for kind, names in sorted(value.items()):
        values = _as_sorted_set(names)
        if kind == "AWS":
            values = sorted({_account_to_root_arn(name) for name in values})
        principal[kind] = values
    # AWS treats {"AWS": "*"} and "*" alike.
    if principal == {"AWS": ["*"]}:
        return "*"
    return principal


def _account_to_root_arn(name: str) -> str:
    return f"arn:aws:iam::{name}:root" if ACCOUNT_ID.match(name) else name


def _as_sorted_set(value: Any) -> list[Any]:
    values: Iterable[Any] = value if isinstance(value, list) else [value]
    return sorted(set(values), key=str)


def policies_equal(left: Mapping[str, Any] | str | None, right: Mapping[str, Any] | str | None) -> bool:
    """True when two policy documents mean the same thing (None means 'no policy')."""
    return normalise_policy(left) == normalise_policy(right)


def render_policy(document: Mapping[str, Any]) -> str:
    """The exact text sent to AWS: compact and key-sorted, so the same input always sends the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
