"""The test world: a real Kubernetes control plane, moto for AWS, and distribution registries, on loopback.

``World.start(state_dir)`` brings everything up (a few seconds once binaries are built) and returns a handle
tests use; ``World.attach(state_dir)`` returns a handle on a world ``ecr-sandbox up`` started.
Everything the world writes lives in ``state_dir``; every process logs to ``state_dir/logs``.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from ecr_sandbox import kube
from ecr_sandbox.aws import AwsCall, AwsControl, AwsFault, read_calls_log
from ecr_sandbox.images import SandboxRegistryClient
from ecr_sandbox.kube import AuditEvent, KubeClient
from ecr_sandbox.pki import (
    CertAndKey,
    CertificateAuthority,
    new_private_key,
    private_key_pem,
    public_key_pem,
    self_signed_ca,
)
from ecr_sandbox.processes import ManagedProcess, ProcessError, free_ports, stop_all, wait_until
from ecr_sandbox.registries import (
    RegistryAuth,
    RegistryInfo,
    TokenAuthSettings,
    registry_argv,
    registry_config,
    write_htpasswd,
    write_registry_config,
)
from ecr_sandbox.token_issuer import TokenIssuerConfig
from ecr_sandbox.tools import tool_path

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
AWS_TEST_CREDENTIAL = "testing"
# Names in the token protocol, not secrets.
TOKEN_SERVICE = "sandbox-token-registry"  # noqa: S105
TOKEN_ISSUER_NAME = "sandbox-token-issuer"  # noqa: S105
ANONYMOUS_PULL_PREFIX = "public/"
REGISTRY_NAMES = ("ecr", "anonymous", "basic", "token")
# Our own hostile registry (sandbox/hostile_registry.py), for tests that no upstream can hurt the operator.
HOSTILE_REGISTRY = "hostile"

# Everything start() creates in the state directory, and so may remove when reusing it.
_OWNED_ENTRIES = (
    "world.json",
    "env",
    "kubeconfig",
    "kubeconfigs",
    "pki",
    "etcd",
    "kube",
    "aws",
    "registries",
    "token-issuer",
    "logs",
    "registry-auth.json",
    "registry-certs",
)


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{shlex.join(self.cmd)} exited with {self.returncode}: {(self.stderr or '').strip()[:2000]}"


class WorldState(BaseModel):
    """What ``world.json`` records so another process can attach to a running world."""

    apiserver_url: str
    aws_endpoint: str
    account_id: str
    region: str
    registries: dict[str, dict[str, Any]]
    processes: list[dict[str, Any]]
    startup_seconds: float
    startup_milestones: dict[str, float]


@dataclass(frozen=True)
class _Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    moto: int
    token_issuer: int
    hostile_registry: int
    registries: dict[str, int]

    @classmethod
    def allocate(cls) -> _Ports:
        ports = free_ports(7 + len(REGISTRY_NAMES))
        return cls(
            etcd_client=ports[0],
            etcd_peer=ports[1],
            apiserver=ports[2],
            controller_manager=ports[3],
            moto=ports[4],
            token_issuer=ports[5],
            hostile_registry=ports[6],
            registries=dict(zip(REGISTRY_NAMES, ports[7:], strict=True)),
        )


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
        """What ``sandbox up`` writes to ``state_dir/env``: the operator environment and registry details."""
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
        with the calling thread; ``detach`` is for ``sandbox up``, whose processes outlive the command.
        """
        state_dir = state_dir.resolve()
        _prepare_state_dir(state_dir)
        launcher = _Launcher(state_dir, detach=detach, timeout=timeout)
        try:
            world = launcher.launch(manifests)
        except BaseException:
            _stop_in_order(launcher.processes)
            raise
        return world

    @classmethod
    def attach(cls, state_dir: Path) -> World:
        """A handle on the world running in ``state_dir`` (started by another process)."""
        state_dir = state_dir.resolve()
        state_file = state_dir / "world.json"
        if not state_file.exists():
            raise FileNotFoundError(f"no world in {state_dir} (missing world.json); run `ecr-sandbox up`")
        state = WorldState.model_validate_json(state_file.read_text())
        return cls(state_dir, state, [ManagedProcess.from_record(record) for record in state.processes])

    def running(self) -> list[str]:
        return [process.name for process in self._processes if process.alive()]

    def stop(self, timeout: float = 10.0, *, discard_data: bool = False) -> None:
        """Stop every process of the world (SIGTERM, then SIGKILL after ``timeout``).

        ``discard_data`` then deletes etcd's data (~64 MiB of preallocated WAL) and the registries' storage,
        keeping logs, the audit log and certificates for a post-mortem.
        """
        _stop_in_order(self._processes, timeout)
        if discard_data:
            shutil.rmtree(self.state_dir / "etcd", ignore_errors=True)
            for name in self.registries:
                shutil.rmtree(self.state_dir / "registries" / name / "data", ignore_errors=True)

    def _certificate_authority(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority.load(self.ca_bundle, self.state_dir / "pki" / "ca.key")
        return self._ca


def _stop_in_order(processes: Sequence[ManagedProcess], timeout: float = 10.0) -> None:
    # etcd last: while kube-apiserver holds watches open on it, etcd takes ~7 s to shut down gracefully.
    stop_all([process for process in processes if process.name != "etcd"], timeout)
    stop_all([process for process in processes if process.name == "etcd"], timeout)


def _prepare_state_dir(state_dir: Path) -> None:
    if (state_dir / "world.json").exists():
        running = World.attach(state_dir).running()
        if running:
            raise RuntimeError(
                f"a world is already running in {state_dir} ({', '.join(running)}); "
                f"stop it first (`ecr-sandbox down --state-dir {state_dir}`)"
            )
    for entry in _OWNED_ENTRIES:
        path = state_dir / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    state_dir.mkdir(parents=True, exist_ok=True)


def _poll(description: str, condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {description}")
        time.sleep(0.1)


def _https_status(url: str, context: ssl.SSLContext, timeout: float = 5.0) -> int:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"no host in {url}")
    connection = http.client.HTTPSConnection(parts.hostname, parts.port, context=context, timeout=timeout)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _manifest_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(item for item in path.iterdir() if item.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


def _crd_names(files: Sequence[Path]) -> list[str]:
    names = []
    for file in files:
        for document in yaml.safe_load_all(file.read_text()):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                names.append(str(document["metadata"]["name"]))
    return names


# A process, what it is waited for, and a probe returning non-None once it is ready.
_Probe = tuple[ManagedProcess, str, Callable[[], object]]


class _Launcher:
    """Writes the world's files and starts its processes in dependency order, timing each phase."""

    def __init__(self, state_dir: Path, *, detach: bool, timeout: float) -> None:
        self.state_dir = state_dir
        self.detach = detach
        self.timeout = timeout
        self.processes: list[ManagedProcess] = []
        self.milestones: dict[str, float] = {}
        self.ports = _Ports.allocate()
        self.pki = state_dir / "pki"
        self.logs = state_dir / "logs"

    def _start(self, name: str, argv: list[str], *, stdout_log: Path | None = None) -> ManagedProcess:
        process = ManagedProcess.start(
            name,
            argv,
            self.logs / f"{name}.log",
            stdout_log=stdout_log,
            cwd=self.state_dir,
            detach=self.detach,
        )
        self.processes.append(process)
        return process

    def launch(self, manifests: Sequence[Path]) -> World:
        began = time.monotonic()

        def reached(milestone: str) -> None:
            self.milestones[milestone] = round(time.monotonic() - began, 3)

        binaries = {name: tool_path(name) for name in ("etcd", "kube-apiserver", "kube-controller-manager")}
        tool_path("docker-registry")
        manifest_files = _manifest_files(manifests)
        if manifest_files:
            tool_path("kubectl")
        ca = CertificateAuthority.create()
        self._write_pki(ca)
        registries = self._write_registry_files()
        reached("files written")

        etcd = self._start_etcd(binaries["etcd"])
        probes = self._start_aws_and_registries(registries)
        wait_until("etcd /health", self._etcd_healthy, process=etcd, timeout=self.timeout)
        reached("etcd ready")

        apiserver = self._start(
            "kube-apiserver",
            kube.apiserver_argv(
                binaries["kube-apiserver"],
                self._apiserver_files(),
                port=self.ports.apiserver,
                etcd_client_port=self.ports.etcd_client,
            ),
        )
        for process, description, probe in probes:
            wait_until(description, probe, process=process, timeout=self.timeout)
        reached("moto, token issuer, registries ready")
        admin = KubeClient(
            self._apiserver_url, self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key"
        )
        wait_until(
            "kube-apiserver /readyz",
            lambda: True if admin.request("GET", "/readyz")[0] == 200 else None,
            process=apiserver,
            also_watch=[etcd],
            timeout=self.timeout,
        )
        reached("kube-apiserver ready")

        if manifest_files:
            self._apply(manifest_files, admin)
            reached("manifests applied")

        self._start_controller_manager(binaries["kube-controller-manager"], admin, apiserver)
        reached("kube-controller-manager ready")
        return self._record(registries, startup_seconds=time.monotonic() - began)

    def _record(self, registries: dict[str, RegistryInfo], startup_seconds: float) -> World:
        state = WorldState(
            apiserver_url=self._apiserver_url,
            aws_endpoint=self._aws_endpoint,
            account_id=ACCOUNT_ID,
            region=REGION,
            registries={name: info.to_json() for name, info in registries.items()},
            processes=[process.to_record() for process in self.processes],
            startup_seconds=round(startup_seconds, 3),
            startup_milestones=self.milestones,
        )
        (self.state_dir / "world.json").write_text(state.model_dump_json(indent=2))
        world = World(self.state_dir, state, self.processes)
        # The world's kubectl and helm first on PATH: a sourced shell talks to it with matching versions.
        tool_dirs = ":".join(shlex.quote(str(tool_path(name).parent)) for name in ("kubectl", "helm"))
        world.env_file.write_text(
            "".join(f"export {key}={shlex.quote(value)}\n" for key, value in world.shell_env().items())
            + f'export PATH={tool_dirs}:"$PATH"\n'
        )
        return world

    # -- files ---------------------------------------------------------------------------------------------

    @property
    def _apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def _aws_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.moto}"

    def _write_pki(self, ca: CertificateAuthority) -> None:
        pki = self.pki
        ca.as_pair().write(pki, "ca")
        ca.issue_server_cert("kube-apiserver", kube.APISERVER_HOSTS).write(pki, "apiserver")
        ca.issue_server_cert("kube-controller-manager", ["127.0.0.1", "localhost"]).write(
            pki, "controller-manager"
        )
        ecr_host = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com"
        ecr_wildcard = f"*.dkr.ecr.{REGION}.amazonaws.com"
        ca.issue_server_cert("sandbox registry", ["127.0.0.1", "localhost", ecr_host, ecr_wildcard]).write(
            pki, "registry"
        )
        admin = ca.issue_client_cert("sandbox-admin", ["system:masters"])
        admin.write(pki, "admin")
        # --use-service-account-credentials=false: every controller acts as this one user, which needs
        # cluster-wide delete for garbage collection and namespace cleanup.
        controller_manager = ca.issue_client_cert("system:kube-controller-manager", ["system:masters"])
        api = self._apiserver_url
        (self.state_dir / "kubeconfig").write_text(
            kube.kubeconfig_yaml(api, ca.cert_pem, admin, "sandbox-admin")
        )
        (pki / "controller-manager.kubeconfig").write_text(
            kube.kubeconfig_yaml(api, ca.cert_pem, controller_manager, "system:kube-controller-manager")
        )
        service_account_key = new_private_key()
        (pki / "service-account.key").touch(mode=0o600)
        (pki / "service-account.key").write_bytes(private_key_pem(service_account_key))
        (pki / "service-account.pub").write_bytes(public_key_pem(service_account_key))
        cert_dir = self.state_dir / "registry-certs"
        cert_dir.mkdir()
        (cert_dir / "ca.crt").write_bytes(ca.cert_pem)
        kube_dir = self.state_dir / "kube"
        kube_dir.mkdir()
        (kube_dir / "audit-policy.yaml").write_text(yaml.safe_dump(kube.AUDIT_POLICY))
        aws_dir = self.state_dir / "aws"
        aws_dir.mkdir()

    def _apiserver_files(self) -> kube.ApiserverFiles:
        return kube.ApiserverFiles(
            serving_cert=self.pki / "apiserver.crt",
            serving_key=self.pki / "apiserver.key",
            client_ca=self.pki / "ca.crt",
            service_account_public_key=self.pki / "service-account.pub",
            service_account_private_key=self.pki / "service-account.key",
            audit_policy=self.state_dir / "kube" / "audit-policy.yaml",
            audit_log=self.state_dir / "kube" / "audit.log",
        )

    def _controller_manager_files(self) -> kube.ControllerManagerFiles:
        return kube.ControllerManagerFiles(
            kubeconfig=self.pki / "controller-manager.kubeconfig",
            serving_cert=self.pki / "controller-manager.crt",
            serving_key=self.pki / "controller-manager.key",
            service_account_private_key=self.pki / "service-account.key",
            root_ca=self.pki / "ca.crt",
        )

    def _write_registry_files(self) -> dict[str, RegistryInfo]:
        root = self.state_dir / "registries"
        # The token signer: a self-signed CA-flagged certificate, embedded in each token's x5c header and
        # trusted by the token registry as its rootcertbundle.
        signing_key = new_private_key()
        signing_cert = self_signed_ca("sandbox token signer", signing_key)
        token_dir = self.state_dir / "token-issuer"
        CertAndKey(signing_cert.public_bytes(Encoding.PEM), private_key_pem(signing_key)).write(
            token_dir, "signing"
        )
        token_realm = f"https://127.0.0.1:{self.ports.token_issuer}/token"
        credentials = {
            "ecr": ("AWS", f"{ACCOUNT_ID}-auth-token"),
            "basic": ("sandbox", secrets.token_urlsafe(12)),
            "token": ("sandbox", secrets.token_urlsafe(12)),
        }
        registries: dict[str, RegistryInfo] = {}
        auths: dict[str, dict[str, str]] = {}
        for name in REGISTRY_NAMES:
            directory = root / name
            directory.mkdir(parents=True)
            port = self.ports.registries[name]
            username, password = credentials.get(name, (None, None))
            htpasswd = token = None
            if name in ("ecr", "basic") and username and password:
                htpasswd = directory / "htpasswd"
                write_htpasswd(htpasswd, username, password)
            if name == "token":
                token = TokenAuthSettings(
                    token_realm, TOKEN_SERVICE, TOKEN_ISSUER_NAME, token_dir / "signing.crt"
                )
            config = registry_config(
                port=port,
                storage_dir=directory / "data",
                tls_cert=self.pki / "registry.crt",
                tls_key=self.pki / "registry.key",
                htpasswd=htpasswd,
                token=token,
            )
            write_registry_config(directory / "config.yml", config)
            host = f"127.0.0.1:{port}"
            registries[name] = RegistryInfo(
                name=name,
                host=host,
                url=f"https://{host}",
                auth=RegistryAuth.TOKEN
                if token
                else RegistryAuth.HTPASSWD
                if htpasswd
                else RegistryAuth.NONE,
                access_log=self.logs / f"registry-{name}.access.log",
                log=self.logs / f"registry-{name}.log",
                username=username,
                password=password,
                anonymous_pull_prefix={"anonymous": "", "token": ANONYMOUS_PULL_PREFIX}.get(name),
                token_realm=token_realm if token else None,
                token_service=TOKEN_SERVICE if token else None,
                token_log=token_dir / "requests.jsonl" if token else None,
            )
            if username and password:
                auths[host] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
        registries[HOSTILE_REGISTRY] = self._hostile_registry_info()
        (self.state_dir / "registry-auth.json").write_text(json.dumps({"auths": auths}, indent=2))
        return registries

    # -- processes -----------------------------------------------------------------------------------------

    def _start_etcd(self, binary: Path) -> ManagedProcess:
        data_dir = self.state_dir / "etcd"
        data_dir.mkdir(mode=0o700)
        return self._start(
            "etcd", kube.etcd_argv(binary, data_dir, self.ports.etcd_client, self.ports.etcd_peer)
        )

    def _etcd_healthy(self) -> bool | None:
        connection = http.client.HTTPConnection("127.0.0.1", self.ports.etcd_client, timeout=5)
        try:
            connection.request("GET", "/health")
            body = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        return True if body.get("health") == "true" else None

    def _start_aws_and_registries(self, registries: dict[str, RegistryInfo]) -> list[_Probe]:
        """Start moto, the token issuer and the registries; return how to tell each is ready."""
        tls = _client_tls(self.pki / "ca.crt")

        def answers(url: str, *statuses: int) -> Callable[[], bool | None]:
            return lambda: True if _https_status(url, tls) in statuses else None

        moto = self._start_moto()
        token_issuer = self._start_token_issuer(registries["token"])
        probes: list[_Probe] = [
            (moto, "moto server", lambda: AwsControl(self._aws_endpoint).faults()),
            (
                token_issuer,
                "token issuer",
                answers(f"{registries['token'].token_realm}?service={TOKEN_SERVICE}", 200),
            ),
        ]
        for name, info in registries.items():
            if name == HOSTILE_REGISTRY:
                process = self._start(
                    f"registry-{name}", self._hostile_registry_argv(), stdout_log=info.access_log
                )
            else:
                config = self.state_dir / "registries" / name / "config.yml"
                process = self._start(f"registry-{name}", registry_argv(config), stdout_log=info.access_log)
            probes.append(
                (process, f"registry {name} at {info.url}/v2/", answers(f"{info.url}/v2/", 200, 401))
            )
        return probes

    def _hostile_registry_info(self) -> RegistryInfo:
        host = f"127.0.0.1:{self.ports.hostile_registry}"
        return RegistryInfo(
            name=HOSTILE_REGISTRY,
            host=host,
            url=f"https://{host}",
            auth=RegistryAuth.NONE,
            access_log=self.logs / f"registry-{HOSTILE_REGISTRY}.access.log",
            log=self.logs / f"registry-{HOSTILE_REGISTRY}.log",
            username=None,
            password=None,
            anonymous_pull_prefix="",
        )

    def _hostile_registry_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "ecr_sandbox.hostile_registry",
            "--port",
            str(self.ports.hostile_registry),
            "--tls-cert",
            str(self.pki / "registry.crt"),
            "--tls-key",
            str(self.pki / "registry.key"),
        ]

    def _start_controller_manager(self, binary: Path, admin: KubeClient, apiserver: ManagedProcess) -> None:
        process = self._start(
            "kube-controller-manager",
            kube.controller_manager_argv(
                binary, self._controller_manager_files(), port=self.ports.controller_manager
            ),
        )
        tls = _client_tls(self.pki / "ca.crt")
        health = f"https://127.0.0.1:{self.ports.controller_manager}/healthz"
        wait_until(
            "kube-controller-manager /healthz",
            lambda: True if _https_status(health, tls) == 200 else None,
            process=process,
            timeout=self.timeout,
        )
        wait_until(
            "the default ServiceAccount (serviceaccount controller working)",
            lambda: True if admin.exists("/api/v1/namespaces/default/serviceaccounts/default") else None,
            process=process,
            also_watch=[apiserver],
            timeout=self.timeout,
        )

    def _start_moto(self) -> ManagedProcess:
        return self._start(
            "moto",
            [
                sys.executable,
                "-m",
                "ecr_sandbox.moto_server",
                "--port",
                str(self.ports.moto),
                "--calls-log",
                str(self.state_dir / "aws" / "calls.jsonl"),
            ],
        )

    def _start_token_issuer(self, registry: RegistryInfo) -> ManagedProcess:
        token_dir = self.state_dir / "token-issuer"
        if registry.username is None or registry.password is None:
            raise ValueError("the token registry needs a user")
        config = TokenIssuerConfig(
            port=self.ports.token_issuer,
            tls_cert=self.pki / "registry.crt",
            tls_key=self.pki / "registry.key",
            signing_key=token_dir / "signing.key",
            signing_cert=token_dir / "signing.crt",
            issuer=TOKEN_ISSUER_NAME,
            service=TOKEN_SERVICE,
            users={registry.username: registry.password},
            anonymous_pull_prefix=ANONYMOUS_PULL_PREFIX,
            request_log=token_dir / "requests.jsonl",
        )
        config_path = token_dir / "config.json"
        config_path.touch(mode=0o600)
        config_path.write_text(config.model_dump_json(indent=2))
        return self._start(
            "token-issuer",
            [sys.executable, "-m", "ecr_sandbox.token_issuer", "--config", str(config_path)],
        )

    def _apply(self, files: Sequence[Path], admin: KubeClient) -> None:
        kubectl = str(tool_path("kubectl"))
        for file in files:
            command = [
                kubectl,
                f"--kubeconfig={self.state_dir / 'kubeconfig'}",
                f"--cache-dir={self.state_dir / 'kube' / 'cache'}",
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=ecr-operator-sandbox",
                "-f",
                str(file),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
            if result.returncode != 0:
                raise ProcessError(f"kubectl apply -f {file} failed: {result.stderr.strip()}")
        for name in _crd_names(files):
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            _poll(f"CRD {name} to be established", functools.partial(_established, admin, path), 30)


def _established(admin: KubeClient, path: str) -> bool:
    crd = admin.call("GET", path)
    conditions = crd.get("status", {}).get("conditions", [])
    return any(item["type"] == "Established" and item["status"] == "True" for item in conditions)


def _client_tls(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))
