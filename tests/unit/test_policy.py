"""Repository policy compilation and semantic comparison (pure)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_operator.reconcile.policy import (
    PULL_ACTIONS,
    PUSH_ACTIONS,
    Grant,
    PolicyError,
    compile_grants,
    normalise_policy,
    parse_policy,
    policies_equal,
    principal_kind,
    render_policy,
)

pytestmark = pytest.mark.unit


def test_no_grants_compile_to_no_policy() -> None:
    assert compile_grants([]) is None


def test_pull_grant_for_account_becomes_root_arn_with_pull_actions_only() -> None:
    policy = compile_grants([Grant(principals=("111122223333",), access="pull")])
    assert policy is not None
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"AWS": ["arn:aws:iam::111122223333:root"]}
    assert set(statement["Action"]) == set(PULL_ACTIONS)
    assert "ecr:PutImage" not in statement["Action"]


def test_push_grant_cannot_read_images() -> None:
    policy = compile_grants([Grant(principals=("arn:aws:iam::111122223333:role/ci",), access="push")])
    assert policy is not None
    actions = set(policy["Statement"][0]["Action"])
    assert actions == set(PUSH_ACTIONS)
    assert "ecr:BatchGetImage" not in actions


def test_organization_grant_uses_principal_org_condition() -> None:
    policy = compile_grants([Grant(principals=("o-abcdefghij",), access="pull")])
    assert policy is not None
    [statement] = policy["Statement"]
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ["o-abcdefghij"]}}


def test_service_principal_goes_to_service_key() -> None:
    policy = compile_grants([Grant(principals=("lambda.amazonaws.com",), access="pull")])
    assert policy is not None
    assert policy["Statement"][0]["Principal"] == {"Service": ["lambda.amazonaws.com"]}


def test_mixed_grants_are_grouped_by_access_and_kind() -> None:
    grants = [
        Grant(principals=("111122223333", "lambda.amazonaws.com"), access="pull"),
        Grant(principals=("arn:aws:iam::111122223333:user/dev",), access="pullPush"),
        Grant(principals=("o-abcdefghij",), access="pull"),
    ]
    policy = compile_grants(grants)
    assert policy is not None
    sids = [statement["Sid"] for statement in policy["Statement"]]
    assert sids == [
        "EcrOperatorPullPrincipals",
        "EcrOperatorPullServices",
        "EcrOperatorPullOrganizations",
        "EcrOperatorPullPushPrincipals",
    ]


def test_grant_order_does_not_change_the_compiled_policy() -> None:
    grants = [
        Grant(principals=("111122223333", "444455556666"), access="pull"),
        Grant(
            principals=("arn:aws:iam::111122223333:role/b", "arn:aws:iam::111122223333:role/a"), access="push"
        ),
    ]
    reordered = [Grant(principals=tuple(reversed(g.principals)), access=g.access) for g in reversed(grants)]
    assert render_policy(compile_grants(grants) or {}) == render_policy(compile_grants(reordered) or {})


@pytest.mark.parametrize(
    "principal",
    ["12345", "arn:aws:iam::123:role/x", "o-short", "example.com", "arn:aws:s3:::bucket", ""],
)
def test_invalid_principal_is_named_in_the_error(principal: str) -> None:
    with pytest.raises(PolicyError, match="principal"):
        principal_kind(principal)


def test_aws_reshaping_is_not_a_difference() -> None:
    ours = compile_grants([Grant(principals=("111122223333",), access="pull")])
    # What ECR gives back: scalars for one-element lists, re-ordered actions, pretty-printed.
    theirs = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Sid": "EcrOperatorPullPrincipals",
                "Effect": "Allow",
                "Principal": {"AWS": "111122223333"},
                "Action": list(reversed(PULL_ACTIONS)),
            },
        },
        indent=2,
    )
    assert policies_equal(ours, theirs)


def test_a_real_change_is_a_difference() -> None:
    ours = compile_grants([Grant(principals=("111122223333",), access="pull")])
    theirs = compile_grants([Grant(principals=("111122223333",), access="pullPush")])
    assert not policies_equal(ours, theirs)
    assert not policies_equal(ours, None)


def test_principal_star_forms_are_equal() -> None:
    left = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}]}
    right = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["ecr:BatchGetImage"]}]}
    assert policies_equal(left, right)


def test_condition_values_are_order_insensitive() -> None:
    left = {"Statement": [{"Effect": "Allow", "Condition": {"StringEquals": {"k": ["a", "b"]}}}]}
    right = {"Statement": [{"Effect": "Allow", "Condition": {"StringEquals": {"k": ["b", "a"]}}}]}
    assert policies_equal(left, right)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "access.policy is not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"Version": "2012-10-17"}', "has no Statement"),
        ('{"Statement": []}', "non-empty list"),
    ],
)
def test_malformed_raw_policy_names_the_field(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text, field="access.policy")


statements = st.lists(
    st.fixed_dictionaries(
        {
            "Effect": st.sampled_from(["Allow", "Deny"]),
            "Action": st.lists(st.sampled_from(PULL_ACTIONS + PUSH_ACTIONS), min_size=1, max_size=5),
            "Principal": st.fixed_dictionaries(
                {"AWS": st.lists(st.from_regex(r"\A\d{12}\Z"), min_size=1, max_size=3)}
            ),
        }
    ),
    min_size=1,
    max_size=4,
)


@given(statements=statements, seed=st.integers())
def test_normalisation_ignores_any_reordering(statements: list[dict[str, Any]], seed: int) -> None:
    shuffler = random.Random(seed)
    shuffled = []
    for statement in statements:
        copy = {key: list(value) if isinstance(value, list) else value for key, value in statement.items()}
        shuffler.shuffle(copy["Action"])
        principals = list(statement["Principal"]["AWS"])
        shuffler.shuffle(principals)
        copy["Principal"] = {"AWS": principals[0] if len(principals) == 1 else principals}
        shuffled.append(copy)
    shuffler.shuffle(shuffled)
    original = {"Version": "2012-10-17", "Statement": statements}
    assert policies_equal(original, {"Version": "2012-10-17", "Statement": shuffled})
    normalised = normalise_policy(original)
    assert normalised is not None
    assert normalise_policy(normalised) == normalised
