"""Starting a test world: its files (PKI, kubeconfigs, registry and token-issuer config) written into the
state directory, then its processes started in dependency order, each phase timed.

``launch`` is what ``World.start`` runs; tests never call it. It returns what ``world.json`` records and the
processes it started, and leaves nothing running when it fails.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel

from ecr_sandbox import kube
from ecr_sandbox.aws import AwsControl
from ecr_sandbox.kube import KubeClient
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
    HOSTILE_REGISTRY,
    REGISTRY_NAMES,
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

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
# Names in the token protocol, not secrets.
TOKEN_SERVICE = "sandbox-token-registry"  # noqa: S105
TOKEN_ISSUER_NAME = "sandbox-token-issuer"  # noqa: S105
ANONYMOUS_PULL_PREFIX = "public/"
STATE_FILE = "world.json"

# Everything launch() creates in the state directory, and so may remove when reusing it.
_OWNED_ENTRIES = (
    STATE_FILE,
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


def launch(
    state_dir: Path, *, detach: bool, manifests: Sequence[Path], timeout: float
) -> tuple[WorldState, list[ManagedProcess]]:
    """Write a world's files into ``state_dir`` (what an earlier world left there is removed first) and
    start its processes; on any failure, stop what was started and raise."""
    for entry in _OWNED_ENTRIES:
        path = state_dir / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    state_dir.mkdir(parents=True, exist_ok=True)
    launcher = _Launcher(state_dir, detach=detach, timeout=timeout)
    try:
        return launcher.launch(manifests), launcher.processes
    except BaseException:
        stop_in_order(launcher.processes)
        raise


def stop_in_order(processes: Sequence[ManagedProcess], timeout: float = 10.0) -> None:
    # etcd last: while kube-apiserver holds watches open on it, etcd takes ~7 s to shut down gracefully.
    stop_all([process for process in processes if process.name != "etcd"], timeout)
    stop_all([process for process in processes if process.name == "etcd"], timeout)


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
        self.apiserver_url = f"https://127.0.0.1:{self.ports.apiserver}"
        self.aws_endpoint = f"http://127.0.0.1:{self.ports.moto}"
        self.pki = state_dir / "pki"
        self.logs = state_dir / "logs"
        self.control_plane_files = kube.ControlPlaneFiles(pki=self.pki, kube=state_dir / "kube")

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

    def launch(self, manifests: Sequence[Path]) -> WorldState:
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
                self.control_plane_files,
                port=self.ports.apiserver,
                etcd_client_port=self.ports.etcd_client,
            ),
        )
        for process, description, probe in probes:
            wait_until(description, probe, process=process, timeout=self.timeout)
        reached("moto, token issuer, registries ready")
        admin = KubeClient(
            self.apiserver_url, self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key"
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
            self._apply(manifest_files, admin, apiserver)
            reached("manifests applied")

        self._start_controller_manager(binaries["kube-controller-manager"], admin, apiserver)
        reached("kube-controller-manager ready")
        return self._record(registries, startup_seconds=time.monotonic() - began)

    def _record(self, registries: dict[str, RegistryInfo], startup_seconds: float) -> WorldState:
        state = WorldState(
            apiserver_url=self.apiserver_url,
            aws_endpoint=self.aws_endpoint,
            account_id=ACCOUNT_ID,
            region=REGION,
            registries={name: info.to_json() for name, info in registries.items()},
            processes=[process.to_record() for process in self.processes],
            startup_seconds=round(startup_seconds, 3),
            startup_milestones=self.milestones,
        )
        (self.state_dir / STATE_FILE).write_text(state.model_dump_json(indent=2))
        return state

    # -- files ---------------------------------------------------------------------------------------------

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
        api = self.apiserver_url
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

    def _write_registry_files(self) -> dict[str, RegistryInfo]:
        token_dir = self.state_dir / "token-issuer"
        self._write_token_signer(token_dir)
        credentials = {
            "ecr": ("AWS", f"{ACCOUNT_ID}-auth-token"),
            "basic": ("sandbox", secrets.token_urlsafe(12)),
            "token": ("sandbox", secrets.token_urlsafe(12)),
        }
        registries = {
            name: self._write_registry(name, *credentials.get(name, (None, None)), token_dir=token_dir)
            for name in REGISTRY_NAMES
        }
        auths = {
            info.host: {"auth": base64.b64encode(f"{info.username}:{info.password}".encode()).decode()}
            for info in registries.values()
            if info.username and info.password
        }
        registries[HOSTILE_REGISTRY] = self._hostile_registry_info()
        (self.state_dir / "registry-auth.json").write_text(json.dumps({"auths": auths}, indent=2))
        return registries

    def _write_token_signer(self, token_dir: Path) -> None:
        # A self-signed CA-flagged certificate, embedded in each token's x5c header and trusted by the
        # token registry as its rootcertbundle.
        signing_key = new_private_key()
        signing_cert = self_signed_ca("sandbox token signer", signing_key)
        CertAndKey(signing_cert.public_bytes(Encoding.PEM), private_key_pem(signing_key)).write(
            token_dir, "signing"
        )

    def _write_registry(
        self, name: str, username: str | None, password: str | None, *, token_dir: Path
    ) -> RegistryInfo:
        """Configuration (and htpasswd file) of one distribution registry; what tests know of it."""
        directory = self.state_dir / "registries" / name
        directory.mkdir(parents=True)
        port = self.ports.registries[name]
        token_realm = f"https://127.0.0.1:{self.ports.token_issuer}/token"
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
        return RegistryInfo(
            name=name,
            host=host,
            url=f"https://{host}",
            auth=RegistryAuth.TOKEN if token else RegistryAuth.HTPASSWD if htpasswd else RegistryAuth.NONE,
            access_log=self.logs / f"registry-{name}.access.log",
            log=self.logs / f"registry-{name}.log",
            username=username,
            password=password,
            anonymous_pull_prefix={"anonymous": "", "token": ANONYMOUS_PULL_PREFIX}.get(name),
            token_realm=token_realm if token else None,
            token_service=TOKEN_SERVICE if token else None,
            token_log=token_dir / "requests.jsonl" if token else None,
        )

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
            (moto, "moto server", lambda: AwsControl(self.aws_endpoint).faults()),
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
                binary, self.control_plane_files, port=self.ports.controller_manager
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

    def _apply(self, files: Sequence[Path], admin: KubeClient, apiserver: ManagedProcess) -> None:
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
            wait_until(
                f"CRD {name} to be established",
                functools.partial(_established, admin, path),
                process=apiserver,
                timeout=30,
            )


def _established(admin: KubeClient, path: str) -> bool | None:
    crd = admin.call("GET", path)
    conditions = crd.get("status", {}).get("conditions", [])
    established = any(item["type"] == "Established" and item["status"] == "True" for item in conditions)
    return True if established else None


def _client_tls(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))
