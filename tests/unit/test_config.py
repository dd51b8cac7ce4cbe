from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from ecr_operator.config import (
    InvalidSettingsError,
    Settings,
    load_settings,
    parse_duration,
    unknown_variables,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Each test starts from an environment with no operator settings in it."""
    for name in list(os.environ):
        if name.upper().startswith("ECR_OPERATOR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_from(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        monkeypatch.setenv(f"ECR_OPERATOR_{name}", value)
    return load_settings()


def settings_error(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    with pytest.raises(InvalidSettingsError) as raised:
        settings_from(monkeypatch, **variables)
    return str(raised.value)


def test_defaults_describe_a_standalone_cluster_wide_operator() -> None:
    settings = load_settings()

    assert settings.metrics_port == 8080
    assert settings.health_port == 8081
    assert settings.bind_address == "127.0.0.1"
    assert settings.log_format == "json"
    assert settings.cluster_id == "default"
    assert settings.clusterwide
    assert settings.standalone
    assert settings.drift_interval == timedelta(minutes=10)
    assert not settings.pull_secrets.enabled
    assert settings.registry_host_overrides == {}
    assert settings.repository_prefix("team-a") == ""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("6h", 21600), ("2.5m", 150), ("45", 45), (" 10M ", 600)],
)
def test_durations_are_read_as_the_crds_write_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["10x", " ", "m", "ten minutes", "inf", "nan", "1h 30m"])
def test_an_unreadable_duration_names_its_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    message = settings_error(monkeypatch, DRIFT_INTERVAL=text)

    assert "ECR_OPERATOR_DRIFT_INTERVAL:" in message


def test_a_zero_interval_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "must be longer than zero" in settings_error(monkeypatch, DRIFT_INTERVAL="0s")


def test_every_bad_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, METRICS_PORT="70000", LOG_FORMAT="xml", AWS_REGION="Europe")

    assert "ECR_OPERATOR_METRICS_PORT: Input should be less than or equal to 65535" in message
    assert "ECR_OPERATOR_LOG_FORMAT:" in message
    assert "ECR_OPERATOR_AWS_REGION: 'Europe' is not an AWS region name" in message


def test_invalid_json_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, PULL_SECRETS="{registries: []}")

    assert "ECR_OPERATOR_PULL_SECRETS: not valid JSON" in message


def test_an_error_inside_structured_settings_points_at_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(
        monkeypatch,
        PULL_SECRETS='{"registries": [{"accountId": "123456789012", "region": "us-east-1"}, '
        '{"accountId": "12345", "region": "us-east-1"}]}',
    )

    assert (
        "ECR_OPERATOR_PULL_SECRETS: registries[1].accountId: '12345' is not a 12-digit AWS account ID"
        in message
    )


def test_a_misspelt_key_in_structured_settings_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, PULL_SECRETS='{"namespaceSelektor": {"include": ["team-*"]}}')

    assert "ECR_OPERATOR_PULL_SECRETS: namespaceSelektor: Extra inputs are not permitted" in message


def test_metrics_and_health_cannot_share_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, METRICS_PORT="9000", HEALTH_PORT="9000")

    assert "ECR_OPERATOR_METRICS_PORT and ECR_OPERATOR_HEALTH_PORT are both 9000" in message


def test_drift_jitter_must_be_shorter_than_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, DRIFT_INTERVAL="1m", DRIFT_JITTER="1m")

    assert "ECR_OPERATOR_DRIFT_JITTER must be shorter than ECR_OPERATOR_DRIFT_INTERVAL" in message


def test_token_refresh_lead_must_leave_part_of_the_token_lifetime(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, TOKEN_REFRESH_LEAD="12h")

    assert (
        "ECR_OPERATOR_TOKEN_REFRESH_LEAD must be shorter than ECR_OPERATOR_TOKEN_FALLBACK_LIFETIME" in message
    )


def test_bind_address_must_be_an_ip_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from(monkeypatch, BIND_ADDRESS="0:0::0").bind_address == "::"
    assert "ECR_OPERATOR_BIND_ADDRESS:" in settings_error(monkeypatch, BIND_ADDRESS="localhost")


@pytest.mark.parametrize(
    ("value", "expected"), [("team-a, team-b", ("team-a", "team-b")), ('["t-*"]', ("t-*",))]
)
def test_namespaces_are_a_list_in_json_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]
) -> None:
    settings = settings_from(monkeypatch, NAMESPACES=value)

    assert settings.namespaces == expected
    assert not settings.clusterwide


def test_peering_name_turns_off_standalone_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not settings_from(monkeypatch, PEERING_NAME="ecr-operator").standalone


def test_registry_host_overrides_map_ecr_hosts_to_host_port(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch,
        REGISTRY_HOST_OVERRIDES='{"123456789012.dkr.ecr.us-east-1.amazonaws.com": "127.0.0.1:5000",'
        ' "*": "[::1]:5001"}',
    )

    assert (
        settings.registry_host_overrides["123456789012.dkr.ecr.us-east-1.amazonaws.com"] == "127.0.0.1:5000"
    )


# What each structured variable refuses, and the words that say why.
STRUCTURED_REFUSALS = {
    "REGISTRY_HOST_OVERRIDES": [
        ('{"docker.io": "127.0.0.1:5000"}', "is not '*' or an ECR registry host"),
        ('{"*": "127.0.0.1"}', "is not host:port"),
        ('["127.0.0.1:5000"]', "Input should be a valid dictionary"),
    ],
    "REPOSITORY_NAME_PREFIX": [
        ("{team}/", "unknown placeholder(s) ['team']"),
        ("Teams/{namespace}/", "does not form an ECR repository name"),
        ("{namespace}-", "must end with '/' so that a prefix is whole name segments"),
        ("teams/{namespace}", "must end with '/'"),
    ],
    "PULL_SECRET_ROLE_ARN_TEMPLATE": [
        ("arn:aws:iam::{account}:role/ecr-pull-{namespace}", "unknown placeholder(s) ['account']"),
        ("arn:aws:iam::{accountId}:role/{namespace.upper}", "unknown placeholder(s) ['namespace.upper']"),
        ("arn:aws:iam::{accountId}:role/ecr-pull-{", "Single '{' encountered"),
        ("arn:aws:iam::{accountId}:user/{namespace}", "does not form an IAM role ARN"),
        ("ecr-pull-{namespace}", "does not form an IAM role ARN"),
    ],
}


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [(variable, *refusal) for variable, refusals in STRUCTURED_REFUSALS.items() for refusal in refusals],
)
def test_structured_settings_are_checked_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    message = settings_error(monkeypatch, **{variable: value})

    assert f"ECR_OPERATOR_{variable}:" in message
    assert complaint in message


def test_ca_bundle_must_be_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")

    assert settings_from(monkeypatch, CA_BUNDLE=str(bundle)).ca_bundle == bundle
    assert "ECR_OPERATOR_CA_BUNDLE:" in settings_error(monkeypatch, CA_BUNDLE=str(tmp_path / "missing.pem"))


def test_no_role_arn_is_allowed_unless_the_admin_lists_it() -> None:
    assert not load_settings().role_arn_allowed("arn:aws:iam::123456789012:role/anything", "team-a")


# Both allow-lists are role ARN rules: a pattern alone, or a pattern limited to namespaces.
ROLE_RULE_CASES = [
    pytest.param(
        "ALLOWED_ROLE_ARNS",
        '["arn:aws:iam::123456789012:role/ecr-*",'
        ' {"pattern": "arn:aws:iam::210987654321:role/shared", "namespaces": ["team-*"]}]',
        Settings.role_arn_allowed,
        {
            ("arn:aws:iam::123456789012:role/ecr-pusher", "anywhere"): True,
            ("arn:aws:iam::123456789012:role/admin", "anywhere"): False,
            ("arn:aws:iam::210987654321:role/shared", "team-a"): True,
            ("arn:aws:iam::210987654321:role/shared", "kube-system"): False,
        },
        id="role-arns",
    ),
    pytest.param(
        "ALLOWED_IDENTITY_POLICY_ROLES",
        '["arn:aws:iam::*:role/shared-reader",'
        ' {"pattern": "arn:aws:iam::123456789012:role/team-a-*", "namespaces": ["team-a"]}]',
        Settings.identity_role_allowed,
        {
            ("arn:aws:iam::123456789012:role/team-a-ci", "team-a"): True,
            ("arn:aws:iam::123456789012:role/team-a-ci", "team-b"): False,
            ("arn:aws:iam::123456789012:role/team-b-ci", "team-a"): False,
            ("arn:aws:iam::210987654321:role/shared-reader", "team-b"): True,
        },
        id="identity-policy-roles",
    ),
]


@pytest.mark.parametrize(("variable", "rules", "allowed", "expected"), ROLE_RULE_CASES)
def test_role_arn_rules_match_patterns_and_namespaces(
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    rules: str,
    allowed: Callable[[Settings, str, str], bool],
    expected: dict[tuple[str, str], bool],
) -> None:
    settings = settings_from(monkeypatch, **{variable: rules})

    assert {case: allowed(settings, *case) for case in expected} == expected


def test_a_role_rule_that_is_not_an_arn_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, ALLOWED_ROLE_ARNS='["ecr-pusher"]')

    assert "ECR_OPERATOR_ALLOWED_ROLE_ARNS: [0].pattern: 'ecr-pusher' is not an ARN pattern" in message


def addresses(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(text) for text in texts]


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
    ],
)
def test_mirror_sources_refuse_metadata_loopback_and_private_addresses_by_default(address: str) -> None:
    policy = load_settings().mirror_sources

    assert not policy.permits("registry.example.com", addresses(address))


def test_mirror_sources_permit_public_addresses_by_default() -> None:
    assert load_settings().mirror_sources.permits(
        "registry-1.docker.io", addresses("54.1.2.3", "2600:1f18::1")
    )


def test_a_host_with_one_private_address_is_refused() -> None:
    assert not load_settings().mirror_sources.permits("sneaky.example.com", addresses("54.1.2.3", "10.0.0.1"))


def test_admin_allowed_sources_override_the_built_in_denials(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = settings_from(
        monkeypatch, MIRROR_ALLOWED_SOURCES="127.0.0.1/32, registry.*.corp.example"
    ).mirror_sources

    assert policy.permits("127.0.0.1", addresses("127.0.0.1"))
    assert not policy.permits("127.0.0.2", addresses("127.0.0.2"))
    assert policy.permits("registry.eu.corp.example", addresses("10.20.30.40"))


def test_admin_denied_sources_refuse_hosts_and_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = settings_from(
        monkeypatch, MIRROR_DENIED_SOURCES='["*.untrusted.example", "54.0.0.0/8"]'
    ).mirror_sources

    assert not policy.permits("cdn.untrusted.example", addresses("8.8.8.8"))
    assert not policy.permits("registry.example.com", addresses("54.1.2.3"))
    assert policy.permits("registry.example.com", addresses("8.8.8.8"))


def test_a_mirror_source_rule_must_be_a_cidr_or_host_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, MIRROR_ALLOWED_SOURCES="10.0.0.0/33")

    assert (
        "ECR_OPERATOR_MIRROR_ALLOWED_SOURCES: '10.0.0.0/33' is neither a CIDR nor a host name pattern"
        in message
    )


def test_repository_prefix_is_rendered_per_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch, REPOSITORY_NAME_PREFIX="{cluster_id}/{namespace}/", CLUSTER_ID="prod"
    )

    assert settings.repository_prefix("team-a") == "prod/team-a/"


def test_cluster_wide_pull_secrets_select_namespaces_and_service_accounts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        monkeypatch,
        PULL_SECRETS="""{
            "registries": [{"accountId": "123456789012", "region": "eu-west-1",
                            "roleArn": "arn:aws:iam::123456789012:role/puller"}],
            "namespaceSelector": {"matchLabels": {"ecr": "pull"}, "exclude": ["kube-*"]},
            "serviceAccountSelector": {"names": ["default", "builder-*"], "matchLabels": {"ecr-pull": "yes"}},
            "secretName": "ecr-credentials"
        }""",
    )
    pull_secrets = settings.pull_secrets
    namespaces, service_accounts = pull_secrets.namespace_selector, pull_secrets.service_account_selector

    assert pull_secrets.enabled
    assert pull_secrets.secret_name == "ecr-credentials"
    assert pull_secrets.registries[0].role_arn == "arn:aws:iam::123456789012:role/puller"
    assert namespaces.matches("team-a", {"ecr": "pull", "other": "x"})
    assert not namespaces.matches("team-b", {})
    assert not namespaces.matches("kube-system", {"ecr": "pull"})
    assert service_accounts.matches("default", {})
    assert service_accounts.matches("builder-ci", {})
    assert service_accounts.matches("app", {"ecr-pull": "yes"})
    assert not service_accounts.matches("app", {})


def test_service_account_selector_defaults_to_the_default_account() -> None:
    selector = load_settings().pull_secrets.service_account_selector

    assert selector.matches("default", {})
    assert not selector.matches("app", {"any": "label"})


def test_include_list_limits_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch,
        PULL_SECRETS='{"registries": [{"accountId": "123456789012", "region": "us-east-1"}],'
        ' "namespaceSelector": {"include": ["team-*"]}}',
    )

    assert settings.pull_secrets.namespace_selector.matches("team-a", {})
    assert not settings.pull_secrets.namespace_selector.matches("default", {})


def test_unknown_operator_variables_are_reported() -> None:
    environ = {
        "ECR_OPERATOR_METRIC_PORT": "9000",
        "ECR_OPERATOR_METRICS_PORT": "9001",
        "ECR_OPERATOR_CACHE": "/cache",
        "HOME": "/root",
    }

    assert unknown_variables(environ) == ["ECR_OPERATOR_METRIC_PORT"]


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(monkeypatch, AWS_REGION="", PEERING_NAME="", METRICS_PORT="")

    assert settings.aws_region is None
    assert settings.standalone
    assert settings.metrics_port == 8080


def test_pull_secrets_have_no_pull_role_and_no_single_tenant_opt_in_by_default() -> None:
    settings = load_settings()

    assert settings.pull_secret_role_arn_template == ""
    assert settings.pull_secrets_use_operator_credentials_single_tenant is False


def test_the_pull_role_template_and_the_single_tenant_opt_in_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        monkeypatch,
        PULL_SECRET_ROLE_ARN_TEMPLATE="arn:aws:iam::{accountId}:role/ecr-pull/{region}/{namespace}",
        PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT="true",
    )

    assert settings.pull_secret_role_arn_template == (
        "arn:aws:iam::{accountId}:role/ecr-pull/{region}/{namespace}"
    )
    assert settings.pull_secrets_use_operator_credentials_single_tenant is True


def test_adoption_identity_roles_and_adopted_deletion_are_off_by_default() -> None:
    settings = load_settings()

    assert not settings.adoption_allowed("team-a")
    assert not settings.adopted_deletion_allowed("team-a")
    assert not settings.identity_role_allowed("arn:aws:iam::123456789012:role/anything", "team-a")


def test_adoption_and_adopted_deletion_are_allowed_per_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(
        monkeypatch, ADOPTION_NAMESPACES="platform,legacy-*", ADOPTED_DELETION_NAMESPACES='["platform"]'
    )

    assert settings.adoption_allowed("platform")
    assert settings.adoption_allowed("legacy-billing")
    assert not settings.adoption_allowed("team-a")
    assert settings.adopted_deletion_allowed("platform")
    assert not settings.adopted_deletion_allowed("legacy-billing")


@pytest.mark.parametrize(
    "pattern", ["arn:aws:iam::123456789012:role/teams/a-*", "arn:aws:iam::123456789012:user/x", "ci-*"]
)
def test_identity_policy_role_patterns_match_role_names_without_paths(
    monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    message = settings_error(monkeypatch, ALLOWED_IDENTITY_POLICY_ROLES=f'["{pattern}"]')

    assert "ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES" in message
