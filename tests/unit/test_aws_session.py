"""Per-region clients: only real (or admin-listed) regions get one, and the cache is bounded (F15)."""

from __future__ import annotations

import asyncio
import threading

import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecr_operator.api.common import REGION_PATTERN
from ecr_operator.aws.calls import AwsCallFailed, call_aws
from ecr_operator.aws.session import (
    ENDPOINT_PREFIXES,
    REGION_NOT_ALLOWED,
    AwsClients,
    RegionNotAllowed,
    endpoint_table,
    error_code,
    error_message,
    known_ecr_regions,
)
from ecr_operator.aws.tokens import EcrTokenSource, TokenRefreshError
from ecr_operator.config import InvalidSettingsError, load_settings
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.failures import classify_aws_failure

pytestmark = pytest.mark.unit

ROLE = "arn:aws:iam::123456789012:role/ecr-pull-{}"


def test_botocore_regions_of_every_partition_are_known() -> None:
    regions = known_ecr_regions()

    assert {"us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1"} <= regions
    assert "xx-fake-1" not in regions


def test_a_region_botocore_does_not_know_gets_no_client_and_a_refusal_naming_field_and_setting() -> None:
    clients = AwsClients()

    client = clients.client("ecr", AwsIdentity(region="xx-fake-1"))
    with pytest.raises(RegionNotAllowed) as refused:
        client.describe_repositories(repositoryNames=["app"])

    assert error_code(refused.value) == REGION_NOT_ALLOWED
    message = error_message(refused.value)
    assert "'xx-fake-1'" in message
    assert "spec.registry.region" in message
    assert "ECR_OPERATOR_ALLOWED_REGIONS" in message
    assert refused.value.operation_name == "DescribeRepositories"
    assert clients.cached_clients == 0


async def test_the_refusal_reaches_the_repository_condition_as_a_permanent_failure() -> None:
    client = AwsClients().client("ecr", AwsIdentity(region="zz-nowhere-7"))

    with pytest.raises(AwsCallFailed) as failed:
        await call_aws("ecr", "DescribeRepositories", client.describe_repositories)
    error = failed.value
    problem = classify_aws_failure(
        error.service, error.operation, error.code, error.message, http_status=error.http_status
    )

    assert error.code == REGION_NOT_ALLOWED
    assert problem.kind == "failed"  # not retried as if AWS were unavailable
    assert "spec.registry.region" in problem.message
    assert "ECR_OPERATOR_ALLOWED_REGIONS" in problem.message


async def test_the_refusal_reaches_pull_secret_tokens_as_a_refresh_error() -> None:
    source = EcrTokenSource(AwsClients())

    with pytest.raises(TokenRefreshError, match=REGION_NOT_ALLOWED):
        await source(AwsIdentity(region="zz-nowhere-7"))


def test_an_admin_list_replaces_botocores_regions() -> None:
    clients = AwsClients(allowed_regions=("xx-new-1", "eu-west-1"))

    assert clients.region_allowed("xx-new-1")
    assert clients.region_allowed("eu-west-1")
    assert not clients.region_allowed("us-east-1")
    clients.client("ecr", AwsIdentity(region="xx-new-1"))
    assert clients.cached_clients == 1
    with pytest.raises(RegionNotAllowed, match="not in ECR_OPERATOR_ALLOWED_REGIONS"):
        clients.client("ecr", AwsIdentity(region="us-east-1")).get_authorization_token()


@settings(max_examples=200, deadline=None)
@given(st.from_regex(REGION_PATTERN, fullmatch=True).filter(lambda region: region not in known_ecr_regions()))
def test_no_pattern_valid_fake_region_is_ever_cached(region: str) -> None:
    clients = AwsClients()
    for service in ("ecr", "sts", "iam"):
        with pytest.raises(RegionNotAllowed):
            clients.client(service, AwsIdentity(region=region, role_arn=ROLE.format(1))).get_caller_identity()
    assert clients.cached_clients == 0


def test_cached_clients_are_bounded_least_recently_used_first() -> None:
    clients = AwsClients(max_clients=3)
    regions = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1"]
    first = clients.client("ecr", AwsIdentity(region=regions[0]))
    for region in regions[1:3]:
        clients.client("ecr", AwsIdentity(region=region))
    assert clients.client("ecr", AwsIdentity(region=regions[0])) is first  # now the most recently used

    for region in regions[3:]:
        clients.client("ecr", AwsIdentity(region=region))

    assert clients.cached_clients == 3
    assert clients.client("ecr", AwsIdentity(region=regions[0])) is first
    assert clients.client("ecr", AwsIdentity(region=regions[1])) is not None  # rebuilt, evicting another
    assert clients.cached_clients == 3


def test_sessions_per_role_are_bounded() -> None:
    clients = AwsClients(max_clients=4, max_sessions=2)

    for number in range(6):
        clients.client("ecr", AwsIdentity(region="us-east-1", role_arn=ROLE.format(number)))

    assert clients.cached_clients == 4
    assert len(clients._sessions) == 2


def test_a_client_is_shared_between_threads_for_one_identity() -> None:
    clients = AwsClients()

    async def many() -> set[int]:
        found = await asyncio.gather(
            *(asyncio.to_thread(clients.client, "ecr", AwsIdentity(region="eu-west-1")) for _ in range(8))
        )
        return {id(client) for client in found}

    assert len(asyncio.run(many())) == 1


def test_the_allowed_regions_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECR_OPERATOR_ALLOWED_REGIONS", "us-east-1, xx-new-1")
    assert load_settings().allowed_regions == ("us-east-1", "xx-new-1")

    monkeypatch.setenv("ECR_OPERATOR_ALLOWED_REGIONS", '["us-east-1", "not a region"]')
    with pytest.raises(InvalidSettingsError, match="ECR_OPERATOR_ALLOWED_REGIONS"):
        load_settings()


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20


def test_sessions_of_many_roles_share_one_model_loader() -> None:
    clients = AwsClients()
    clients.client("ecr", AwsIdentity(region="us-east-1"))
    before = _rss_mib()

    for number in range(40):
        clients.client("ecr", AwsIdentity(region="us-east-1", role_arn=ROLE.format(f"loader-{number}")))

    # Each session loading its own service models cost ~8.5 MiB (340 MiB for 40 roles); shared, ~0.3 MiB.
    assert _rss_mib() - before < 60


async def test_coroutines_get_clients_built_off_the_event_loop_and_cached_ones_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clients = AwsClients()
    built_in: list[int] = []
    build = AwsClients.client

    def recording_client(self: AwsClients, service: str, identity: AwsIdentity) -> object:
        built_in.append(threading.get_ident())
        return build(self, service, identity)  # type: ignore[call-overload]

    monkeypatch.setattr(AwsClients, "client", recording_client)
    identity = AwsIdentity(region="us-east-1")

    first = await clients.client_off_loop("ecr", identity)
    again = await clients.client_off_loop("ecr", identity)

    assert again is first
    assert len(built_in) == 1  # the second came from the cache, without a thread hop
    assert built_in[0] != threading.get_ident()  # the first was built in a worker thread


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1"])
@pytest.mark.parametrize("service", ["ecr", "iam", "sts"])
def test_clients_reach_the_endpoints_botocores_whole_table_gives(service: str, region: str) -> None:
    ours = AwsClients().client(service, AwsIdentity(region=region))  # type: ignore[call-overload]
    plain = botocore.session.get_session().create_client(service, region_name=region)

    assert (ours.meta.endpoint_url, ours.meta.region_name) == (
        plain.meta.endpoint_url,
        plain.meta.region_name,
    )


def test_the_whole_endpoint_table_is_never_loaded() -> None:
    clients = AwsClients()
    clients.client("ecr", AwsIdentity(region="us-east-1"))
    clients.client("ecr", AwsIdentity(region="us-east-1", role_arn=ROLE.format("table")))

    assert all(
        set(partition["services"]) <= ENDPOINT_PREFIXES for partition in endpoint_table()["partitions"]
    )
    session = clients._session_for(None, "us-east-1")
    loader = session.get_component("data_loader")
    assert not any("endpoints" in str(key) for key in getattr(loader, "_cache", {}))
