"""Every call the operator makes to the Kubernetes API beyond kopf's watches, organised by verb.

Status is written one way only: ``apply_status``, a server-side apply of the fields one controller owns,
under that controller's own field manager. The apiserver merges ``status.conditions`` per ``type`` (the
CRDs declare it a map-list), so one controller's write never drops a condition another one owns.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes.client

from ecr_operator.api.common import ResourceInfo
from ecr_operator.config import Settings
from ecr_operator.kube.client import KubeApiError, call_api, load_api_client
from ecr_operator.kube.managed_fields import claim_status_fields

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON
FIELD_MANAGER = "ecr-operator"
REPORTING_COMPONENT = "ecr-operator"


@dataclass(frozen=True)
class ObjectReference:
    """What an Event is about."""

    api_version: str
    kind: str
    name: str
    namespace: str | None
    uid: str | None = None


@dataclass(frozen=True)
class SecretView:
    """What the operator reads of a Secret: enough to tell whose it is and to use its (base64) data."""

    uid: str
    type: str
    labels: Mapping[str, str]
    data: Mapping[str, str]


def status_field_manager(manager: str) -> str:
    """The field manager of one controller's status writes, e.g. ``ecr-operator-repository``."""
    return f"{FIELD_MANAGER}-{manager}"


class Kube:
    """The operator's Kubernetes adapter: one ApiClient, every call in the thread pool, errors as
    ``KubeApiError``. Each write is idempotent or guarded by a precondition."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._client = client
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._instance = socket.gethostname()

    @classmethod
    def from_settings(cls, settings: Settings) -> Kube:
        """The adapter for this process (blocking: it reads the kubeconfig). The pool has room for every
        pull-secret write and two calls per mirror sync in flight, as the two clients it replaces had."""
        return cls(load_api_client(settings.aws_max_concurrency + settings.mirror_concurrency * 2 + 2))

    def close(self) -> None:
        self._client.close()

    # --- read -----------------------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        """The Secret ``name`` of ``namespace``, or None when it does not exist."""
        try:
            secret = await call_api(
                f"read Secret {namespace}/{name}", self._core.read_namespaced_secret, name, namespace
            )
        except KubeApiError as error:
            if error.not_found:
                return None
            raise
        return SecretView(
            uid=str(secret.metadata.uid),
            type=str(secret.type or ""),
            labels=dict(secret.metadata.labels or {}),
            data=dict(secret.data or {}),
        )

    async def read_object(self, resource: ResourceInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """The custom object ``name`` of kind ``resource`` in ``namespace``, or None."""
        try:
            found = await call_api(
                f"read {resource.kind} {namespace}/{name}",
                self._custom.get_namespaced_custom_object,
                resource.group,
                resource.version,
                namespace,
                resource.plural,
                name,
            )
        except KubeApiError as error:
            if error.not_found:
                return None
            raise
        return dict(found)

    # --- create ---------------------------------------------------------------------------------------

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> str:
        """Create a Secret; returns its UID. A taken name raises ``KubeApiError`` (``conflict``)."""
        created = await call_api(
            f"create Secret {namespace}/{body['metadata']['name']}",
            self._core.create_namespaced_secret,
            namespace,
            dict(body),
            field_manager=FIELD_MANAGER,
        )
        return str(created.metadata.uid)

    async def create_object(
        self, resource: ResourceInfo, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a custom object; returns it as stored. A taken name raises ``KubeApiError`` (conflict)."""
        created = await call_api(
            f"create {resource.kind} {namespace}/{body['metadata']['name']}",
            self._custom.create_namespaced_custom_object,
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            dict(body),
            field_manager=FIELD_MANAGER,
        )
        return dict(created)

    # --- patch ----------------------------------------------------------------------------------------

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str:
        """Merge-patch a Secret in place (never delete and create: no gap); returns its UID."""
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

    async def patch_service_account(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch a ServiceAccount (its imagePullSecrets)."""
        await call_api(
            f"patch ServiceAccount {namespace}/{name}",
            self._core.patch_namespaced_service_account,
            name,
            namespace,
            dict(patch),
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    async def replace_spec(
        self, resource: ResourceInfo, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Set the whole spec of a custom object, so that fields removed from the desired spec are removed
        there too; returns the object as stored. The apiserver's validation refusing it is a 400 or 422."""
        patched = await call_api(
            f"update {resource.kind} {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            [{"op": "replace", "path": "/spec", "value": dict(spec)}],
            field_manager=FIELD_MANAGER,
            _content_type=JSON_PATCH,
        )
        return dict(patched)

    async def apply_status(
        self, resource: ResourceInfo, namespace: str, name: str, manager: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply ``status``: exactly the status fields (conditions included) the controller
        ``manager`` owns; returns the whole status as stored.

        A field (or condition type) this manager applied before and leaves out now is removed; fields other
        managers own are left alone. ``force`` takes over a field someone else last set instead of failing
        with a conflict, and a field this manager applies is then made its own alone (``managed_fields``),
        so that leaving it out later still removes it."""
        try:
            applied = await self._apply_status(resource, namespace, name, manager, status)
        except KubeApiError as error:
            # Leaving out a condition whose key a writer outside the operator co-owns leaves a bare ``type``
            # the schema refuses: claim what this manager owned, and apply again.
            if error.status != 422:
                raise
            found = await self._current(resource, namespace, name)
            if not await self._claim_status_fields(resource, found, manager):
                raise
            applied = await self._apply_status(resource, namespace, name, manager, status)
        else:
            await self._claim_status_fields(resource, applied, manager)
        return dict(applied.get("status") or {})

    async def _apply_status(
        self, resource: ResourceInfo, namespace: str, name: str, manager: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{resource.group}/{resource.version}",
            "kind": resource.kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        applied = await call_api(
            f"apply {resource.kind} {namespace}/{name} status",
            self._custom.patch_namespaced_custom_object_status,
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            body,
            field_manager=status_field_manager(manager),
            force=True,
            _content_type=APPLY_PATCH,
        )
        return dict(applied)

    async def _current(self, resource: ResourceInfo, namespace: str, name: str) -> dict[str, Any]:
        """The object as stored, read with the ``patch`` verb (a patch that only tests its name changes
        nothing): the chart grants no ``get`` on ImageMirrors, whose controller reads them from its watch."""
        current = await call_api(
            f"read {resource.kind} {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            [{"op": "test", "path": "/metadata/name", "value": name}],
            _content_type=JSON_PATCH,
        )
        return dict(current)

    async def _claim_status_fields(
        self, resource: ResourceInfo, found: Mapping[str, Any], manager: str
    ) -> bool:
        """Take the status fields ``manager`` owns away from writers outside the operator; False when none
        shared one, or the object changed meanwhile (the next apply tries again)."""
        metadata = found.get("metadata") or {}
        claimed = claim_status_fields(
            metadata.get("managedFields") or [], status_field_manager(manager), status_field_manager("")
        )
        if claimed is None:
            return False
        namespace, name = metadata.get("namespace"), metadata.get("name")
        try:
            await call_api(
                f"claim {resource.kind} {namespace}/{name} status fields",
                self._custom.patch_namespaced_custom_object,
                resource.group,
                resource.version,
                namespace,
                resource.plural,
                name,
                [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": metadata.get("resourceVersion"),
                    },
                    {"op": "replace", "path": "/metadata/managedFields", "value": claimed},
                ],
                _content_type=JSON_PATCH,
            )
        except KubeApiError as error:
            if error.status in (409, 422):  # the test failed: the object moved on
                return False
            raise
        return True

    # --- delete ---------------------------------------------------------------------------------------

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

    # --- post -----------------------------------------------------------------------------------------

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
