"""Kubernetes writes beyond kopf's patch of the handled object: Secrets, ServiceAccounts, Events, status.

The official client blocks, so every call runs in the operator's bounded thread pool. Errors become
``KubeApiError`` carrying the HTTP status and the apiserver's reason only: the client's own exception text
includes response bodies and headers, which must never reach a log.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from ecr_operator.api.common import GROUP, VERSION

T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "ecr-operator"
REPORTING_COMPONENT = "ecr-operator"


class KubeApiError(Exception):
    """A Kubernetes API request failed; ``status`` is 0 for network errors. The message holds no body."""

    def __init__(self, status: int, reason: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status} {reason}" if status else f"{what}: {reason}")
        self.status = status
        self.reason = reason

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True)
class ObjectReference:
    """What an Event is about."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    uid: str | None = None


def load_api_client(connections: int) -> kubernetes.client.ApiClient:
    """A client for the pod's own service account, or for KUBECONFIG outside a cluster."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return kubernetes.client.ApiClient(configuration)


class KubeApi:
    """The few calls the pull-secret controller makes; each is idempotent or guarded by a precondition."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client = client
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._instance = socket.gethostname()

    def close(self) -> None:
        self._client.close()

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> str:
        """Create a Secret; returns its UID."""
        created = await call_api(
            f"create Secret {namespace}/{body['metadata']['name']}",
            self._core.create_namespaced_secret,
            namespace,
            dict(body),
            field_manager=FIELD_MANAGER,
        )
        return str(created.metadata.uid)

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str:
        """Merge-patch a Secret in place; returns its UID."""
        patched = await call_api(
            f"patch Secret {namespace}/{name}",
            self._core.patch_namespaced_secret,
            name,
            namespace,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )
        return str(patched.metadata.uid)

    async def secret_labels(self, namespace: str, name: str) -> tuple[str, dict[str, str]]:
        """UID and labels of a Secret (to tell whether a name is taken by someone else's)."""
        secret = await call_api(
            f"read Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
        )
        return str(secret.metadata.uid), dict(secret.metadata.labels or {})

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete a Secret, only if it is still the object with ``uid``; an absent one is fine."""
        try:
            await call_api(
                f"delete Secret {namespace}/{name}",
                self._core.delete_namespaced_secret,
                name,
                namespace,
                body={"preconditions": {"uid": uid}},
            )
        except KubeApiError as error:
            if not error.not_found:
                raise

    async def patch_service_account(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await call_api(
            f"patch ServiceAccount {namespace}/{name}",
            self._core.patch_namespaced_service_account,
            name,
            namespace,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    async def patch_repository_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await call_api(
            f"patch EcrRepository {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            "ecrrepositories",
            name,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    async def post_event(self, about: ObjectReference, event_type: str, reason: str, message: str) -> None:
        """Post an Event. One about a cluster-scoped object (a Namespace) lives in ``default``: the apiserver
        accepts no other place, and ``kubectl describe`` looks for it there."""
        namespace = about.namespace or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {"apiVersion": about.api_version, "kind": about.kind, "name": about.name}
        if about.namespace:
            involved["namespace"] = about.namespace
        if about.uid:
            involved["uid"] = about.uid
        body = {
            "metadata": {"generateName": f"{about.name}.", "namespace": namespace},
            "involvedObject": involved,
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await call_api(
            f"post Event on {about.kind} {about.name}", self._core.create_namespaced_event, namespace, body
        )


async def call_api(what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one blocking Kubernetes client call in the thread pool; its error keeps status and reason only
    (a response body can carry a Secret's data)."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except ApiException as error:
        raise KubeApiError(int(error.status or 0), str(error.reason or "error"), what) from None
    except HTTPError as error:
        raise KubeApiError(0, type(error).__name__, what) from None
