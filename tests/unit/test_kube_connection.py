"""The operator's Kubernetes credentials: kubeconfig and pod environment to connection facts (pure), kopf's
view of the same facts, and the product importing no ``kubernetes`` package."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ecr_operator.cli import EXIT_FAILURE
from ecr_operator.handlers.startup import connection_info
from ecr_operator.kube import KubeConfigError, KubeConnection
from ecr_operator.kube.connection import (
    connection_from_kubeconfig,
    in_cluster_connection,
    kubeconfig_paths,
    merge_kubeconfigs,
)
from without_kubernetes import PRELUDE

pytestmark = pytest.mark.unit

CA_PEM = "-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nY2VydA==\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\na2V5\n-----END PRIVATE KEY-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(
    user: dict[str, Any], cluster: dict[str, Any] | None = None, context: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One cluster, one user, one current context, as the world and the operator fixture write them."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "world", "cluster": cluster or {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "operator", "user": user}],
        "contexts": [
            {"name": "here", "context": {"cluster": "world", "user": "operator", **(context or {})}}
        ],
        "current-context": "here",
    }


def test_a_client_certificate_kubeconfig_as_the_world_writes_it() -> None:
    config = kubeconfig(
        {"client-certificate-data": b64(CERT_PEM), "client-key-data": b64(KEY_PEM)},
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": b64(CA_PEM)},
    )

    assert connection_from_kubeconfig(config) == KubeConnection(
        server="https://127.0.0.1:6443", ca_pem=CA_PEM, certificate_pem=CERT_PEM, key_pem=KEY_PEM
    )


def test_a_token_kubeconfig_as_the_operator_fixture_writes_it() -> None:
    connection = connection_from_kubeconfig(kubeconfig({"token": "abc.def"}, context={"namespace": "team-a"}))

    assert (connection.token, connection.token_file, connection.namespace) == ("abc.def", None, "team-a")


def test_secrets_stay_out_of_the_connections_repr() -> None:
    connection = connection_from_kubeconfig(kubeconfig({"token": "abc.def", "client-key-data": b64(KEY_PEM)}))

    assert "abc.def" not in repr(connection)
    assert "PRIVATE KEY" not in repr(connection)


def test_a_token_file_wins_over_a_token_and_embedded_data_over_a_file() -> None:
    config = kubeconfig(
        {"token": "stale", "tokenFile": "/run/token", "client-certificate": "/c.crt", "client-key": "/c.key"},
        {
            "server": "https://h:1",
            "certificate-authority": "/ca.crt",
            "certificate-authority-data": b64(CA_PEM),
        },
    )

    connection = connection_from_kubeconfig(config)

    assert (connection.token, connection.token_file) == (None, "/run/token")
    assert (connection.ca_file, connection.ca_pem) == (None, CA_PEM)
    assert (connection.certificate_file, connection.key_file) == ("/c.crt", "/c.key")


def test_insecure_skip_tls_verify_is_honoured() -> None:
    config = kubeconfig({}, {"server": "https://h:1", "insecure-skip-tls-verify": True})

    assert connection_from_kubeconfig(config).insecure


def test_a_context_without_a_user_connects_anonymously() -> None:
    config = kubeconfig({})
    del config["contexts"][0]["context"]["user"]

    connection = connection_from_kubeconfig(config)

    assert (connection.token, connection.certificate_pem, connection.certificate_file) == (None, None, None)


@pytest.mark.parametrize("plugin", ["exec", "auth-provider"])
def test_a_credential_plugin_is_refused_naming_the_field(plugin: str) -> None:
    with pytest.raises(KubeConfigError, match=rf"users\[\]\.user\.{plugin}\b"):
        connection_from_kubeconfig(kubeconfig({plugin: {"command": "aws"}}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda config: config.pop("current-context"), "no current-context"),
        (lambda config: config.update({"current-context": "elsewhere"}), "no context named 'elsewhere'"),
        (lambda config: config["clusters"][0]["cluster"].pop("server"), "cluster 'world' has no server"),
        (lambda config: config["users"].clear(), "no user named 'operator'"),
        (
            lambda config: config["users"][0]["user"].update({"client-key-data": "not base64!"}),
            "client-key-data is not base64",
        ),
    ],
    ids=["no-current-context", "unknown-context", "no-server", "unknown-user", "bad-base64"],
)
def test_an_unusable_kubeconfig_says_what_is_wrong(change: Any, message: str) -> None:
    config = kubeconfig({"client-key-data": b64(KEY_PEM)})
    change(config)

    with pytest.raises(KubeConfigError, match=message):
        connection_from_kubeconfig(config)


def test_merged_kubeconfigs_first_file_wins_and_relative_files_follow_their_file() -> None:
    first = {
        "clusters": [
            {"name": "world", "cluster": {"server": "https://first:1", "certificate-authority": "ca.crt"}}
        ],
        "users": [{"name": "operator", "user": {"tokenFile": "token"}}],
    }
    second = kubeconfig({"token": "second"}, {"server": "https://second:1"})

    merged = merge_kubeconfigs([(Path("/a/config"), first), (Path("/b/config"), second)])
    connection = connection_from_kubeconfig(merged)

    assert merged["current-context"] == "here"  # the first file to set one
    assert (connection.server, connection.ca_file) == ("https://first:1", "/a/ca.crt")
    assert (connection.token_file, connection.token) == ("/a/token", None)


def test_kubeconfig_paths_come_from_kubeconfig_else_the_home_directory() -> None:
    listed = os.pathsep.join(["/a/config", " ", "~/b"])

    assert kubeconfig_paths({"KUBECONFIG": listed, "HOME": "/home/op"}) == [
        Path("/a/config"),
        Path("/home/op/b"),
    ]
    assert kubeconfig_paths({"HOME": "/home/op"}) == [Path("/home/op/.kube/config")]


@pytest.mark.parametrize(
    ("host", "server"),
    [("10.96.0.1", "https://10.96.0.1:443"), ("fd00:10:96::1", "https://[fd00:10:96::1]:443")],
    ids=["ipv4", "ipv6"],
)
def test_in_a_pod_the_service_account_and_the_service_address(host: str, server: str) -> None:
    environ = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "443"}

    connection = in_cluster_connection(environ, Path("/sa"), "ecr-operator")

    assert connection == KubeConnection(
        server=server, ca_file="/sa/ca.crt", token_file="/sa/token", namespace="ecr-operator"
    )


def test_in_a_pod_without_a_service_port_the_loader_says_so() -> None:
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_PORT"):
        in_cluster_connection({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})


def test_kopf_gets_the_same_connection() -> None:
    connection = KubeConnection(
        server="https://h:1",
        ca_pem=CA_PEM,
        certificate_pem=CERT_PEM,
        key_pem=KEY_PEM,
        token="abc",
        namespace="ns",
    )

    info = connection_info(connection)

    assert (info.server, info.ca_data, info.certificate_data, info.private_key_data) == (
        "https://h:1",
        CA_PEM,
        CERT_PEM,
        KEY_PEM,
    )
    assert info.as_http_headers() == {"Authorization": "Bearer abc"}
    assert (info.default_namespace, info.insecure) == ("ns", False)


def test_kopf_without_a_token_sends_no_authorization() -> None:
    assert connection_info(KubeConnection(server="https://h:1")).as_http_headers() == {}


def process_environment(kubeconfig_path: Path, **variables: str) -> dict[str, str]:
    """A child process's whole environment: the kubeconfig, PATH, this PYTHONPATH and ``variables``."""
    environment = {"KUBECONFIG": str(kubeconfig_path), "PATH": os.environ.get("PATH", ""), **variables}
    if "PYTHONPATH" in os.environ:
        environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return environment


def test_the_product_runs_without_the_kubernetes_package(tmp_path: Path) -> None:
    """The entry point, the handlers (kopf's login included) and a Runtime with its Kube adapter, in a
    process where ``kubernetes`` cannot be imported, as in the operator's image."""
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(kubeconfig({"token": "abc"})))
    script = PRELUDE + (
        "import ecr_operator.cli, ecr_operator.handlers\n"
        "from ecr_operator.config import Settings\n"
        "from ecr_operator.kube import Kube\n"
        "from ecr_operator.runtime import Runtime\n"
        "settings = Settings()\n"
        "Runtime.create(settings, Kube.from_settings(settings))\n"
        "print(ecr_operator.handlers.startup.login().server)\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'kubernetes'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=process_environment(config, AWS_DEFAULT_REGION="us-east-1"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["https://127.0.0.1:6443", "[]"]


def test_the_operator_refuses_a_credential_plugin_before_it_starts(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(kubeconfig({"exec": {"command": "aws", "apiVersion": "v1"}})))
    result = subprocess.run(
        [sys.executable, "-m", "ecr_operator", "run"],
        env=process_environment(config, ECR_OPERATOR_LOG_FORMAT="text"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == EXIT_FAILURE
    assert "operator cannot start: kubeconfig user 'operator' authenticates with users[].user.exec" in (
        result.stdout + result.stderr
    )
