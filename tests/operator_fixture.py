"""The ``operator`` fixture: ``ecr-operator run`` as a real process against the test world (e2e and chaos).

By default the process runs as the Helm chart's ServiceAccount, bound to the ClusterRole ``helm template``
renders from charts/ecr-operator, so every e2e and chaos test proves that the chart's least-privilege RBAC
is enough (a missing verb shows up as "forbidden" in the operator's log and a test that never converges).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecr_sandbox.tools import tool_path
from ecr_sandbox.world import World

OPERATORS_KEY = pytest.StashKey[list["OperatorProcess"]]()
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 200
CHART = Path(__file__).resolve().parents[1] / "charts" / "ecr-operator"
# The release name contains "ecr-operator", so the chart names its ClusterRole, binding and ServiceAccount
# exactly this. tests/e2e/rbac/operator-rbac.yaml is the same ClusterRole, generated (test_chart_rbac.py).
CHART_RELEASE = "ecr-operator-e2e"
CHART_NAMESPACE = "kube-system"
CHART_RBAC_TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml")
TOKEN_LIFETIME = "48h"
NAMESPACE_DOCUMENT = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CHART_NAMESPACE}}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def operator_command(subcommand: str = "run") -> list[str]:
    """``ecr-operator <subcommand>`` by the installed console script, as a user runs it; ``python -m``
    only if the venv lacks it."""
    script = Path(sys.executable).with_name("ecr-operator")
    if script.exists():
        return [str(script), subcommand]
    found = shutil.which("ecr-operator")
    return [found, subcommand] if found else [sys.executable, "-m", "ecr_operator", subcommand]


@dataclass
class OperatorProcess:
    """One running ``ecr-operator run`` process, its ports and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    health_port: int

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        """The log as JSON records (the operator's default format); a line that is not JSON fails here."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.process.returncode}"
        tail = "\n".join(self.log_text().splitlines()[-LOG_TAIL_LINES:])
        return f"operator {self.name} ({state}), last {LOG_TAIL_LINES} lines of {self.log}:\n{tail}"

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                pytest.fail(f"the operator exited before it was healthy\n{self.describe()}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:  # noqa: S310 -- loopback
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        pytest.fail(f"the operator was not healthy after {timeout:.0f}s\n{self.describe()}")

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.log_records():
                if predicate(record):
                    return record
            time.sleep(0.2)
        pytest.fail(f"no matching log record after {timeout:.0f}s\n{self.describe()}")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, as Kubernetes stops a pod; returns the exit code (fails the test on a hang)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the operator did not exit within {timeout:.0f}s of SIGTERM\n{self.describe()}")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Teardown: SIGTERM, then SIGKILL to its process group if it hangs (never fails the test)."""
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the operator was expected to exit within {timeout:.0f}s\n{self.describe()}")


StartOperator = Callable[..., OperatorProcess]


def launch_operator(name: str, env: Mapping[str, str], directory: Path, **overrides: str) -> OperatorProcess:
    """``ecr-operator run`` with ``env`` plus fresh metrics/health ports and JSON logs, then ``overrides``;
    its log is ``directory/<name>.log``. Returns at once (``wait_healthy`` waits for it)."""
    metrics_port, health_port = free_port(), free_port()
    full_env = {
        **env,
        "ECR_OPERATOR_METRICS_PORT": str(metrics_port),
        "ECR_OPERATOR_HEALTH_PORT": str(health_port),
        "ECR_OPERATOR_LOG_FORMAT": "json",
        **overrides,
    }
    if "PYTHONPATH" in os.environ:  # the operator runs the source the tests import, not the venv's
        full_env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    log = directory / f"{name}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            operator_command(),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,  # a Ctrl+C on pytest must not reach it before teardown does
        )
    return OperatorProcess(
        name,
        process,
        log,
        metrics_port=_port(full_env["ECR_OPERATOR_METRICS_PORT"], metrics_port),
        health_port=_port(full_env["ECR_OPERATOR_HEALTH_PORT"], health_port),
    )


@dataclass(frozen=True)
class ChartIdentity:
    """The chart's ServiceAccount, bound by the chart's own ClusterRoleBinding, as a kubeconfig."""

    kubeconfig: Path
    username: str
    cluster_role: str
    rules: list[dict[str, Any]]


def render_chart_rbac(*values: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount, ClusterRole and ClusterRoleBinding as ``helm template`` renders them."""
    shown = [argument for template in CHART_RBAC_TEMPLATES for argument in ("--show-only", template)]
    helm = [str(tool_path("helm")), "template", CHART_RELEASE, str(CHART), "--namespace", CHART_NAMESPACE]
    result = subprocess.run(
        [*helm, *shown, *values],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"helm template failed:\n{result.stdout}\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def token_kubeconfig(world: World, token: str, path: Path) -> Path:
    """A kubeconfig for the world's apiserver that authenticates with a bearer token (as a pod does)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "world",
                "cluster": {
                    "server": world.apiserver_url,
                    "certificate-authority-data": base64.b64encode(world.ca_bundle.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "world", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def rbac_refusals(world: World, username: str, *, skip: int = 0) -> list[str]:
    """Requests of ``username`` the RBAC authorizer refused, from the audit log. Other 403s are not RBAC's:
    an Event posted into a namespace that is being deleted is refused by the NamespaceLifecycle admission."""
    refused: list[str] = []
    seen = 0
    with world.audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if event.get("user", {}).get("username") != username:
                continue
            seen += 1
            status = event.get("responseStatus", {})
            if (
                seen > skip
                and status.get("code") == 403
                and f'"{username}" cannot' in status.get("message", "")
            ):
                refused.append(f"{event.get('verb')} {event.get('requestURI')}: {status.get('message')}")
    return refused


@pytest.fixture(scope="session")
def chart_identity(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartIdentity]:
    """Render the chart's RBAC once per session, apply it, and mint a token of its ServiceAccount.

    At the end of the session, every request made with it is read back from the apiserver's audit log: one
    RBAC refused fails the session, and the verbs used are written to ``chart-identity-requests.txt`` in
    pytest's base temporary directory (what docs/rbac.md's table was checked against).
    """
    documents = render_chart_rbac()
    by_kind = {document["kind"]: document for document in documents}
    assert set(by_kind) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}, sorted(by_kind)
    world.kubectl(
        "apply",
        "--filename",
        "-",
        # The apiserver creates kube-system itself, but perhaps not yet in a world started a moment ago.
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [NAMESPACE_DOCUMENT, *documents]}),
    )
    account = by_kind["ServiceAccount"]["metadata"]["name"]
    token = world.kubectl(
        "create", "token", account, "--namespace", CHART_NAMESPACE, f"--duration={TOKEN_LIFETIME}"
    ).stdout.strip()
    kubeconfig = token_kubeconfig(world, token, tmp_path_factory.mktemp("chart-identity") / "kubeconfig")
    identity = ChartIdentity(
        kubeconfig=kubeconfig,
        username=f"system:serviceaccount:{CHART_NAMESPACE}:{account}",
        cluster_role=by_kind["ClusterRole"]["metadata"]["name"],
        rules=by_kind["ClusterRole"]["rules"],
    )
    already = len(world.audit_events(identity.username))  # an attached world may have older ones
    yield identity

    requests = world.audit_events(identity.username)[already:]
    used = Counter(
        f"{event.verb} {event.api_group or 'core'}/{event.resource}"
        f"{'/' + event.subresource if event.subresource else ''} -> {event.code}"
        for event in requests
    )
    report = tmp_path_factory.getbasetemp() / "chart-identity-requests.txt"
    report.write_text("".join(f"{count:6d} {line}\n" for line, count in sorted(used.items())))
    refused = rbac_refusals(world, identity.username, skip=already)
    if refused:
        pytest.fail(
            "the chart's ClusterRole refused the operator (add the verb to charts/ecr-operator/templates/"
            "rbac.yaml and docs/rbac.md if it is really needed):\n  " + "\n  ".join(sorted(set(refused))),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def operators_run_as_chart(world: World, chart_identity: ChartIdentity) -> Iterator[ChartIdentity]:
    """Make the chart's ServiceAccount the default of ``world.operator_env()`` for the session, so that
    operators a test starts by itself (not through ``operator``) run under the chart's RBAC too. The e2e
    and chaos layers use it automatically (their conftest.py)."""
    world.operator_kubeconfig = chart_identity.kubeconfig
    yield chart_identity
    world.operator_kubeconfig = None


def _port(value: str, fallback: int) -> int:
    """The port a test chose, or the generated one when the test overrode it with nonsense on purpose."""
    return int(value) if value.isdigit() else fallback


@pytest.fixture
def operator(
    world: World, chart_identity: ChartIdentity, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StartOperator]:
    """A factory: ``operator(**env_overrides, kubeconfig=None, wait=True)`` starts ``ecr-operator run``.

    The environment is ``world.operator_env()`` with fresh metrics/health ports and JSON logs, plus the
    overrides. It runs as the chart's ServiceAccount unless ``kubeconfig`` names other credentials (tests
    that need their own identity). Every process is stopped at teardown; a failing test's report carries
    each one's log.
    """
    started: list[OperatorProcess] = []
    request.node.stash[OPERATORS_KEY] = started

    def start(*, kubeconfig: Path | None = None, wait: bool = True, **overrides: str) -> OperatorProcess:
        env = world.operator_env(kubeconfig or chart_identity.kubeconfig)
        handle = launch_operator(f"operator-{len(started) + 1}", env, tmp_path, **overrides)
        started.append(handle)
        if wait:
            handle.wait_healthy()
        return handle

    yield start

    for handle in started:
        handle.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test shows the log of every operator process it started."""
    report = yield
    if report.failed:
        for handle in item.stash.get(OPERATORS_KEY, []):
            report.sections.append((f"{handle.name} log", handle.describe()))
    return report
