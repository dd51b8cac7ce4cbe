"""The test world as tests use it: a real Kubernetes control plane, moto for AWS, and distribution
registries, on loopback.

``World.start(state_dir)`` brings everything up (a few seconds once binaries are built; see
``ecr_sandbox.launcher``) and returns the handle; ``World.attach(state_dir)`` returns a handle on a world
``ecr-sandbox up`` started. Everything the world writes lives in ``state_dir``; every process logs to
``state_dir/logs``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from ecr_sandbox import kube
from ecr_sandbox.aws import AwsCall, AwsControl, AwsFault, read_calls_log
from ecr_sandbox.images import SandboxRegistryClient
from ecr_sandbox.kube import AuditEvent, KubeClient
from ecr_sandbox.launcher import STATE_FILE, WorldState, launch, stop_in_order
from ecr_sandbox.pki import CertificateAuthority
from ecr_sandbox.processes import ManagedProcess
from ecr_sandbox.registries import RegistryInfo
from ecr_sandbox.tools import tool_path

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

AWS_TEST_CREDENTIAL = "testing"


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{shlex.join(self.cmd)} exited with {self.returncode}: {(self.stderr or '').strip()[:2000]}"


class World:
    """Handle on a running test world. Create it with ``start`` or ``attach``, never directly."""

    def __init__(self, state_dir: Path, state: WorldState, processes: list[ManagedProcess]) -> None:
        self.state_dir = state_dir
        self.apiserver_url = state.apiserver_url
        self.aws_endpoint = state.aws_endpoint
        self.account_id = state.account_id
        self.region = state.region
        self.registries = {name: RegistryInfo.from_json(data) for name, data in state.registries.items()}
        self.startup_seconds = state.startup_seconds
        # Seconds from the start at which each milestone was reached.
        self.startup_milestones = state.startup_milestones
        self._processes = processes
        self._ca: CertificateAuthority | None = None
        # Whom ``operator_env()`` runs the operator as when not told: the admin, unless the test harness
        # names the chart's ServiceAccount here (tests/operator_fixture.py): every e2e test proves its RBAC.
        self.operator_kubeconfig: Path | None = None

    # -- files ---------------------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        return self.state_dir / "kubeconfig"

    @property
    def ca_bundle(self) -> Path:
        """PEM of the harness CA, which signs every TLS server of the world."""
        return self.state_dir / "pki" / "ca.crt"

    @property
    def audit_log(self) -> Path:
        """kube-apiserver audit log: JSON lines, level Metadata, one event per completed request."""
        return self.state_dir / "kube" / "audit.log"

    @property
    def registry_auth_file(self) -> Path:
        """Credentials for every registry that needs some, in the docker/containers ``auth.json`` format."""
        return self.state_dir / "registry-auth.json"

    @property
    def registry_cert_dir(self) -> Path:
        """A directory holding ``ca.crt`` (for skopeo's ``--src-cert-dir``/``--dest-cert-dir``)."""
        return self.state_dir / "registry-certs"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    def logs(self) -> dict[str, Path]:
        """Process name -> log file (registries also have ``<name>-access`` for their access logs)."""
        logs: dict[str, Path] = {}
        for process in self._processes:
            logs[process.name] = process.log
            if process.stdout_log is not None:
                logs[f"{process.name}-access"] = process.stdout_log
        return logs

    # -- Kubernetes ----------------------------------------------------------------------------------------

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the world (as admin unless ``kubeconfig`` says otherwise)."""
        command = [
            str(tool_path("kubectl")),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            # Discovery cache inside the world, not in ~/.kube where every world's port would pile up.
            f"--cache-dir={self.state_dir / 'kube' / 'cache'}",
            *args,
        ]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def make_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for ``user`` in ``groups`` (client certificate; RBAC decides the rest)."""
        safe_name = re.sub(r"[^A-Za-z0-9_.-]", "_", user)
        suffix = "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", group) for group in groups)
        path = self.state_dir / "kubeconfigs" / f"{safe_name}{'@' + suffix if suffix else ''}.kubeconfig"
        if not path.exists():
            client = self._certificate_authority().issue_client_cert(user, groups)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                kube.kubeconfig_yaml(self.apiserver_url, self.ca_bundle.read_bytes(), client, user)
            )
        return path

    def kube_client(self) -> KubeClient:
        """A tiny admin JSON client for the API server."""
        pki = self.state_dir / "pki"
        return KubeClient(self.apiserver_url, self.ca_bundle, pki / "admin.crt", pki / "admin.key")

    def create_namespace(self, prefix: str = "t-") -> str:
        name = f"{prefix}{secrets.token_hex(4)}"
        self.kube_client().call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        return name

    def delete_namespace(self, name: str, *, wait: bool = False, timeout: float = 60.0) -> None:
        """Delete a namespace; with ``wait``, until kube-controller-manager has emptied and removed it."""
        client = self.kube_client()
        client.call("DELETE", f"/api/v1/namespaces/{name}", ok=(200, 202, 404))
        if wait:
            _poll(
                f"namespace {name} to be gone",
                lambda: not client.exists(f"/api/v1/namespaces/{name}"),
                timeout,
            )

    def audit_events(self, username: str | None = None) -> list[AuditEvent]:
        """Audit events so far (of ``username`` only, if given), oldest first."""
        if not self.audit_log.exists():
            return []
        return [
            event
            for event in kube.read_audit_log(self.audit_log)
            if username is None or event.username == username
        ]

    # -- AWS -----------------------------------------------------------------------------------------------

    def aws_env(self) -> dict[str, str]:
        """Environment that points boto3 (any service) at moto, isolated from the host's AWS config."""
        return {
            "AWS_ACCESS_KEY_ID": AWS_TEST_CREDENTIAL,
            "AWS_SECRET_ACCESS_KEY": AWS_TEST_CREDENTIAL,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.aws_endpoint,
            "AWS_CONFIG_FILE": str(self.state_dir / "aws" / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.state_dir / "aws" / "credentials"),
            # Loopback only: never let botocore probe the instance metadata service.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @overload
    def boto3_client(self, service: Literal["ecr"], config: Config | None = None) -> ECRClient: ...
    @overload
    def boto3_client(self, service: Literal["iam"], config: Config | None = None) -> IAMClient: ...
    @overload
    def boto3_client(self, service: Literal["sts"], config: Config | None = None) -> STSClient: ...
    @overload
    def boto3_client(self, service: str, config: Config | None = None) -> Any: ...
    def boto3_client(self, service: str, config: Config | None = None) -> Any:
        """A boto3 client for ``service`` talking to moto."""
        import boto3.session

        session = boto3.session.Session(
            aws_access_key_id=AWS_TEST_CREDENTIAL,
            aws_secret_access_key=AWS_TEST_CREDENTIAL,
            region_name=self.region,
        )
        make_client: Any = session.client
        return make_client(service, endpoint_url=self.aws_endpoint, config=config)

    def aws_calls(self) -> list[AwsCall]:
        """Every AWS request moto (or an injected fault) answered so far, oldest first."""
        return read_calls_log(self.state_dir / "aws" / "calls.jsonl")

    def inject_aws_fault(
        self,
        operation: str,
        *,
        service: str | None = None,
        status: int | None = 400,
        code: str = "ThrottlingException",
        message: str = "Rate exceeded",
        count: int | None = 1,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``count`` matching AWS requests with an error (see ``AwsFault``)."""
        fault = AwsFault(operation, service, status, code, message, count, delay)
        AwsControl(self.aws_endpoint).add_fault(fault)

    def clear_aws_faults(self) -> None:
        AwsControl(self.aws_endpoint).clear_faults()

    def ecr_registry_host(self, account: str | None = None, region: str | None = None) -> str:
        return f"{account or self.account_id}.dkr.ecr.{region or self.region}.amazonaws.com"

    # -- registries ----------------------------------------------------------------------------------------

    def registry_client(
        self, name: str, *, username: str | None = None, password: str | None = None, anonymous: bool = False
    ) -> SandboxRegistryClient:
        """A client for registry ``name`` with its own credentials (or the given ones, or none)."""
        info = self.registries[name]
        if anonymous:
            return SandboxRegistryClient(info.url, self.ca_bundle)
        return SandboxRegistryClient(
            info.url, self.ca_bundle, username or info.username, password or info.password
        )

    # -- the operator's view -------------------------------------------------------------------------------

    def registry_host_overrides(self) -> dict[str, str]:
        return {self.ecr_registry_host(): self.registries["ecr"].host}

    def operator_env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Everything the operator process needs to run against this world (and nothing from the host
        except PATH and HOME)."""
        env = {
            "KUBECONFIG": str(kubeconfig or self.operator_kubeconfig or self.kubeconfig),
            **self.aws_env(),
            "ECR_OPERATOR_REGISTRY_HOST_OVERRIDES": json.dumps(self.registry_host_overrides()),
            "ECR_OPERATOR_CA_BUNDLE": str(self.ca_bundle),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        if "HOME" in os.environ:
            env["HOME"] = os.environ["HOME"]
        return env

    def shell_env(self) -> dict[str, str]:
        """What ``ecr-sandbox up`` writes to ``state_dir/env``: the operator environment, registry details."""
        env = {
            key: value
            for key, value in self.operator_env(self.kubeconfig).items()
            if key not in ("PATH", "HOME")
        }
        env["ECR_SANDBOX_STATE_DIR"] = str(self.state_dir)
        env["REGISTRY_AUTH_FILE"] = str(self.registry_auth_file)
        for name, info in self.registries.items():
            prefix = f"ECR_SANDBOX_REGISTRY_{name.upper()}"
            env[prefix] = info.host
            if info.username is not None and info.password is not None:
                env[f"{prefix}_USERNAME"] = info.username
                env[f"{prefix}_PASSWORD"] = info.password
        return env

    # -- lifecycle -----------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        detach: bool = False,
        manifests: Sequence[Path] = (),
        timeout: float = 120.0,
    ) -> World:
        """Start a world in ``state_dir`` (created, or reused if no world runs there).

        ``manifests`` (files or directories of YAML, e.g. the CRDs) are applied before the controllers start,
        so the garbage collector watches their types from the beginning. Unless ``detach``, the processes die
        with the calling thread; ``detach`` is for ``ecr-sandbox up``, whose processes outlive the command.
        """
        state_dir = state_dir.resolve()
        if (state_dir / STATE_FILE).exists():
            running = cls.attach(state_dir).running()
            if running:
                raise RuntimeError(
                    f"a world is already running in {state_dir} ({', '.join(running)}); "
                    f"stop it first (`ecr-sandbox down --state-dir {state_dir}`)"
                )
        state, processes = launch(state_dir, detach=detach, manifests=manifests, timeout=timeout)
        world = cls(state_dir, state, processes)
        world._write_env_file()
        return world

    @classmethod
    def attach(cls, state_dir: Path) -> World:
        """A handle on the world running in ``state_dir`` (started by another process)."""
        state_dir = state_dir.resolve()
        state_file = state_dir / STATE_FILE
        if not state_file.exists():
            raise FileNotFoundError(f"no world in {state_dir} (missing {STATE_FILE}); run `ecr-sandbox up`")
        state = WorldState.model_validate_json(state_file.read_text())
        return cls(state_dir, state, [ManagedProcess.from_record(record) for record in state.processes])

    def running(self) -> list[str]:
        return [process.name for process in self._processes if process.alive()]

    def stop(self, timeout: float = 10.0, *, discard_data: bool = False) -> None:
        """Stop every process of the world (SIGTERM, then SIGKILL after ``timeout``).

        ``discard_data`` then deletes etcd's data (~64 MiB of preallocated WAL) and the registries' storage,
        keeping logs, the audit log and certificates for a post-mortem.
        """
        stop_in_order(self._processes, timeout)
        if discard_data:
            shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
            for name in self.registries:
                shutil.rmtree(self.state_dir / "registries" / name / "data", ignore_errors=True)

    def _write_env_file(self) -> None:
        # The world's kubectl and helm first on PATH: a sourced shell talks to it with matching versions.
        tool_dirs = ":".join(shlex.quote(str(tool_path(name).parent)) for name in ("kubectl", "helm"))
        self.env_file.write_text(
            "".join(f"export {key}={shlex.quote(value)}\n" for key, value in self.shell_env().items())
            + f'export PATH={tool_dirs}:"$PATH"\n'
        )

    def _certificate_authority(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority.load(self.ca_bundle, self.state_dir / "pki" / "ca.key")
        return self._ca


def _poll(description: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(0.1)
