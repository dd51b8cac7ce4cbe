"""``ecr-operator run`` as a process: it serves health and metrics, keeps kopf's state under its own
domain, stops cleanly on SIGTERM, refuses to start on bad settings, and stays quiet when nothing changed."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import repository_support as support

from ecr_sandbox.world import World
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

METRIC_FAMILIES = {
    "ecr_operator_build_info": "gauge",
    "ecr_operator_reconciles_total": "counter",
    "ecr_operator_reconcile_duration_seconds": "histogram",
    "ecr_operator_aws_calls_total": "counter",
    "ecr_operator_aws_throttles_total": "counter",
    "ecr_operator_drift_corrections_total": "counter",
    "ecr_operator_objects": "gauge",
    "ecr_operator_pull_secret_token_expiry_timestamp_seconds": "gauge",
    "ecr_operator_pull_secret_token_refreshes_total": "counter",
    "ecr_operator_pull_secret_last_refresh_timestamp_seconds": "gauge",
    "ecr_operator_pull_secrets_managed": "gauge",
    "ecr_operator_pull_secret_service_accounts_managed": "gauge",
    "ecr_operator_mirror_bytes_total": "counter",
    "ecr_operator_mirror_blobs_total": "counter",
    "ecr_operator_mirror_manifests_total": "counter",
    "ecr_operator_mirror_duration_seconds": "histogram",
    "ecr_operator_mirror_errors_total": "counter",
    "ecr_operator_mirror_last_success_timestamp_seconds": "gauge",
    "process_resident_memory_bytes": "gauge",
}
# The ``operator`` fixture (tests/e2e/conftest.py): ``operator(**env_overrides)`` -> OperatorProcess.
StartOperator = Any

DIFFBASE_SUFFIX = "/last-handled-configuration"
KUBECTL_ANNOTATION_PREFIX = "kubectl.kubernetes.io/"


def http_get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 -- loopback URLs only
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


def repository_manifest(namespace: str, name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "ecr-operator.io/v1alpha1",
            "kind": "EcrRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"registry": {"region": "us-east-1"}},
        }
    )


def mirror_manifest(namespace: str, name: str, source: str) -> str:
    return json.dumps(
        {
            "apiVersion": "ecr-operator.io/v1alpha1",
            "kind": "ImageMirror",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "source": {"image": source},
                "tags": {"list": ["1.27"]},
                "destination": {"repositoryRef": {"name": "app"}},
            },
        }
    )


def get_object(world: World, kind: str, namespace: str, name: str) -> dict[str, Any]:
    result = world.kubectl("get", kind, name, "--namespace", namespace, "--output", "json")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def wait_until_handled(
    world: World, kind: str, namespace: str, name: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The object once the operator has handled it: an EcrRepository once its status observed its
    generation (kopf keeps no diff-base on it), other kinds once kopf stored its diff-base (any prefix)."""

    def handled() -> dict[str, Any] | None:
        document = get_object(world, kind, namespace, name)
        if kind == "ecrrepository":
            observed = document.get("status", {}).get("observedGeneration")
            return document if observed == document["metadata"]["generation"] else None
        annotations = document["metadata"].get("annotations", {})
        return document if any(key.endswith(DIFFBASE_SUFFIX) for key in annotations) else None

    return eventually(f"{kind} {namespace}/{name} to be handled", handled, timeout, interval=0.3)


def test_health_and_metrics_are_served(operator: StartOperator) -> None:
    running = operator()

    health_status, _, _ = http_get(running.health_url)
    metrics_status, content_type, exposition = http_get(running.metrics_url)

    assert health_status == 200
    assert metrics_status == 200
    assert content_type.startswith("text/plain")
    missing = [
        family
        for family, metric_type in METRIC_FAMILIES.items()
        if f"# TYPE {family} {metric_type}\n" not in exposition
    ]
    assert missing == []
    assert re.search(r'^ecr_operator_build_info\{.*version="[^"]+".*\} 1\.0$', exposition, re.MULTILINE)


def test_kopf_state_lives_under_the_ecr_operator_domain(
    world: World, operator: StartOperator, namespace: str
) -> None:
    operator()

    world.kubectl("apply", "--filename", "-", input=repository_manifest(namespace, "app"))
    # A test-world source: the operator never looks up a name outside this machine.
    source = f"{world.registries['anonymous'].host}/library/nginx"
    world.kubectl("apply", "--filename", "-", input=mirror_manifest(namespace, "nginx", source))

    for kind, name in (("ecrrepository", "app"), ("imagemirror", "nginx")):
        document = wait_until_handled(world, kind, namespace, name)
        operator_annotations = [
            key
            for key in document["metadata"]["annotations"]
            if not key.startswith(KUBECTL_ANNOTATION_PREFIX)
        ]
        assert "kopf.zalando.org" not in json.dumps(document)
        # kopf keeps a diff-base only where it runs change handlers: not on EcrRepository (one write less).
        assert (f"ecr-operator.io{DIFFBASE_SUFFIX}" in operator_annotations) is (kind == "imagemirror")
        assert all(key.startswith("ecr-operator.io/") for key in operator_annotations), operator_annotations
        assert all(item.startswith("ecr-operator.io/") for item in document["metadata"].get("finalizers", []))
        assert "Ready" in [condition["type"] for condition in document["status"]["conditions"]]


def test_sigterm_stops_a_working_operator_promptly_and_cleanly(
    world: World, operator: StartOperator, namespace: str
) -> None:
    running = operator()
    # Stop it while it is watching and has handled something, as a rolling update would.
    world.kubectl("apply", "--filename", "-", input=repository_manifest(namespace, "app"))
    wait_until_handled(world, "ecrrepository", namespace, "app")

    signalled = time.monotonic()
    exit_code = running.terminate()
    stopped_after = time.monotonic() - signalled

    assert exit_code == 0
    assert stopped_after < 5.0
    with pytest.raises(urllib.error.URLError):
        http_get(running.health_url)
    records = running.log_records()  # every line is JSON, or this raises
    assert any("SIGTERM" in record["message"] for record in records)
    assert not [record for record in records if record["level"] in ("ERROR", "CRITICAL")]


def test_invalid_settings_stop_startup_and_name_the_variables(operator: StartOperator) -> None:
    running = operator(wait=False, ECR_OPERATOR_METRICS_PORT="eighty", ECR_OPERATOR_DRIFT_INTERVAL="soon")

    exit_code = running.wait_exit()

    assert exit_code == 2
    log = running.log_text()
    assert "ECR_OPERATOR_METRICS_PORT" in log
    assert "ECR_OPERATOR_DRIFT_INTERVAL: 'soon' is not a duration" in log


def test_a_taken_metrics_port_stops_startup(operator: StartOperator) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        taken_port = occupant.getsockname()[1]

        running = operator(wait=False, ECR_OPERATOR_METRICS_PORT=str(taken_port))
        exit_code = running.wait_exit(timeout=60)

    assert exit_code == 1
    [failure] = [record for record in running.log_records() if record["level"] == "ERROR"]
    assert failure["message"].startswith(
        f"operator cannot start: cannot serve metrics on 127.0.0.1:{taken_port}"
    )


def test_a_restarted_operator_writes_nothing_to_objects_it_already_handled(
    world: World, operator: StartOperator, namespace: str
) -> None:
    # Its own identity, so the apiserver's audit log can tell its requests from the test's.
    identity = f"ecr-operator-{namespace}"
    kubeconfig = world.make_kubeconfig(identity, ["system:masters"])
    first = operator(kubeconfig=kubeconfig)
    world.kubectl("apply", "--filename", "-", input=repository_manifest(namespace, "app"))
    handled = wait_until_handled(world, "ecrrepository", namespace, "app")
    assert first.terminate() == 0
    # Only this namespace: a cluster-wide operator also finishes deleting objects earlier tests left behind.
    writes_before = len(
        [event for event in world.audit_events(identity) if event.is_write and event.namespace == namespace]
    )

    # A short drift interval brings its first pass (the resume: objects found converged at start-up) within
    # a few seconds; the object's check counts as a reconcile once it has compared AWS with the spec.
    second = operator(kubeconfig=kubeconfig, ECR_OPERATOR_DRIFT_INTERVAL="20s")
    eventually(
        "the restarted operator to check the object it found converged",
        lambda: (
            support.metric(second, "ecr_operator_reconciles_total", kind="EcrRepository", result="success")
            >= 1
        ),
    )

    writes_after = [
        event for event in world.audit_events(identity) if event.is_write and event.namespace == namespace
    ][writes_before:]
    assert writes_after == []
    resumed = get_object(world, "ecrrepository", namespace, "app")
    assert resumed["metadata"]["resourceVersion"] == handled["metadata"]["resourceVersion"]
