"""The Kubernetes part of the world: etcd, kube-apiserver, kube-controller-manager, and a client for them."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ecr_sandbox.pki import CertAndKey

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Only a configuration value: nothing in the world routes cluster IPs.
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
APISERVER_HOSTS = (
    "127.0.0.1",
    "localhost",
    "10.96.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# The controllers a kubelet-less cluster still needs: owner-reference garbage collection, namespace
# deletion, default ServiceAccounts and their legacy token secrets, kube-root-ca.crt, aggregated ClusterRoles.
CONTROLLERS = (
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-cert-publisher",
    "clusterrole-aggregation",
)
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

# One event per finished request, metadata only (no bodies: they may carry credentials).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata"}],
}


def etcd_argv(etcd: Path, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    return [
        str(etcd),
        "--name=sandbox",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=sandbox={peer_url}",
        "--initial-cluster-state=new",
        # Throwaway data: skipping fsync makes every API write several times faster.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


@dataclass(frozen=True)
class ControlPlaneFiles:
    """The directories the launcher writes the control plane's files into: ``pki`` holds ``<name>.crt`` and
    ``<name>.key`` pairs (``ca``, ``apiserver``, ``controller-manager``), the service-account key pair and
    the controller manager's kubeconfig; ``kube`` the audit policy and log."""

    pki: Path
    kube: Path


def apiserver_argv(binary: Path, files: ControlPlaneFiles, *, port: int, etcd_client_port: int) -> list[str]:
    # The default admission plugins all work without a kubelet (ServiceAccount admission only needs the
    # ServiceAccount, which kube-controller-manager creates), so pods can be created; they stay Pending.
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{etcd_client_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={files.pki / 'apiserver.crt'}",
        f"--tls-private-key-file={files.pki / 'apiserver.key'}",
        f"--client-ca-file={files.pki / 'ca.crt'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={files.pki / 'service-account.pub'}",
        f"--service-account-signing-key-file={files.pki / 'service-account.key'}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # The `kubernetes` Service would point at 127.0.0.1, which Endpoints validation rejects.
        "--endpoint-reconciler-type=none",
        f"--audit-policy-file={files.kube / 'audit-policy.yaml'}",
        f"--audit-log-path={files.kube / 'audit.log'}",
        "--audit-log-mode=blocking",
    ]


def controller_manager_argv(binary: Path, files: ControlPlaneFiles, *, port: int) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={files.pki / 'controller-manager.kubeconfig'}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={files.pki / 'controller-manager.crt'}",
        f"--tls-private-key-file={files.pki / 'controller-manager.key'}",
        f"--controllers={','.join(CONTROLLERS)}",
        "--use-service-account-credentials=false",
        f"--service-account-private-key-file={files.pki / 'service-account.key'}",
        f"--root-ca-file={files.pki / 'ca.crt'}",
        "--leader-elect=false",
        # The namespace controller issues ~100 requests per deleted namespace; the default 20 qps
        # would make every test namespace take seconds to go away.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
    ]


def kubeconfig_yaml(server: str, ca_pem: bytes, client: CertAndKey, user: str) -> str:
    """A self-contained kubeconfig (certificates embedded) for one client-certificate identity."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "sandbox", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert_pem),
                    "client-key-data": b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user}}],
        "current-context": "sandbox",
    }
    return yaml.safe_dump(config, sort_keys=False)


class KubeApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status


class KubeClient:
    """A minimal JSON client for the harness's own needs (readiness, namespaces); tests use kubectl."""

    def __init__(
        self, server: str, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(server)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"server URL needs host and port: {server}")
        self._host, self._port = parts.hostname, parts.port
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._context.load_cert_chain(str(cert_file), str(key_file))
        self._timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return (status, parsed JSON body or text)."""
        connection = http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=self._timeout
        )
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        finally:
            connection.close()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text

    def call(self, method: str, path: str, body: Any = None, *, ok: Sequence[int] = (200, 201, 202)) -> Any:
        status, data = self.request(method, path, body)
        if status not in ok:
            raise KubeApiError(method, path, status, json.dumps(data) if not isinstance(data, str) else data)
        return data

    def exists(self, path: str) -> bool:
        status, data = self.request("GET", path)
        if status == 404:
            return False
        if status != 200:
            raise KubeApiError("GET", path, status, str(data))
        return True


@dataclass(frozen=True)
class AuditEvent:
    """One completed API request as the apiserver's audit log recorded it."""

    username: str
    groups: tuple[str, ...]
    verb: str
    resource: str | None
    subresource: str | None
    api_group: str | None
    namespace: str | None
    name: str | None
    code: int | None
    request_uri: str
    user_agent: str
    timestamp: str

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS

    @classmethod
    def from_json(cls, event: dict[str, Any]) -> AuditEvent:
        user = event.get("user", {})
        ref = event.get("objectRef", {})
        return cls(
            username=user.get("username", ""),
            groups=tuple(user.get("groups", ())),
            verb=event.get("verb", ""),
            resource=ref.get("resource"),
            subresource=ref.get("subresource"),
            api_group=ref.get("apiGroup"),
            namespace=ref.get("namespace"),
            name=ref.get("name"),
            code=event.get("responseStatus", {}).get("code"),
            request_uri=event.get("requestURI", ""),
            user_agent=event.get("userAgent", ""),
            timestamp=event.get("stageTimestamp", ""),
        )


def read_audit_log(path: Path) -> Iterator[AuditEvent]:
    """Events in log order; a partially written last line is skipped."""
    with path.open(encoding="utf-8") as log:
        for line in log:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            yield AuditEvent.from_json(event)
