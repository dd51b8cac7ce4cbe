"""The ``operator`` fixture: ``ecr-operator run`` as a real process against the test world (e2e and chaos)."""

from __future__ import annotations

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
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ecr_operator.sandbox.world import World

OPERATORS_KEY = pytest.StashKey[list["OperatorProcess"]]()
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 200


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def operator_command() -> list[str]:
    """The installed console script, as a user runs it; ``python -m`` only if the venv lacks it."""
    script = Path(sys.executable).with_name("ecr-operator")
    if script.exists():
        return [str(script), "run"]
    found = shutil.which("ecr-operator")
    return [found, "run"] if found else [sys.executable, "-m", "ecr_operator", "run"]


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

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the operator was expected to exit within {timeout:.0f}s\n{self.describe()}")


StartOperator = Callable[..., OperatorProcess]


def _port(value: str, fallback: int) -> int:
    """The port a test chose, or the generated one when the test overrode it with nonsense on purpose."""
    return int(value) if value.isdigit() else fallback


@pytest.fixture
def operator(world: World, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartOperator]:
    """A factory: ``operator(**env_overrides, kubeconfig=None, wait=True)`` starts ``ecr-operator run``.

    The environment is ``world.operator_env()`` with fresh metrics/health ports and JSON logs, plus the
    overrides. Every process is stopped at teardown; a failing test's report carries each one's log.
    """
    started: list[OperatorProcess] = []
    request.node.stash[OPERATORS_KEY] = started

    def start(*, kubeconfig: Path | None = None, wait: bool = True, **overrides: str) -> OperatorProcess:
        metrics_port, health_port = free_port(), free_port()
        env = world.operator_env(kubeconfig) | {
            "ECR_OPERATOR_METRICS_PORT": str(metrics_port),
            "ECR_OPERATOR_HEALTH_PORT": str(health_port),
            "ECR_OPERATOR_LOG_FORMAT": "json",
        }
        env |= overrides
        name = f"operator-{len(started) + 1}"
        log = tmp_path / f"{name}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                operator_command(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                start_new_session=True,  # a Ctrl+C on pytest must not reach it before teardown does
            )
        handle = OperatorProcess(
            name,
            process,
            log,
            metrics_port=_port(env["ECR_OPERATOR_METRICS_PORT"], metrics_port),
            health_port=_port(env["ECR_OPERATOR_HEALTH_PORT"], health_port),
        )
        started.append(handle)
        if wait:
            handle.wait_healthy()
        return handle

    yield start

    for handle in started:
        if handle.alive():
            handle.process.send_signal(signal.SIGTERM)
            try:
                handle.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(handle.process.pid, signal.SIGKILL)
                handle.process.wait()


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
