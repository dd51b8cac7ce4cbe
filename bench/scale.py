"""The scale benchmarks of issue 10: many EcrRepository objects, many namespaces, one operator process.

Every case starts its own ``ecr-operator run`` (so its peak RSS is its own), serving one fresh namespace
(or, for pull secrets, the namespaces it labels), as a user of its own that the apiserver's audit log
tells apart. Cost is counted where it lands: apiserver writes in the audit log, AWS calls in moto's call
log, memory and CPU in the process's /proc entry.

ACK's ECR controller and k8s-ecr-login-renew are the issue's peers; ``go install`` is tried for both
(bench.peers) and when one cannot be had, its comparison is left out with the reason in the notes.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from bench.mirror import AccessLog, content_gets
from bench.peers import ACK_ECR_CONTROLLER, ECR_LOGIN_RENEW, install_go_tool
from bench.report import BenchLine, Target, median, ours_at_most, ours_equal
from ecr_sandbox.aws import AwsCall
from ecr_sandbox.kube import AuditEvent, KubeClient
from ecr_sandbox.registries import RegistryRequest
from ecr_sandbox.world import World

T = TypeVar("T")
MB = 1_000_000
DEFAULT_SIZES = (1000, 3000, 10000)
API_PATH = "/apis/ecr-operator.io/v1alpha1"
OPERATOR_USER = "ecr-operator-bench"
CREATORS = 8
PLURALS = {"EcrRepository": "ecrrepositories", "ImageMirror": "imagemirrors"}
READ_PREFIXES = ("Describe", "List", "Get", "BatchGet", "BatchCheck")
LIFECYCLE_RULES = [
    {"selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7}},
    {
        "selection": {
            "tagStatus": "tagged",
            "tagPrefixes": ["v"],
            "countType": "imageCountMoreThan",
            "countNumber": 20,
        }
    },
]
GRANTS = [{"principals": ["210987654321"], "actions": "pull"}]
PULLER_ROLE = "arn:aws:iam::123456789012:role/ecr-puller"
PULL_SECRET = "ecr-pull-secret"
REFRESHED_AT = "ecr-operator.io/refreshed-at"
REGISTRIES = "ecr-operator.io/registries"

# Issue 10's targets. Time to Ready is set for 10,000 objects (300 s); smaller sizes get the same rate.
READY_SECONDS_PER_OBJECT = 300 / 10_000
PEAK_RSS_MB = 250
BASELINE_RSS_MB = 150
KB_PER_OBJECT = 10
WRITES_PER_CREATED = 3
WRITES_PER_DELETED = 1
AWS_CALLS_PER_CREATED = 3
DESCRIBES_PER_OBJECT_PER_PASS = 100 / 10_000
RSS_AFTER_DELETION_RATIO = 1.10
PULL_SECRETS_READY_SECONDS = 120
# What the issue sets no target for is still a line: recorded, always met.
NO_TARGET = ours_at_most(math.inf)


# --- the process and its logs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """One reading of a process's /proc: peak and current resident set, CPU seconds so far."""

    peak_rss_bytes: int
    rss_bytes: int
    cpu_seconds: float


def usage_of(pid: int) -> Usage:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    # /proc/PID/stat: the command may hold spaces, so fields are counted after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return Usage(
        peak_rss_bytes=int(status["VmHWM"].split()[0]) * 1024,
        rss_bytes=int(status["VmRSS"].split()[0]) * 1024,
        cpu_seconds=(int(fields[11]) + int(fields[12])) / ticks,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log: Path
    health_port: int
    metrics_port: int

    def successful_reconciles(self, kind: str) -> float:
        """``ecr_operator_reconciles_total{kind, result="success"}`` from the metrics endpoint (0 before
        the first)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ecr_operator_reconciles_total"
            and sample.labels.get("kind") == kind
            and sample.labels.get("result") == "success"
        )

    def usage(self) -> Usage:
        return usage_of(self.process.pid)

    def check_alive(self) -> None:
        """Raise if the process has ended: a case must not wait out its timeout for a dead operator."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.process.returncode}: see {self.log}")

    def wait_healthy(self, timeout: float = 120.0) -> None:
        def healthy() -> bool:
            self.check_alive()
            try:
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        eventually("the operator to be healthy", healthy, timeout)


@contextmanager
def running_operator(world: World, work: Path, name: str, **overrides: str) -> Iterator[OperatorProcess]:
    """``ecr-operator run`` as ``OPERATOR_USER`` (all rights: RBAC is the e2e tests' concern), JSON logs
    in ``work/<name>.log``; SIGTERM at the end."""
    kubeconfig = world.make_kubeconfig(OPERATOR_USER, ["system:masters"])
    health_port, metrics_port = free_port(), free_port()
    env = {
        **world.operator_env(kubeconfig),
        "ECR_OPERATOR_METRICS_PORT": str(metrics_port),
        "ECR_OPERATOR_HEALTH_PORT": str(health_port),
        "ECR_OPERATOR_LOG_FORMAT": "json",
        **overrides,
    }
    if "PYTHONPATH" in os.environ:  # the source the benchmark runs from, not the venv's copy
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    log = work / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("ecr-operator")), "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=work,
            start_new_session=True,
        )
    running = OperatorProcess(process, log, health_port, metrics_port)
    try:
        running.wait_healthy()
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LogCursor:
    """JSON lines appended to a log since the cursor was made (or last read); a half-written line waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data.rpartition(b"\n")[0]
        self.offset += len(complete) + (1 if complete else 0)
        found = []
        for line in complete.splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found


@dataclass
class Counts:
    """What the apiserver (writes of OPERATOR_USER) and moto (every call) served since ``mark``."""

    world: World
    audit: LogCursor = field(init=False)
    aws: LogCursor = field(init=False)
    writes: list[AuditEvent] = field(default_factory=list)
    calls: list[AwsCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.audit = LogCursor(self.world.audit_log)
        self.aws = LogCursor(self.world.state_dir / "aws" / "calls.jsonl")

    def mark(self) -> None:
        self.update()
        self.writes, self.calls = [], []

    def update(self) -> None:
        for record in self.audit.read():
            event = AuditEvent.from_json(record)
            if event.username == OPERATOR_USER and event.is_write:
                self.writes.append(event)
        self.calls += [AwsCall.from_json(record) for record in self.aws.read()]

    def writes_in(self, namespace: str | None = None) -> list[AuditEvent]:
        self.update()
        return [event for event in self.writes if namespace is None or event.namespace == namespace]

    def wait_for_quiet_aws(self, quiet: float = 2.0, timeout: float = 300.0) -> None:
        """Until moto has served nothing for ``quiet`` seconds."""

        def settled() -> bool:
            self.update()
            return not self.calls or time.time() - self.calls[-1].time >= quiet

        eventually("AWS calls to stop", settled, timeout, interval=0.5)


def eventually(description: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(interval)


def by_operation(calls: Sequence[AwsCall]) -> dict[str, int]:
    return dict(Counter(call.operation for call in calls).most_common())


def by_write(events: Sequence[AuditEvent]) -> dict[str, int]:
    return dict(
        Counter(
            f"{event.verb} {event.resource}{'/' + event.subresource if event.subresource else ''}"
            for event in events
        ).most_common()
    )


# --- Kubernetes objects ------------------------------------------------------------------------------


def repository(namespace: str, index: int) -> dict[str, Any]:
    """The benchmark's EcrRepository: tags, a 2-rule lifecycle policy, a repository policy."""
    return {
        "apiVersion": "ecr-operator.io/v1alpha1",
        "kind": "EcrRepository",
        "metadata": {"name": f"app-{index}", "namespace": namespace},
        "spec": {
            "repositoryName": f"{namespace}/app-{index}",
            "registry": {"region": "us-east-1"},
            "tags": {"team": "a", "index": str(index)},
            "lifecyclePolicy": {"rules": LIFECYCLE_RULES},
            "access": {"grants": GRANTS},
        },
    }


def create_all(world: World, documents: Sequence[Mapping[str, Any]]) -> None:
    """Every object at once: POSTed by CREATORS threads side by side (create, not apply: no GET first).
    kubectl created only ~10 objects/s on 2 busy cores, so 10,000 took longer than converging them."""
    client = kube(world)

    def create(document: Mapping[str, Any]) -> None:
        plural = PLURALS[str(document["kind"])]
        namespace = document["metadata"]["namespace"]
        client.call("POST", f"{API_PATH}/namespaces/{namespace}/{plural}", dict(document))

    with ThreadPoolExecutor(CREATORS) as pool:
        for done in [pool.submit(create, document) for document in documents]:
            done.result()


def kube(world: World) -> KubeClient:
    """An admin client with a timeout for LISTs of 10,000 objects from a busy apiserver."""
    pki = world.state_dir / "pki"
    return KubeClient(
        world.apiserver_url, world.ca_bundle, pki / "admin.crt", pki / "admin.key", timeout=120.0
    )


def repositories_in(world: World, namespace: str) -> list[dict[str, Any]]:
    listed = kube(world).call("GET", f"{API_PATH}/namespaces/{namespace}/ecrrepositories")
    items: list[dict[str, Any]] = listed["items"]
    return items


def is_ready(document: Mapping[str, Any]) -> bool:
    conditions = (document.get("status") or {}).get("conditions") or []
    return any(entry.get("type") == "Ready" and entry.get("status") == "True" for entry in conditions)


def wait_all_ready(
    world: World, running: OperatorProcess, namespace: str, count: int, timeout: float
) -> None:
    # A LIST of 10,000 objects costs the apiserver (and this process) seconds of CPU that the operator
    # would otherwise get: it is sent only once the operator counts as many successful reconciles.
    def all_ready() -> bool:
        running.check_alive()
        if running.successful_reconciles("EcrRepository") < count:
            return False
        return sum(is_ready(document) for document in repositories_in(world, namespace)) == count

    eventually(f"{count} repositories Ready in {namespace}", all_ready, timeout, interval=0.5)


def delete_all(world: World, running: OperatorProcess, namespace: str, timeout: float) -> None:
    world.kubectl("delete", "ecrrepositories", "--all", "--namespace", namespace, "--wait=false", timeout=600)

    def gone() -> bool:
        running.check_alive()
        return not repositories_in(world, namespace)

    eventually(f"every repository of {namespace} gone", gone, timeout, interval=1.0)


# --- the stage ------------------------------------------------------------------------------------------


@dataclass
class Stage:
    world: World
    work: Path
    sizes: tuple[int, ...]
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self, case: str, **values: float) -> None:
        for key, value in values.items():
            self.samples.setdefault(case, {}).setdefault(key, []).append(round(value, 4))

    def value(self, case: str, key: str) -> float | None:
        found = self.samples.get(case, {}).get(key)
        return median(found) if found else None

    def summary(self) -> dict[str, object]:
        return {"samples": self.samples, "details": self.details, "notes": self.notes}

    def namespace(self, case: str) -> str:
        name = f"scale-{self.run_id}-{case}"
        self.world.kube_client().call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        return name


def converge(stage: Stage, size: int) -> None:
    """N objects created at once: time to all Ready, memory, CPU, AWS calls and writes; then delete all.
    What converging cost is recorded before the deletion starts (a deletion that fails keeps it)."""
    case = f"converge_{size}"
    world, namespace = stage.world, stage.namespace(f"n{size}")
    counts = Counts(world)
    # Converging and deleting 10,000 takes longer than the default drift interval (10 min): drift passes
    # (50 AWS requests/s, a pass over 10,000 takes 10 minutes) would land in the counts. The steady case
    # measures them.
    no_drift = {"ECR_OPERATOR_DRIFT_INTERVAL": "6h"}
    with running_operator(world, stage.work, case, ECR_OPERATOR_NAMESPACES=namespace, **no_drift) as running:
        counts.wait_for_quiet_aws(quiet=1.0)
        baseline = running.usage()
        counts.mark()
        began = time.monotonic()
        create_all(world, [repository(namespace, index) for index in range(size)])
        applied = time.monotonic()
        wait_all_ready(world, running, namespace, size, timeout=max(600.0, size * 0.2))
        ready = time.monotonic()
        at_ready = running.usage()
        counts.wait_for_quiet_aws()
        created_writes, created_calls = counts.writes_in(namespace), list(counts.calls)
        stage.record(
            case,
            apply_seconds=applied - began,
            ready_seconds=ready - applied,
            # The operator converges while the objects are still being created.
            create_to_ready_seconds=ready - began,
            baseline_rss_mb=baseline.rss_bytes / MB,
            peak_rss_mb=at_ready.peak_rss_bytes / MB,
            cpu_seconds_to_ready=at_ready.cpu_seconds - baseline.cpu_seconds,
            aws_calls=len(created_calls),
            writes_to_converge=len(created_writes),
        )
        details = {
            "aws_calls": by_operation(created_calls),
            "writes_to_converge": by_write(created_writes),
        }
        stage.details[case] = details

        counts.mark()
        deleting = time.monotonic()
        delete_all(world, running, namespace, timeout=max(600.0, size * 0.2))
        deleted = time.monotonic()
        counts.wait_for_quiet_aws()
        deleted_writes = counts.writes_in(namespace)
        end = running.usage()
    world.delete_namespace(namespace)
    stage.record(
        case,
        delete_seconds=deleted - deleting,
        peak_rss_with_deletion_mb=end.peak_rss_bytes / MB,
        writes_to_delete=len(deleted_writes),
        aws_calls_to_delete=len(counts.calls),
    )
    details |= {
        "writes_to_delete": by_write(deleted_writes),
        "aws_calls_to_delete": by_operation(counts.calls),
    }


def steady_and_overlapping_deletion(stage: Stage, size: int, interval: float) -> None:
    """Converged objects over two drift intervals: writes (none wanted) and AWS calls per interval. Then
    every object deleted while a drift pass runs: the process's RSS before and after."""
    case = f"steady_{size}"
    world, namespace = stage.world, stage.namespace(f"steady{size}")
    counts = Counts(world)
    drift = {
        "ECR_OPERATOR_DRIFT_INTERVAL": f"{interval:g}s",
        "ECR_OPERATOR_DRIFT_JITTER": f"{interval / 10:g}s",
    }
    with running_operator(world, stage.work, case, ECR_OPERATOR_NAMESPACES=namespace, **drift) as running:
        create_all(world, [repository(namespace, index) for index in range(size)])
        wait_all_ready(world, running, namespace, size, timeout=max(600.0, size * 0.2))
        counts.wait_for_quiet_aws(quiet=1.0)
        # Past the first drift pass of every object, which may still repair what creation left. Drift
        # passes may never pause (per-object timers, jittered), so no quiet moment is waited for.
        time.sleep(interval * 1.2)
        counts.mark()
        window = 2 * interval
        steady_cpu = running.usage().cpu_seconds
        time.sleep(window)
        steady_writes, steady_calls = counts.writes_in(), list(counts.calls)
        steady_cpu_end = running.usage().cpu_seconds

        # The deletion lands inside a drift pass: as soon as one has made a few calls.
        counts.mark()

        def drift_begun() -> bool:
            counts.update()
            return len(counts.calls) >= 10

        eventually("a drift pass to begin", drift_begun, interval * 2, 0.1)
        before = running.usage()
        delete_all(world, running, namespace, timeout=max(600.0, size * 0.2))
        counts.wait_for_quiet_aws(quiet=5.0)
        after = running.usage()
    world.delete_namespace(namespace)
    passes = window / interval
    stage.record(
        case,
        steady_writes=len(steady_writes),
        steady_mutating_calls=sum(not call.operation.startswith(READ_PREFIXES) for call in steady_calls),
        calls_per_drift_pass=len(steady_calls) / passes,
        describes_per_drift_pass=sum(c.operation == "DescribeRepositories" for c in steady_calls) / passes,
        cpu_seconds_per_drift_pass=(steady_cpu_end - steady_cpu) / passes,
        rss_before_deletion_mb=before.rss_bytes / MB,
        rss_after_deletion_mb=after.rss_bytes / MB,
        rss_after_over_before=after.rss_bytes / before.rss_bytes,
    )
    stage.details[case] = {
        "drift_interval_seconds": interval,
        "steady_window_seconds": window,
        "steady_calls": by_operation(steady_calls),
        "steady_writes": by_write(steady_writes),
    }


def pull_secret_fan_out(stage: Stage, namespaces: int) -> None:
    """A cluster-wide pull-secret policy over ``namespaces`` labelled namespaces and 2 identities: time
    until every one holds a secret, token calls, patches per namespace in one rotation."""
    case = f"pull_secrets_{namespaces}"
    world = stage.world
    label = {"ecr-operator.io/bench": stage.run_id}
    names = [f"ps-{stage.run_id}-{index}" for index in range(namespaces)]
    client = kube(world)
    for name in names:
        client.call("POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": label}})
    west = world.ecr_registry_host(region="us-west-2")
    registries = [
        {"accountId": world.account_id, "region": "us-east-1", "roleArn": PULLER_ROLE},
        {"accountId": world.account_id, "region": "us-west-2", "roleArn": PULLER_ROLE},
    ]
    lifetime = 300.0
    settings = {
        "ECR_OPERATOR_PULL_SECRETS": json.dumps(
            {"registries": registries, "namespaceSelector": {"matchLabels": label}}
        ),
        "ECR_OPERATOR_ALLOWED_ROLE_ARNS": json.dumps([PULLER_ROLE]),
        "ECR_OPERATOR_REGISTRY_HOST_OVERRIDES": json.dumps(
            world.registry_host_overrides() | {west: world.registries["ecr"].host}
        ),
        # moto's tokens expire in 2015: the fallback lifetime decides the cycle (a rotation at half of it).
        "ECR_OPERATOR_TOKEN_FALLBACK_LIFETIME": f"{lifetime:g}s",
        "ECR_OPERATOR_TOKEN_REFRESH_LEAD": f"{lifetime / 2:g}s",
        "ECR_OPERATOR_TOKEN_REFRESH_JITTER": "0s",
    }
    selector = "ecr-operator.io/pull-secret=true"
    wanted = set(names)

    def secrets_by_namespace() -> dict[str, dict[str, Any]]:
        listed = client.call("GET", f"/api/v1/secrets?labelSelector={selector}")
        return {
            item["metadata"]["namespace"]: item
            for item in listed["items"]
            if item["metadata"]["name"] == PULL_SECRET and item["metadata"]["namespace"] in wanted
        }

    def all_served() -> dict[str, dict[str, Any]] | None:
        running.check_alive()
        found = secrets_by_namespace()
        served = {
            namespace: secret
            for namespace, secret in found.items()
            if len((secret["metadata"].get("annotations") or {}).get(REGISTRIES, "").split(",")) == 2
        }
        return served if len(served) == namespaces else None

    counts = Counts(world)
    with running_operator(world, stage.work, case, **settings) as running:
        counts.mark()
        began = time.monotonic()
        first = eventually(
            f"{namespaces} namespaces holding a pull secret for both registries",
            all_served,
            timeout=1200,
            interval=2.0,
        )
        served = time.monotonic() - began
        counts.wait_for_quiet_aws(quiet=1.0)
        first_tokens = sum(call.operation == "GetAuthorizationToken" for call in counts.calls)
        at_served = running.usage()
        first_refresh = {ns: s["metadata"]["annotations"].get(REFRESHED_AT) for ns, s in first.items()}
        counts.mark()
        eventually(
            "every pull secret rotated",
            lambda: all(
                s["metadata"]["annotations"].get(REFRESHED_AT) != first_refresh.get(ns)
                for ns, s in secrets_by_namespace().items()
            ),
            timeout=lifetime * 2,
            interval=5.0,
        )
        counts.wait_for_quiet_aws(quiet=2.0)
        rotation = counts.writes_in()
        rotation_tokens = sum(call.operation == "GetAuthorizationToken" for call in counts.calls)
        end = running.usage()
    for name in names:
        world.delete_namespace(name)
    stage.record(
        case,
        seconds_to_all_served=served,
        token_calls_first_cycle=first_tokens,
        token_calls_per_rotation=rotation_tokens,
        secret_writes_per_namespace_per_rotation=sum(e.resource == "secrets" for e in rotation) / namespaces,
        service_account_writes_per_rotation=sum(e.resource == "serviceaccounts" for e in rotation),
        peak_rss_mb=max(at_served.peak_rss_bytes, end.peak_rss_bytes) / MB,
    )
    stage.details[case] = {"rotation_writes": by_write(rotation), "token_lifetime_seconds": lifetime}


def mirrors_at_steady_state(stage: Stage, count: int) -> None:
    """``count`` ImageMirror objects (each into an EcrRepository of its own) synced, then no-op passes at
    the shortest interval (1 min) for two intervals: RSS, and what the source registry served."""
    case = f"mirrors_{count}"
    world, namespace = stage.world, stage.namespace(f"mirrors{count}")
    source = world.registries["anonymous"]
    image = f"{namespace}/app"
    world.registry_client("anonymous").push_image(image, "v1")
    documents: list[dict[str, Any]] = []
    for index in range(count):
        name = f"mirror-{index}"
        documents.append(
            {
                "apiVersion": "ecr-operator.io/v1alpha1",
                "kind": "EcrRepository",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"repositoryName": f"{namespace}/{name}", "registry": {"region": world.region}},
            }
        )
        documents.append(
            {
                "apiVersion": "ecr-operator.io/v1alpha1",
                "kind": "ImageMirror",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "source": {"image": f"{source.host}/{image}"},
                    "tags": {"list": ["v1"]},
                    "interval": "1m",
                    "destination": {"repositoryRef": {"name": name}},
                },
            }
        )
    interval = 60.0

    def synced_count() -> int:
        running.check_alive()
        listed = kube(world).call("GET", f"{API_PATH}/namespaces/{namespace}/imagemirrors")
        return sum(
            any(
                entry.get("type") == "Synced" and entry.get("status") == "True"
                for entry in (item.get("status") or {}).get("conditions") or []
            )
            for item in listed["items"]
        )

    overrides = {
        "ECR_OPERATOR_NAMESPACES": namespace,
        # The world's registries listen on loopback: allowed as an admin allows an in-cluster registry.
        "ECR_OPERATOR_MIRROR_ALLOWED_SOURCES": "127.0.0.1/32",
    }
    with running_operator(world, stage.work, case, **overrides) as running:
        create_all(world, documents)
        eventually(f"{count} mirrors synced", lambda: synced_count() == count, timeout=1200, interval=2.0)
        time.sleep(interval * 1.2)  # past every mirror's first scheduled no-op pass
        log = AccessLog(source)
        time.sleep(2 * interval)
        requests = log.requests()
        usage = running.usage()
        record_mirrors(stage, case, count, requests, usage, interval)
        world.kubectl(
            "delete", "imagemirrors", "--all", "--namespace", namespace, "--wait=false", timeout=600
        )
        delete_all(world, running, namespace, timeout=600)
    world.delete_namespace(namespace)


def record_mirrors(
    stage: Stage, case: str, count: int, requests: Sequence[RegistryRequest], usage: Usage, interval: float
) -> None:
    per_second = Counter(int(request.time.timestamp()) for request in requests)
    stage.record(
        case,
        peak_rss_mb=usage.peak_rss_bytes / MB,
        source_requests=len(requests),
        source_non_head_requests=sum(request.method != "HEAD" for request in requests),
        source_content_gets=content_gets([(request.method, request.path) for request in requests]),
        source_heads_per_mirror_per_pass=sum(r.method == "HEAD" for r in requests) / count / 2,
        busiest_second_requests=max(per_second.values(), default=0),
    )
    stage.details[case] = {
        "source_requests": dict(Counter(f"{r.method} {r.status}" for r in requests).most_common()),
        "interval_seconds": interval,
    }


# --- peers, lines, the group ---------------------------------------------------------------------------


def try_peers(stage: Stage) -> None:
    """Install ACK's controller and k8s-ecr-login-renew; what failed goes into the notes."""
    for tool, comparison in (
        (ACK_ECR_CONTROLLER, "every ACK comparison"),
        (ECR_LOGIN_RENEW, "the pull-secret peer"),
    ):
        try:
            path = install_go_tool(tool)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            stage.notes.append(f"{tool.name} {tool.version} unavailable, {comparison} left out: {error}")
            continue
        stage.notes.append(
            f"{tool.name} {tool.version} installed at {path}, but this benchmark has no driver for it yet "
            f"(none could be written and tested without a build): {comparison} left out"
        )


def lines(stage: Stage) -> list[BenchLine]:
    found: list[BenchLine] = []

    def line(case: str, key: str, name: str, unit: str, target: Target, scale: float = 1.0) -> None:
        value = stage.value(case, key)
        if value is not None:
            found.append(BenchLine.compare(f"scale.{name}", unit, value * scale, None, target))

    for size in stage.sizes:
        case = f"converge_{size}"
        per = 1 / size
        line(
            case, "ready_seconds", f"ready_seconds_{size}", "s", ours_at_most(READY_SECONDS_PER_OBJECT * size)
        )
        line(case, "create_to_ready_seconds", f"create_to_ready_seconds_{size}", "s", NO_TARGET)
        line(case, "peak_rss_mb", f"peak_rss_{size}", "MB", ours_at_most(PEAK_RSS_MB))
        line(case, "baseline_rss_mb", f"baseline_rss_{size}", "MB", ours_at_most(BASELINE_RSS_MB))
        line(case, "cpu_seconds_to_ready", f"cpu_seconds_to_ready_{size}", "s", NO_TARGET)
        line(
            case,
            "aws_calls",
            f"aws_calls_per_created_{size}",
            "calls",
            ours_at_most(AWS_CALLS_PER_CREATED),
            per,
        )
        line(
            case,
            "writes_to_converge",
            f"writes_per_created_{size}",
            "writes",
            ours_at_most(WRITES_PER_CREATED),
            per,
        )
        line(
            case,
            "writes_to_delete",
            f"writes_per_deleted_{size}",
            "writes",
            ours_at_most(WRITES_PER_DELETED),
            per,
        )
        line(case, "delete_seconds", f"delete_seconds_{size}", "s", NO_TARGET)
    peaks = {
        size: peak
        for size in stage.sizes
        if (peak := stage.value(f"converge_{size}", "peak_rss_mb")) is not None
    }
    for low, high in itertools.pairwise(sorted(peaks)):
        slope = (peaks[high] - peaks[low]) * 1000 / (high - low)
        found.append(
            BenchLine.compare(
                f"scale.rss_slope_{low}_{high}", "KB/object", slope, None, ours_at_most(KB_PER_OBJECT)
            )
        )
    for case in (name for name in stage.samples if name.startswith("steady_")):
        size = int(case.removeprefix("steady_"))
        line(case, "steady_writes", f"steady_writes_{size}", "writes", ours_equal(0))
        line(case, "steady_mutating_calls", f"steady_aws_writes_{size}", "calls", ours_equal(0))
        line(
            case,
            "describes_per_drift_pass",
            f"describes_per_drift_pass_{size}",
            "calls",
            ours_at_most(DESCRIBES_PER_OBJECT_PER_PASS * size),
        )
        line(case, "calls_per_drift_pass", f"calls_per_drift_pass_{size}", "calls", NO_TARGET)
        line(case, "cpu_seconds_per_drift_pass", f"cpu_seconds_per_drift_pass_{size}", "s", NO_TARGET)
        line(
            case,
            "rss_after_over_before",
            f"rss_after_deletion_during_drift_{size}",
            "ratio",
            ours_at_most(RSS_AFTER_DELETION_RATIO),
        )
    for case in (name for name in stage.samples if name.startswith("pull_secrets_")):
        count = int(case.removeprefix("pull_secrets_"))
        line(
            case,
            "seconds_to_all_served",
            f"pull_secrets_served_seconds_{count}",
            "s",
            ours_at_most(PULL_SECRETS_READY_SECONDS),
        )
        line(
            case,
            "token_calls_first_cycle",
            f"pull_secret_token_calls_first_cycle_{count}",
            "calls",
            ours_equal(2),
        )
        line(
            case,
            "token_calls_per_rotation",
            f"pull_secret_token_calls_per_rotation_{count}",
            "calls",
            ours_equal(2),
        )
        line(
            case,
            "secret_writes_per_namespace_per_rotation",
            f"pull_secret_patches_per_namespace_{count}",
            "writes",
            ours_equal(1),
        )
        line(
            case,
            "service_account_writes_per_rotation",
            f"pull_secret_sa_writes_per_rotation_{count}",
            "writes",
            ours_equal(0),
        )
        line(case, "peak_rss_mb", f"pull_secrets_peak_rss_{count}", "MB", ours_at_most(PEAK_RSS_MB))
    for case in (name for name in stage.samples if name.startswith("mirrors_")):
        count = int(case.removeprefix("mirrors_"))
        line(case, "peak_rss_mb", f"mirrors_peak_rss_{count}", "MB", ours_at_most(PEAK_RSS_MB))
        line(
            case,
            "source_non_head_requests",
            f"mirrors_source_non_head_requests_{count}",
            "requests",
            ours_equal(0),
        )
        line(
            case,
            "source_heads_per_mirror_per_pass",
            f"mirrors_source_heads_per_pass_{count}",
            "requests",
            NO_TARGET,
        )
        line(case, "busiest_second_requests", f"mirrors_busiest_second_{count}", "requests", NO_TARGET)
    return found


# The pull-secret case runs last: deleting its thousands of namespaces keeps the control plane busy.
CASES = ("converge", "steady", "mirrors", "pull-secrets")


def run(
    world: World,
    work: Path,
    sizes: Sequence[int],
    namespaces: int,
    mirrors: int,
    drift_interval: float,
    progress: Path,
    only_cases: Sequence[str] = (),
) -> tuple[list[BenchLine], dict[str, object]]:
    """The chosen cases in order; what each measured is also written to ``progress`` after it."""
    stage = Stage(world=world, work=work, sizes=tuple(sizes))
    try_peers(stage)
    chosen = [case for case in CASES if not only_cases or case in only_cases]
    steps: list[tuple[str, Callable[[], None]]] = []
    if "converge" in chosen:
        steps += [(f"converge {size}", partial(converge, stage, size)) for size in stage.sizes]
    if "steady" in chosen:
        size = min(stage.sizes)
        steps.append(
            (f"steady {size}", partial(steady_and_overlapping_deletion, stage, size, drift_interval))
        )
    if "mirrors" in chosen:
        steps.append((f"mirrors {mirrors}", partial(mirrors_at_steady_state, stage, mirrors)))
    if "pull-secrets" in chosen:
        steps.append((f"pull-secrets {namespaces}", partial(pull_secret_fan_out, stage, namespaces)))
    for name, step in steps:
        print(f"bench: scale {name} ...", file=sys.stderr, flush=True)
        try:
            step()
        except (RuntimeError, subprocess.SubprocessError, OSError) as error:
            # One case that fails (a timeout under load) must not cost the numbers of the others.
            stage.notes.append(f"scale {name} FAILED, its lines are missing: {str(error)[:1000]}")
        # Kept as the run goes: a run cut short (it can take an hour) still leaves what it measured.
        progress.parent.mkdir(parents=True, exist_ok=True)
        progress.write_text(json.dumps(stage.summary(), indent=2) + "\n")
    for note in stage.notes:
        print(f"bench: {note}", file=sys.stderr)
    return lines(stage), stage.summary()
