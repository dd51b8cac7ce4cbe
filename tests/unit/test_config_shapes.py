"""Settings whose text must have a shape (account ID, region, role ARN, cluster ID) quote what they refuse."""

from __future__ import annotations

import os

import pytest

from ecr_operator.config import InvalidSettingsError, load_settings

pytestmark = pytest.mark.unit

BAD_PULL_REGISTRY = '{"registries": [{"accountId": "123456789012", "region": "Europe", "roleArn": "x"}]}'


@pytest.mark.parametrize(
    ("variables", "refusals"),
    [
        (
            {"ALLOWED_REGIONS": "us-east-1,Mars,eu-west-1,Venus"},
            [
                "ECR_OPERATOR_ALLOWED_REGIONS: [1]: 'Mars' is not an AWS region name",
                "ECR_OPERATOR_ALLOWED_REGIONS: [3]: 'Venus' is not an AWS region name",
            ],
        ),
        (
            {"CLUSTER_ID": "prod cluster"},
            ["ECR_OPERATOR_CLUSTER_ID: 'prod cluster' must be 1-128 letters, digits"],
        ),
        (
            {"PULL_SECRETS": BAD_PULL_REGISTRY},
            [
                "registries[0].region: 'Europe' is not an AWS region name",
                "registries[0].roleArn: 'x' is not an IAM role ARN",
            ],
        ),
    ],
    ids=["each bad allowed region, with its place", "cluster id", "pull-secret registry region and role"],
)
def test_a_misshapen_value_is_refused_with_its_text(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], refusals: list[str]
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ECR_OPERATOR_"):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(f"ECR_OPERATOR_{name}", value)

    with pytest.raises(InvalidSettingsError) as raised:
        load_settings()

    for refusal in refusals:
        assert refusal in str(raised.value)
