"""The test world itself: each real part does what the operator's tests will rely on."""

from __future__ import annotations

import base64
import json
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ecr_sandbox.hostile_registry import fetch_stats
from ecr_sandbox.images import parse_challenge, sha256_digest
from ecr_sandbox.tools import tool_path
from ecr_sandbox.world import World
from waiting import eventually

pytestmark = pytest.mark.e2e

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


def test_ecr_authorization_token_from_moto_pushes_to_the_ecr_registry(world: World) -> None:
    ecr = world.boto3_client("ecr")
    name = f"team/app-{secrets.token_hex(3)}"
    repository = ecr.create_repository(repositoryName=name)["repository"]
    auth = ecr.get_authorization_token()["authorizationData"][0]
    username, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)

    client = world.registry_client("ecr", username=username, password=password)
    digest = client.push_image(name, "v1")

    assert client.manifest_digest(name, "v1") == digest
    # The operator reaches the registry through the override for the host moto advertises.
    ecr_host = repository["repositoryUri"].split("/", 1)[0]
    assert auth["proxyEndpoint"] == f"https://{ecr_host}"
    overrides = json.loads(world.operator_env()["ECR_OPERATOR_REGISTRY_HOST_OVERRIDES"])
    assert overrides == {world.ecr_registry_host(): world.registries["ecr"].host}
    pushes = [
        r
        for r in world.registries["ecr"].requests()
        if (r.method, r.path) == ("PUT", f"/v2/{name}/manifests/v1")
    ]
    assert [r.status for r in pushes] == [201]


def test_ecr_registry_refuses_anonymous_and_wrong_password_pushes(world: World) -> None:
    anonymous = world.registry_client("ecr", anonymous=True).request("POST", "/v2/team/app/blobs/uploads/")
    wrong = world.registry_client("ecr", password="999999999999-auth-token").request(
        "POST", "/v2/team/app/blobs/uploads/"
    )

    assert anonymous.status == 401
    assert parse_challenge(anonymous.header("www-authenticate") or "")[0] == "basic"
    assert wrong.status == 401


def test_token_registry_challenges_anonymous_pulls_like_docker_hub(world: World) -> None:
    registry = world.registries["token"]
    digest = world.registry_client("token").push_image("private/app", "v1")
    anonymous = world.registry_client("token", anonymous=True)

    challenge = anonymous.request("GET", "/v2/private/app/manifests/v1", answer_challenge=False)
    with_anonymous_token = anonymous.request("GET", "/v2/private/app/manifests/v1")

    assert challenge.status == 401
    assert parse_challenge(challenge.header("www-authenticate") or "") == (
        "bearer",
        {
            "realm": registry.token_realm,
            "service": registry.token_service,
            "scope": "repository:private/app:pull",
        },
    )
    # The issuer hands anonymous clients a token without access to private repositories.
    assert with_anonymous_token.status == 401
    assert (
        parse_challenge(with_anonymous_token.header("www-authenticate") or "")[1]["error"]
        == "insufficient_scope"
    )
    assert world.registry_client("token").manifest_digest("private/app", "v1") == digest
    granted = [entry["granted"] for entry in registry.token_requests() if entry["user"] == registry.username]
    assert [{"type": "repository", "name": "private/app", "actions": ["pull", "push"]}] in granted


def test_token_registry_serves_public_repositories_anonymously(world: World) -> None:
    prefix = world.registries["token"].anonymous_pull_prefix
    assert prefix is not None
    digest = world.registry_client("token").push_index(f"{prefix}multi", "latest")

    anonymous = world.registry_client("token", anonymous=True)

    assert anonymous.manifest_digest(f"{prefix}multi", "latest") == digest
    with pytest.raises(RuntimeError, match="HTTP 401"):
        anonymous.push_image(f"{prefix}multi", "mine")


def test_token_issuer_rejects_wrong_credentials(world: World) -> None:
    client = world.registry_client("token", password="wrong")
    response = client.request("GET", "/v2/private/app/tags/list", scope="repository:private/app:pull")

    assert response.status == 401
    assert world.registries["token"].token_requests()[-1]["status"] == 401


@pytest.mark.parametrize(("name", "anonymous_upload_status"), [("anonymous", 202), ("basic", 401)])
def test_source_registries_authenticate_as_advertised(
    world: World, name: str, anonymous_upload_status: int
) -> None:
    anonymous_upload = world.registry_client(name, anonymous=True).request(
        "POST", "/v2/src/app/blobs/uploads/"
    )

    digest = world.registry_client(name).push_image("src/app", "v1")

    assert anonymous_upload.status == anonymous_upload_status
    assert world.registry_client(name).manifest_digest("src/app", "v1") == digest


def test_hostile_registry_answers_like_a_registry_and_counts_requests(world: World) -> None:
    client = world.registry_client("hostile")
    repository = f"retry-after/300/world-{secrets.token_hex(3)}"

    ping = client.request("GET", "/v2/")
    throttled = client.request("HEAD", f"/v2/{repository}/manifests/v1")
    well_behaved = client.manifest_digest(f"normal/world-{secrets.token_hex(3)}", "v1")

    assert ping.status == 200
    assert (throttled.status, throttled.header("retry-after")) == (429, "300")
    assert (well_behaved or "").startswith("sha256:")
    stats = fetch_stats(world.registries["hostile"].url, world.ca_bundle)
    assert stats["repositories"][repository] == {"requests": 1, "open": 0, "endpoints": {"manifests": 1}}
    logged = eventually(
        "the hostile registry to log the manifest GET",
        lambda: [
            r for r in world.registries["hostile"].requests() if r.path == f"/v2/{repository}/manifests/v1"
        ],
    )
    assert [(r.method, r.status) for r in logged] == [("HEAD", 429)]


def test_new_namespace_gets_default_service_account_and_deletion_completes(world: World) -> None:
    name = world.create_namespace()
    kube = world.kube_client()
    eventually(
        "the default ServiceAccount",
        lambda: kube.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        timeout=20.0,
        interval=0.1,
    )
    world.kubectl("create", "configmap", "data", "-n", name, "--from-literal=key=value")

    started = time.monotonic()
    world.delete_namespace(name, wait=True, timeout=30)

    # kube-controller-manager waits a fixed 5 s before emptying a deleted namespace.
    assert time.monotonic() - started < 15


def test_garbage_collector_deletes_dependents(world: World, namespace: str) -> None:
    owner = json.loads(world.kubectl("create", "configmap", "owner", "-n", namespace, "-o", "json").stdout)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
    }
    world.kubectl("apply", "-f", "-", input=json.dumps(dependent))

    world.kubectl("delete", "configmap", "owner", "-n", namespace)

    path = f"/api/v1/namespaces/{namespace}/configmaps/dependent"
    eventually(
        "the namespace to be gone",
        lambda: not world.kube_client().exists(path),
        timeout=20.0,
        interval=0.1,
    )


def test_rbac_denies_a_user_without_rights_until_bound(world: World, namespace: str) -> None:
    alice = world.make_kubeconfig("alice", ["developers"])

    denied = world.kubectl("get", "secrets", "-n", namespace, kubeconfig=alice, check=False)
    world.kubectl(
        "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", namespace
    )
    allowed = world.kubectl("get", "secrets", "-n", namespace, kubeconfig=alice, check=False)

    assert denied.returncode != 0
    assert 'User "alice" cannot list resource "secrets"' in denied.stderr
    assert allowed.returncode == 0, allowed.stderr


def test_audit_log_counts_writes_by_user(world: World, namespace: str) -> None:
    user = f"writer-{namespace}"
    kubeconfig = world.make_kubeconfig(user)
    world.kubectl("create", "rolebinding", "writer", "--clusterrole=edit", f"--user={user}", "-n", namespace)

    world.kubectl("create", "configmap", "a", "-n", namespace, kubeconfig=kubeconfig)
    world.kubectl("label", "configmap", "a", "x=y", "-n", namespace, kubeconfig=kubeconfig)
    world.kubectl("get", "configmap", "a", "-n", namespace, kubeconfig=kubeconfig)

    writes = [
        (e.verb, e.resource, e.namespace, e.name, e.code) for e in world.audit_events(user) if e.is_write
    ]
    assert writes == [
        ("create", "configmaps", namespace, "a", 201),
        ("patch", "configmaps", namespace, "a", 200),
    ]
    assert any(e.verb == "get" for e in world.audit_events(user))


def test_moto_calls_are_logged_with_service_and_operation(world: World) -> None:
    before = len(world.aws_calls())
    world.boto3_client("ecr").describe_repositories()
    world.boto3_client("sts").get_caller_identity()

    calls = [(c.service, c.operation, c.status, c.injected) for c in world.aws_calls()[before:]]
    assert calls == [("ecr", "DescribeRepositories", 200, False), ("sts", "GetCallerIdentity", 200, False)]


def test_injected_faults_reach_boto3_in_each_protocol(world: World) -> None:
    ecr = world.boto3_client("ecr", NO_RETRIES)
    iam = world.boto3_client("iam", NO_RETRIES)
    before = len(world.aws_calls())
    world.inject_aws_fault("DescribeRepositories", service="ecr", count=1)
    world.inject_aws_fault("ListRoles", service="iam", status=500, code="ServiceUnavailable", count=1)

    with pytest.raises(ClientError) as throttled:
        ecr.describe_repositories()
    with pytest.raises(ClientError) as unavailable:
        iam.list_roles()
    ecr.describe_repositories()  # the fault was for one request only

    assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
    assert unavailable.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert unavailable.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    calls = [(c.operation, c.status, c.injected) for c in world.aws_calls()[before:]]
    assert calls == [
        ("DescribeRepositories", 400, True),
        ("ListRoles", 500, True),
        ("DescribeRepositories", 200, False),
    ]


def test_boto3_retries_through_a_throttling_burst(world: World) -> None:
    world.inject_aws_fault("GetAuthorizationToken", count=2)
    before = len(world.aws_calls())

    world.boto3_client(
        "ecr", Config(retries={"mode": "standard", "total_max_attempts": 3})
    ).get_authorization_token()

    statuses = [c.status for c in world.aws_calls()[before:] if c.operation == "GetAuthorizationToken"]
    assert statuses == [400, 400, 200]


def test_a_persistent_fault_lasts_until_cleared(world: World) -> None:
    sts = world.boto3_client("sts", NO_RETRIES)
    world.inject_aws_fault("GetCallerIdentity", status=503, code="ServiceUnavailable", count=None)

    for _ in range(3):
        with pytest.raises(ClientError, match="ServiceUnavailable"):
            sts.get_caller_identity()
    world.clear_aws_faults()

    assert sts.get_caller_identity()["Account"] == world.account_id


def test_skopeo_reads_the_token_registry_with_the_world_auth_file(world: World) -> None:
    digest = world.registry_client("token").push_image("private/skopeo", "v1")
    reference = f"docker://{world.registries['token'].host}/private/skopeo:v1"

    inspected = subprocess.run(
        [
            str(tool_path("skopeo")),
            "inspect",
            "--raw",
            f"--authfile={world.registry_auth_file}",
            f"--cert-dir={world.registry_cert_dir}",
            reference,
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )

    assert inspected.returncode == 0, inspected.stderr.decode()
    assert sha256_digest(inspected.stdout) == digest


def test_sandbox_cli_starts_a_detached_world_and_stops_it(tmp_path: Path) -> None:
    state_dir = tmp_path / "sandbox"
    command = [sys.executable, "-m", "ecr_sandbox"]

    up = subprocess.run(
        [*command, "up", "--state-dir", str(state_dir)], capture_output=True, text=True, timeout=120
    )
    try:
        assert up.returncode == 0, up.stderr
        attached = World.attach(state_dir)
        assert set(attached.running()) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "moto",
            "token-issuer",
            *(f"registry-{name}" for name in attached.registries),
        }
        exports = [shlex.split(line) for line in (state_dir / "env").read_text().splitlines()]
        env = dict(assignment.split("=", 1) for _, assignment in exports)
        assert env["KUBECONFIG"] == str(attached.kubeconfig)
        assert json.loads(env["ECR_OPERATOR_REGISTRY_HOST_OVERRIDES"]) == attached.registry_host_overrides()
        assert attached.kubectl("get", "namespace", "default").returncode == 0
    finally:
        down = subprocess.run(
            [*command, "down", "--state-dir", str(state_dir)], capture_output=True, text=True
        )
    assert down.returncode == 0, down.stderr
    assert World.attach(state_dir).running() == []
