"""Pull-secret rotation against the whole world: a real apiserver, moto's GetAuthorizationToken, and the
ECR-data-plane registry that accepts exactly moto's token.

Every test ends by grepping the operator's log for the token, its base64 forms and the secret's data.

Tenant-visible secrets are minted from pull roles (moto's AssumeRole; IAM enforcement is off, so any role can
be assumed): the cluster-wide registries here name ``PULLER_ROLE`` and repositories get the role the pull role
template renders for their namespace, both allow-listed, as a secure configuration does. What happens without
a pull identity is in test_tenancy_attacks_pull.py.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from repository_support import short_token_lives

from ecr_sandbox.kube import KubeApiError
from ecr_sandbox.tools import tool_path
from ecr_sandbox.world import World
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# The ``operator`` fixture (tests/e2e/conftest.py): ``operator(**env_overrides)`` -> OperatorProcess.
StartOperator = Any

SECRET = "ecr-pull-secret"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "ecr-operator", "ecr-operator.io/pull-secret": "true"}
REFRESHED_AT = "ecr-operator.io/refreshed-at"
REFRESH_ERROR = "ecr-operator.io/refresh-error"
REGISTRIES = "ecr-operator.io/registries"
PULLER_ROLE = "arn:aws:iam::123456789012:role/ecr-puller"
PULL_ROLE_TEMPLATE = "arn:aws:iam::{accountId}:role/ecr-pull-{namespace}"
NAMESPACE_PULL_ROLES = "arn:aws:iam::123456789012:role/ecr-pull-*"
RBAC = Path(__file__).parent / "rbac" / "ecr-operator-pull-secrets.yaml"


# --- helpers ------------------------------------------------------------------------------------------


def read(world: World, path: str) -> dict[str, Any] | None:
    status, body = world.kube_client().request("GET", path)
    if status == 404:
        return None
    if status != 200:
        raise KubeApiError("GET", path, status, str(body))
    document: dict[str, Any] = body
    return document


def secret_of(world: World, namespace: str, name: str = SECRET) -> dict[str, Any] | None:
    return read(world, f"/api/v1/namespaces/{namespace}/secrets/{name}")


def service_account_of(world: World, namespace: str, name: str = "default") -> dict[str, Any] | None:
    return read(world, f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}")


def pull_secret_names(account: dict[str, Any] | None) -> list[str]:
    return [entry["name"] for entry in (account or {}).get("imagePullSecrets") or []]


def auths_of(secret: dict[str, Any]) -> dict[str, dict[str, str]]:
    document = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auths: dict[str, dict[str, str]] = document["auths"]
    return auths


def login_status(world: World, entry: dict[str, str]) -> int:
    """What the ECR-data-plane registry answers at /v2/ to these credentials, the way a kubelet sends them."""
    username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
    assert (username, password) == (entry["username"], entry["password"])
    client = world.registry_client("ecr", username=username, password=password)
    return client.request("GET", "/v2/").status


def pull_secrets_config(selector: dict[str, Any], **more: Any) -> str:
    registries = more.pop(
        "registries", [{"accountId": "123456789012", "region": "us-east-1", "roleArn": PULLER_ROLE}]
    )
    return json.dumps({"registries": registries, "namespaceSelector": selector, **more})


def pull_roles(*rules: Any) -> dict[str, str]:
    """Operator settings giving every pull secret a pull identity: the cluster-wide role and the per-namespace
    template roles allow-listed (``rules`` replace that allow-list), and the template itself."""
    allowed = list(rules) or [PULLER_ROLE, NAMESPACE_PULL_ROLES]
    return {
        "ECR_OPERATOR_ALLOWED_ROLE_ARNS": json.dumps(allowed),
        "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE": PULL_ROLE_TEMPLATE,
    }


def get_authorization_token_calls(world: World) -> int:
    return sum(1 for call in world.aws_calls() if call.operation == "GetAuthorizationToken")


def metric(running: Any, name: str, **labels: str) -> float:
    with urllib.request.urlopen(running.metrics_url, timeout=5) as response:  # noqa: S310 -- loopback
        exposition = response.read().decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in exposition.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def events_about(world: World, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    listing = read(world, f"/api/v1/namespaces/{namespace}/events") or {}
    return [
        event
        for event in listing.get("items", [])
        if event["involvedObject"].get("kind") == kind and event["involvedObject"].get("name") == name
    ]


def condition(world: World, namespace: str, name: str, condition_type: str) -> dict[str, Any] | None:
    document = read(world, f"/apis/ecr-operator.io/v1alpha1/namespaces/{namespace}/ecrrepositories/{name}")
    for entry in ((document or {}).get("status") or {}).get("conditions") or []:
        if entry["type"] == condition_type:
            found: dict[str, Any] = entry
            return found
    return None


def apply(world: World, document: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return world.kubectl("apply", "--filename", "-", input=json.dumps(document), check=check)


def repository(namespace: str, name: str, pull_secret: dict[str, Any], **registry: str) -> dict[str, Any]:
    return {
        "apiVersion": "ecr-operator.io/v1alpha1",
        "kind": "EcrRepository",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            # ECR names are account-wide and Retain keeps them: a name of the namespace's own never meets
            # a repository another test of the session left behind (that one would answer Conflict).
            "repositoryName": f"{namespace}/{name}",
            "registry": {"region": "us-east-1", "accountId": "123456789012", **registry},
            "pullSecret": pull_secret,
        },
    }


def assert_log_holds_no_credentials(running: Any, *secret_documents: dict[str, Any] | None) -> None:
    password = "123456789012-auth-token"
    forbidden = {password, base64.b64encode(f"AWS:{password}".encode()).decode()}
    for document in secret_documents:
        if document is not None:
            forbidden.add(document["data"][".dockerconfigjson"])
    log = running.log_text()
    assert log, "the operator wrote no log at all"
    assert [value for value in forbidden if value in log] == []


def refreshed_secret(world: World, namespace: str, first: dict[str, Any], refreshes: int) -> dict[str, Any]:
    """The namespace's pull secret once it has been refreshed ``refreshes`` times since ``first`` (it must
    never disappear meanwhile)."""
    seen = {first["metadata"]["annotations"][REFRESHED_AT]}

    def refreshed_enough() -> dict[str, Any] | None:
        current = secret_of(world, namespace)
        assert current is not None, "the pull secret disappeared"
        seen.add(current["metadata"]["annotations"][REFRESHED_AT])
        return current if len(seen) > refreshes else None

    return eventually(f"{refreshes} refreshes", refreshed_enough, timeout=20.0)


class SecretWatch:
    """``kubectl get --watch`` on one Secret: every event type the apiserver sent, in order."""

    def __init__(self, world: World, namespace: str, name: str, output: Path) -> None:
        self._output = output
        with output.open("wb") as sink:
            self._process = subprocess.Popen(
                [
                    str(tool_path("kubectl")),
                    f"--kubeconfig={world.kubeconfig}",
                    "get",
                    "secret",
                    name,
                    "--namespace",
                    namespace,
                    "--watch",
                    "--output-watch-events",
                    "--output=json",
                ],
                stdout=sink,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> list[tuple[str, str]]:
        """(event type, resourceVersion) pairs."""
        self._process.terminate()
        self._process.wait(10)
        events = [json.loads(line) for line in self._output.read_text().splitlines() if line.strip()]
        return [(event["type"], event["object"]["metadata"]["resourceVersion"]) for event in events]


def labelled_namespaces(world: World, default_prefix: str) -> Iterator[Callable[..., str]]:
    """A factory of namespaces with labels (``prefix`` chooses the name's start); all deleted when the
    generator is closed."""
    created: list[str] = []

    def create(labels: dict[str, str] | None = None, prefix: str = default_prefix) -> str:
        name = f"{prefix}{secrets.token_hex(4)}"
        world.kube_client().call(
            "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": labels or {}}}
        )
        created.append(name)
        return name

    yield create
    for name in created:
        world.delete_namespace(name)


@pytest.fixture
def namespaces(world: World) -> Iterator[Callable[..., str]]:
    yield from labelled_namespaces(world, "ps-")


@pytest.fixture
def run_label() -> dict[str, str]:
    """Selects this test's namespaces only: other tests' namespaces live in the same cluster."""
    return {"ecr-operator-test": secrets.token_hex(4)}


# --- acceptance ---------------------------------------------------------------------------------------


def test_cluster_wide_configuration_serves_selected_namespaces_and_service_accounts(
    world: World,
    operator: StartOperator,
    namespaces: Callable[..., str],
    run_label: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The operator runs as a non-admin identity bound to the RBAC in tests/e2e/rbac: it is enough.
    identity = f"ecr-operator-{run_label['ecr-operator-test']}"
    world.kubectl("apply", "--filename", str(RBAC))
    world.kubectl(
        "create",
        "clusterrolebinding",
        identity,
        "--clusterrole=ecr-operator-pull-secrets",
        f"--user={identity}",
    )
    first, second = namespaces(run_label), namespaces(run_label)
    excluded = namespaces(run_label, prefix="skip-")
    eventually("default ServiceAccounts", lambda: service_account_of(world, second))
    world.kubectl(
        "patch", "serviceaccount", "default", "--namespace", second,
        "--type=merge", "--patch", '{"imagePullSecrets": [{"name": "users-own"}]}',
    )  # fmt: skip
    world.kubectl("create", "serviceaccount", "builder", "--namespace", first)
    world.kubectl("create", "serviceaccount", "other", "--namespace", first)
    config = pull_secrets_config(
        {"matchLabels": run_label, "exclude": ["skip-*"]},
        serviceAccountSelector={"names": ["default", "build*"]},
    )

    running = operator(
        kubeconfig=world.make_kubeconfig(identity, []), ECR_OPERATOR_PULL_SECRETS=config, **pull_roles()
    )

    for namespace in (first, second):
        secret = eventually(f"the pull secret in {namespace}", lambda ns=namespace: secret_of(world, ns))
        assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert secret["metadata"]["labels"] == MANAGED_LABELS
        auths = auths_of(secret)
        assert list(auths) == [world.ecr_registry_host()]
        assert login_status(world, auths[world.ecr_registry_host()]) == 200
    eventually("default SA patched", lambda: SECRET in pull_secret_names(service_account_of(world, first)))
    eventually(
        "builder SA patched", lambda: SECRET in pull_secret_names(service_account_of(world, first, "builder"))
    )
    eventually(
        "the user's SA patched",
        lambda: pull_secret_names(service_account_of(world, second)) == ["users-own", SECRET],
    )
    assert pull_secret_names(service_account_of(world, first, "other")) == []

    created = time.monotonic()
    later = namespaces(run_label)
    late_secret = eventually(
        "the pull secret in a new namespace", lambda: secret_of(world, later), timeout=5.0, interval=0.1
    )
    secret_after = time.monotonic() - created
    eventually(
        "the new namespace's SA",
        lambda: SECRET in pull_secret_names(service_account_of(world, later)),
        timeout=5.0,
        interval=0.1,
    )
    service_account_after = time.monotonic() - created
    with capsys.disabled():
        print(
            f"\nnew namespace: secret after {secret_after:.2f}s,"
            f" ServiceAccount after {service_account_after:.2f}s"
        )
    assert secret_of(world, excluded) is None
    assert pull_secret_names(service_account_of(world, excluded)) == []

    # Demand goes away: the operator's secret and references go, the user's entries stay.
    world.kubectl("label", "namespace", first, "ecr-operator-test-")
    world.kubectl("label", "namespace", second, "ecr-operator-test-")
    eventually(
        "secrets removed", lambda: secret_of(world, first) is None and secret_of(world, second) is None
    )
    eventually(
        "references removed", lambda: pull_secret_names(service_account_of(world, second)) == ["users-own"]
    )
    eventually(
        "builder cleaned", lambda: pull_secret_names(service_account_of(world, first, "builder")) == []
    )
    assert pull_secret_names(service_account_of(world, first)) == []
    denied = [record for record in running.log_records() if f'User "{identity}" cannot' in record["message"]]
    assert denied == [], "the RBAC in tests/e2e/rbac is missing a permission"
    assert_log_holds_no_credentials(running, late_secret)


def test_rotation_patches_the_secret_in_place_and_never_deletes_it(
    world: World,
    operator: StartOperator,
    namespaces: Callable[..., str],
    run_label: dict[str, str],
    tmp_path: Path,
) -> None:
    namespace = namespaces(run_label)
    running = operator(
        ECR_OPERATOR_PULL_SECRETS=pull_secrets_config({"matchLabels": run_label}),
        **pull_roles(),
        **short_token_lives(lifetime=3, lead=1),
    )
    first = eventually("the pull secret", lambda: secret_of(world, namespace))
    account = eventually(
        "the SA patched",
        lambda: (sa := service_account_of(world, namespace)) and SECRET in pull_secret_names(sa) and sa,
    )
    watch = SecretWatch(world, namespace, SECRET, tmp_path / "watch.jsonl")
    calls_before = get_authorization_token_calls(world)
    last = refreshed_secret(world, namespace, first, refreshes=3)
    events = watch.stop()

    assert last["metadata"]["uid"] == first["metadata"]["uid"]
    assert last["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert [kind for kind, _ in events if kind != "MODIFIED"] == ["ADDED"]
    assert len({version for _, version in events}) >= 3
    assert get_authorization_token_calls(world) - calls_before >= 3
    # moto's token never changes, so the data is the same token re-written on each refresh, and it works.
    assert login_status(world, auths_of(last)[world.ecr_registry_host()]) == 200
    # Rotation touches the secret only: the ServiceAccount is not rewritten.
    current_account = service_account_of(world, namespace)
    assert current_account is not None
    assert current_account["metadata"]["resourceVersion"] == account["metadata"]["resourceVersion"]
    assert_log_holds_no_credentials(running, last)


def test_token_calls_scale_with_identities_not_namespaces(
    world: World,
    operator: StartOperator,
    namespaces: Callable[..., str],
    run_label: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    west_host = world.ecr_registry_host(region="us-west-2")
    many = [namespaces(run_label) for _ in range(50)]
    registries = [
        {"accountId": world.account_id, "region": "us-east-1", "roleArn": PULLER_ROLE},
        # A second identity: the same role in another region; its registry is the same stand-in.
        {"accountId": world.account_id, "region": "us-west-2", "roleArn": PULLER_ROLE},
    ]
    calls_before = get_authorization_token_calls(world)

    running = operator(
        ECR_OPERATOR_PULL_SECRETS=pull_secrets_config({"matchLabels": run_label}, registries=registries),
        ECR_OPERATOR_ALLOWED_ROLE_ARNS=json.dumps([PULLER_ROLE]),
        ECR_OPERATOR_REGISTRY_HOST_OVERRIDES=json.dumps(
            world.registry_host_overrides() | {west_host: world.registries["ecr"].host}
        ),
        # A 10 s cycle: long enough to count one cycle at a time, short enough to see a second one.
        **short_token_lives(lifetime=20, lead=10),
    )

    def all_served() -> dict[str, dict[str, Any]] | None:
        found = {namespace: secret_of(world, namespace) for namespace in many}
        served = {ns: s for ns, s in found.items() if s and s["metadata"]["annotations"].get(REGISTRIES)}
        both = f"{world.ecr_registry_host()},{west_host}"
        return (
            served
            if all(s["metadata"]["annotations"][REGISTRIES] == both for s in served.values())
            and len(served) == 50
            else None
        )

    started = time.monotonic()
    first_cycle = eventually("50 namespaces served", all_served, timeout=30.0, interval=0.5)
    first_cycle_seconds = time.monotonic() - started
    first_cycle_calls = get_authorization_token_calls(world) - calls_before
    first_refresh = {ns: s["metadata"]["annotations"][REFRESHED_AT] for ns, s in first_cycle.items()}

    def all_refreshed() -> dict[str, dict[str, Any]] | None:
        served = all_served()
        if served and all(
            s["metadata"]["annotations"][REFRESHED_AT] != first_refresh[ns] for ns, s in served.items()
        ):
            return served
        return None

    second_cycle = eventually("50 namespaces refreshed", all_refreshed, timeout=20.0, interval=0.5)
    second_cycle_calls = get_authorization_token_calls(world) - calls_before

    with capsys.disabled():
        print(
            f"\n50 namespaces x 2 identities: served in {first_cycle_seconds:.1f}s;"
            f" GetAuthorizationToken calls after cycle 1: {first_cycle_calls},"
            f" after cycle 2: {second_cycle_calls}"
        )
    assert first_cycle_calls == 2
    assert second_cycle_calls == 4
    sample = auths_of(second_cycle[many[0]])
    assert login_status(world, sample[world.ecr_registry_host()]) == 200
    assert login_status(world, sample[west_host]) == 200
    assert metric(running, "ecr_operator_pull_secrets_managed") >= 50
    assert_log_holds_no_credentials(running, second_cycle[many[0]])


def test_a_tenant_repository_cannot_put_a_secret_into_another_namespace(
    world: World, operator: StartOperator, namespaces: Callable[..., str], run_label: dict[str, str]
) -> None:
    tenant, victim = namespaces(), namespaces(run_label)
    # The role is allowed, but only for namespaces named other-*: neither for the tenant nor, through the
    # cluster-wide configuration, for the victim.
    cluster_wide_with_role = pull_secrets_config(
        {"matchLabels": run_label},
        registries=[{"accountId": world.account_id, "region": "us-west-2", "roleArn": PULLER_ROLE}],
    )
    running = operator(
        ECR_OPERATOR_PULL_SECRETS=cluster_wide_with_role,
        # The tenant's own pull role (rendered from the template) is allowed for the tenant only.
        **pull_roles(
            {"pattern": PULLER_ROLE, "namespaces": ["other-*"]},
            {"pattern": f"arn:aws:iam::123456789012:role/ecr-pull-{tenant}", "namespaces": [tenant]},
        ),
    )

    # What a tenant could try: name a secret or a field in another namespace. The apiserver refuses both.
    sneaky_name = apply(world, repository(tenant, "sneaky", {"secretName": f"{victim}/stolen"}), check=False)
    sneaky_field = apply(world, repository(tenant, "sneakier", {"namespace": victim}), check=False)
    assert sneaky_name.returncode != 0
    assert "secretName" in sneaky_name.stderr
    assert sneaky_field.returncode != 0
    assert 'unknown field "spec.pullSecret.namespace"' in sneaky_field.stderr

    apply(world, repository(tenant, "app", {"serviceAccounts": ["default"], "secretName": "app-pull"}))
    apply(world, repository(tenant, "borrowed", {"secretName": "borrowed-pull"}, roleArn=PULLER_ROLE))

    secret = eventually("the tenant's secret", lambda: secret_of(world, tenant, "app-pull"))
    assert login_status(world, auths_of(secret)[world.ecr_registry_host()]) == 200
    eventually(
        "the tenant's SA", lambda: pull_secret_names(service_account_of(world, tenant)) == ["app-pull"]
    )
    ready = eventually(
        "PullSecretReady",
        lambda: (
            (found := condition(world, tenant, "app", "PullSecretReady"))
            and found["status"] == "True"
            and found
        ),
    )
    assert ready["reason"] == "SecretUpToDate"
    refused = eventually("the refusal", lambda: condition(world, tenant, "borrowed", "PullSecretReady"))
    assert (refused["status"], refused["reason"]) == ("False", "RoleNotAllowed")
    assert secret_of(world, tenant, "borrowed-pull") is None
    victims_secrets = (
        read(world, f"/api/v1/namespaces/{victim}/secrets?labelSelector=ecr-operator.io/pull-secret") or {}
    )
    assert victims_secrets.get("items") == []
    assert pull_secret_names(service_account_of(world, victim)) == []
    told = eventually(
        "a Warning on the victim namespace", lambda: events_about(world, "default", "Namespace", victim)
    )
    assert [(event["type"], event["reason"]) for event in told] == [("Warning", "RoleNotAllowed")]
    assert_log_holds_no_credentials(running, secret)


def test_a_failed_refresh_keeps_the_previous_secret_and_reports_it(
    world: World, operator: StartOperator, namespaces: Callable[..., str], run_label: dict[str, str]
) -> None:
    namespace = namespaces(run_label)
    host = world.ecr_registry_host()
    config = pull_secrets_config({"matchLabels": run_label})
    fast = short_token_lives(lifetime=4, lead=2)
    running = operator(ECR_OPERATOR_PULL_SECRETS=config, **pull_roles(), **fast)
    apply(world, repository(namespace, "app", {}))
    before = eventually("the pull secret", lambda: secret_of(world, namespace))
    eventually(
        "PullSecretReady",
        lambda: (c := condition(world, namespace, "app", "PullSecretReady")) and c["status"] == "True",
    )

    # The identity loses its ECR permission.
    world.inject_aws_fault(
        "GetAuthorizationToken", code="AccessDeniedException", message="not authorized", count=None
    )
    try:
        failing = eventually(
            "the refresh error on the secret",
            lambda: (
                (s := secret_of(world, namespace)) and REFRESH_ERROR in s["metadata"]["annotations"] and s
            ),
            timeout=15.0,
        )
        assert failing["metadata"]["uid"] == before["metadata"]["uid"]
        assert failing["data"] == before["data"]
        assert (
            "GetAuthorizationToken failed (AccessDeniedException)"
            in failing["metadata"]["annotations"][REFRESH_ERROR]
        )
        warning = eventually(
            "a Warning on the secret", lambda: events_about(world, namespace, "Secret", SECRET)
        )
        assert [(e["type"], e["reason"]) for e in warning] == [("Warning", "TokenRefreshFailed")]
        failed = eventually(
            "PullSecretReady=False",
            lambda: (
                (c := condition(world, namespace, "app", "PullSecretReady")) and c["status"] == "False" and c
            ),
        )
        assert failed["reason"] == "TokenRefreshFailed"
        assert (
            metric(running, "ecr_operator_pull_secret_token_refreshes_total", registry=host, result="failure")
            >= 1
        )
    finally:
        world.clear_aws_faults()

    eventually(
        "recovery",
        lambda: (
            REFRESH_ERROR
            not in ((secret_of(world, namespace) or {}).get("metadata", {}).get("annotations", {}))
        ),
        timeout=15.0,
    )
    eventually(
        "a Normal event on recovery",
        lambda: (
            ("Normal", "TokenRefreshRecovered")
            in {(e["type"], e["reason"]) for e in events_about(world, namespace, "Secret", SECRET)}
        ),
    )
    eventually(
        "PullSecretReady=True again",
        lambda: (condition(world, namespace, "app", "PullSecretReady") or {}).get("status") == "True",
    )
    assert running.terminate() == 0

    # The registry refuses: a restarted operator whose registry host leads to a registry with other users.
    refusing = operator(
        ECR_OPERATOR_PULL_SECRETS=config,
        ECR_OPERATOR_REGISTRY_HOST_OVERRIDES=json.dumps({host: world.registries["basic"].host}),
        **pull_roles(),
        **fast,
    )
    refused = eventually(
        "the registry's refusal on the secret",
        lambda: (
            (s := secret_of(world, namespace))
            and "refused the new token" in s["metadata"]["annotations"].get(REFRESH_ERROR, "")
            and s
        ),
        timeout=15.0,
    )
    assert refused["metadata"]["uid"] == before["metadata"]["uid"]
    assert refused["data"] == before["data"]
    assert (
        metric(refusing, "ecr_operator_pull_secret_token_refreshes_total", registry=host, result="failure")
        >= 1
    )
    for process in (running, refusing):
        assert_log_holds_no_credentials(process, before)
        assert not re.search(r"Authorization:\s*Basic\s+[A-Za-z0-9+/=]{8,}", process.log_text())
