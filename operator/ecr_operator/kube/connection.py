"""Where the apiserver is and how the operator proves who it is: one loader for the Kube adapter and kopf.

In a pod: the service account's token and CA, and ``KUBERNETES_SERVICE_HOST``/``PORT``. Elsewhere: the
current context of the kubeconfig (``KUBECONFIG``, else ``~/.kube/config``), with a token, a token file or a
client certificate. An ``exec`` or ``auth-provider`` user (a plugin that prints credentials) is refused: the
operator runs no programs to authenticate. Turning a kubeconfig into ``KubeConnection`` is pure; only
``load_connection``, ``ssl_context`` and ``BearerToken`` touch files.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIRECTORY = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = "~/.kube/config"
# Fields naming files, resolved against the directory of the kubeconfig that holds them (as kubectl does).
CLUSTER_FILE_FIELDS = ("certificate-authority",)
USER_FILE_FIELDS = ("client-certificate", "client-key", "tokenFile")
REFUSED_USER_FIELDS = ("exec", "auth-provider")


class KubeConfigError(Exception):
    """The operator's Kubernetes credentials cannot be found or used; the message names the field."""


@dataclass(frozen=True)
class KubeConnection:
    """The facts of one connection to an apiserver. Certificates and keys are PEM text or a file path,
    never both; a token file wins over a token and is re-read whenever it changes (``BearerToken``)."""

    server: str
    ca_file: str | None = None
    ca_pem: str | None = None
    certificate_file: str | None = None
    certificate_pem: str | None = None
    key_file: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    insecure: bool = False
    namespace: str | None = None
    """The namespace of the pod or of the kubeconfig context (kopf posts cluster objects' Events there)."""


def in_cluster_connection(
    environ: Mapping[str, str], directory: Path = SERVICE_ACCOUNT_DIRECTORY, namespace: str | None = None
) -> KubeConnection:
    """The pod's own service account: the apiserver's Service address from the environment."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError(
            "in a pod, KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set"
        )
    return KubeConnection(
        server=f"https://{f'[{host}]' if ':' in host else host}:{port}",
        ca_file=str(directory / "ca.crt"),
        token_file=str(directory / "token"),
        namespace=namespace or None,
    )


def kubeconfig_paths(environ: Mapping[str, str]) -> list[Path]:
    """The kubeconfig files to merge, in order: ``KUBECONFIG`` (a path list), else ``~/.kube/config``."""
    listed = [part.strip() for part in environ.get("KUBECONFIG", "").split(os.pathsep) if part.strip()]
    home = environ.get("HOME")
    return [
        Path(home, path[2:]) if home and path.startswith("~/") else Path(path).expanduser()
        for path in (listed or [DEFAULT_KUBECONFIG])
    ]


def merge_kubeconfigs(documents: Sequence[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    """One kubeconfig from several, as kubectl merges ``KUBECONFIG``: the first file to name a cluster,
    user or context (or to set ``current-context``) wins; relative file paths are relative to the file."""
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    for path, document in documents:
        if "current-context" not in merged and document.get("current-context"):
            merged["current-context"] = document["current-context"]
        for section, inner, file_fields in (
            ("clusters", "cluster", CLUSTER_FILE_FIELDS),
            ("users", "user", USER_FILE_FIELDS),
            ("contexts", "context", ()),
        ):
            known = {entry.get("name") for entry in merged[section]}
            for entry in document.get(section) or []:
                if entry.get("name") in known:
                    continue
                body = dict(entry.get(inner) or {})
                for key in file_fields:
                    if body.get(key):
                        body[key] = str(path.parent / Path(body[key]).expanduser())
                merged[section].append({"name": entry.get("name"), inner: body})
                known.add(entry.get("name"))
    return merged


def connection_from_kubeconfig(config: Mapping[str, Any]) -> KubeConnection:
    """The connection of the kubeconfig's current context."""
    context_name = config.get("current-context")
    if not context_name:
        raise KubeConfigError("the kubeconfig sets no current-context")
    context = _named(config, "contexts", "context", context_name)
    cluster = _named(config, "clusters", "cluster", context.get("cluster"))
    user_name = context.get("user")
    user = _named(config, "users", "user", user_name) if user_name else {}
    for refused in REFUSED_USER_FIELDS:
        if refused in user:
            raise KubeConfigError(
                f"kubeconfig user {user_name!r} authenticates with users[].user.{refused}, a plugin the "
                "operator does not run: give it a token, tokenFile or client certificate instead"
            )
    server = cluster.get("server")
    if not server:
        raise KubeConfigError(f"kubeconfig cluster {context.get('cluster')!r} has no server")
    ca_pem = _pem(cluster, "certificate-authority-data")
    certificate_pem = _pem(user, "client-certificate-data")
    key_pem = _pem(user, "client-key-data")
    return KubeConnection(
        server=str(server).rstrip("/"),
        # Embedded data overrides a file named beside it, as in kubectl.
        ca_file=None if ca_pem else cluster.get("certificate-authority") or None,
        ca_pem=ca_pem,
        certificate_file=None if certificate_pem else user.get("client-certificate") or None,
        certificate_pem=certificate_pem,
        key_file=None if key_pem else user.get("client-key") or None,
        key_pem=key_pem,
        token=None if user.get("tokenFile") else user.get("token") or None,
        token_file=user.get("tokenFile") or None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=context.get("namespace") or None,
    )


def _named(config: Mapping[str, Any], section: str, inner: str, name: object) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return dict(entry.get(inner) or {})
    raise KubeConfigError(f"the kubeconfig has no {inner} named {name!r} (in {section})")


def _pem(entry: Mapping[str, Any], key: str) -> str | None:
    """A kubeconfig ``*-data`` field (base64 of PEM) as PEM text."""
    data = entry.get(key)
    if not data:
        return None
    try:
        return base64.b64decode(str(data), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise KubeConfigError(f"kubeconfig field {key} is not base64 of PEM text") from None


# --- the files ---------------------------------------------------------------------------------------------


def load_connection(environ: Mapping[str, str] | None = None) -> KubeConnection:
    """The pod's service account when running in one, else the kubeconfig (blocking: it reads files)."""
    environ = os.environ if environ is None else environ
    if environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT_DIRECTORY / "token").is_file():
        namespace_file = SERVICE_ACCOUNT_DIRECTORY / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
        return in_cluster_connection(environ, SERVICE_ACCOUNT_DIRECTORY, namespace)
    documents = []
    for path in kubeconfig_paths(environ):
        if not path.is_file():  # kubectl skips a listed file that does not exist
            continue
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise KubeConfigError(f"cannot read the kubeconfig {path}: {type(error).__name__}") from None
        if not isinstance(document, dict):
            raise KubeConfigError(f"the kubeconfig {path} is not a mapping")
        documents.append((path, document))
    if not documents:
        raise KubeConfigError(
            "no Kubernetes credentials: not in a pod, and no kubeconfig (KUBECONFIG or ~/.kube/config)"
        )
    return connection_from_kubeconfig(merge_kubeconfigs(documents))


def ssl_context(connection: KubeConnection) -> ssl.SSLContext:
    """TLS that trusts the connection's CA (the system's when it names none) and presents its client
    certificate. ``ssl`` loads a certificate chain from files only: embedded ones pass through a private
    temporary directory that is gone when this returns."""
    try:
        context = ssl.create_default_context(cafile=connection.ca_file, cadata=connection.ca_pem)
        if connection.certificate_file or connection.certificate_pem:
            with tempfile.TemporaryDirectory(prefix="ecr-operator-tls-") as directory:
                certificate = _file(
                    directory, "client.crt", connection.certificate_file, connection.certificate_pem
                )
                if certificate:
                    key = _file(directory, "client.key", connection.key_file, connection.key_pem)
                    context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError, ValueError) as error:
        raise KubeConfigError(f"cannot load the connection's TLS files: {error}") from None
    if connection.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _file(directory: str, name: str, path: str | None, pem: str | None) -> str | None:
    if pem is None:
        return path
    written = Path(directory, name)
    written.touch(mode=0o600)
    written.write_text(pem)
    return str(written)


class BearerToken:
    """The connection's bearer token. A token file is re-read whenever it changes: the kubelet rotates a
    pod's bound service account token about hourly (an atomic swap, so inode and mtime change)."""

    def __init__(self, connection: KubeConnection) -> None:
        self._path = connection.token_file
        self._value = connection.token
        self._stamp: tuple[int, int, int] | None = None

    def current(self) -> str | None:
        """The token to send now (one ``stat`` per call when it comes from a file); raises OSError when the
        token file cannot be read."""
        if self._path is None:
            return self._value
        found = os.stat(self._path)
        stamp = (found.st_ino, found.st_mtime_ns, found.st_size)
        if stamp != self._stamp:
            self._value = Path(self._path).read_text().strip() or None
            self._stamp = stamp
        return self._value
