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

from ecr_operator.api.common import ResourceInfo
from ecr_operator.config import Settings
from ecr_operator.kube.client import ApiClient, KubeApiError, api_path
from ecr_operator.kube.connection import load_connection
from ecr_operator.kube.managed_fields import STATUS_SUBRESOURCE, claim_status_fields

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


def core_object_path(namespace: str, plural: str, name: str | None = None) -> str:
    """The API path of a namespaced core object (or of its collection, without ``name``)."""
    return api_path("api", "v1", "namespaces", namespace, plural, *([name] if name else []))


def custom_object_path(
    resource: ResourceInfo, namespace: str, name: str | None = None, *subresource: str
) -> str:
    """The API path of a custom object, its subresource, or (without ``name``) its collection."""
    return api_path(
        "apis",
        resource.group,
        resource.version,
        "namespaces",
        namespace,
        resource.plural,
        *([name] if name else []),
        *subresource,
    )


class Kube:
    """The operator's Kubernetes adapter: one ApiClient (one aiohttp session, opened in ``start``, closed
    in ``stop``), errors as ``KubeApiError``. Each write is idempotent or guarded by a precondition."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self._instance = socket.gethostname()

    @classmethod
    def from_settings(cls, settings: Settings) -> Kube:
        """The adapter for this process (blocking: it reads the credentials). The connection limit leaves
        room for every pull-secret write and two calls per mirror sync in flight."""
        return cls(
            ApiClient(load_connection(), settings.aws_max_concurrency + settings.mirror_concurrency * 2 + 2)
        )

    async def start(self) -> None:
        await self._api.start()

    async def stop(self) -> None:
        await self._api.close()

    # --- read -----------------------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        """The Secret ``name`` of ``namespace``, or None when it does not exist."""
        try:
            secret = await self._api.request(
                f"read Secret {namespace}/{name}", "GET", core_object_path(namespace, "secrets", name)
            )
        except KubeApiError as error:
            if error.not_found:
                return None
            raise
        metadata = secret.get("metadata") or {}
        return SecretView(
            uid=str(metadata.get("uid")),
            type=str(secret.get("type") or ""),
            labels=dict(metadata.get("labels") or {}),
            data=dict(secret.get("data") or {}),
        )

    async def read_object(self, resource: ResourceInfo, namespace: str, name: str) -> dict[str, Any] | None:
        """The custom object ``name`` of kind ``resource`` in ``namespace``, or None."""
        try:
            return await self._api.request(
                f"read {resource.kind} {namespace}/{name}",
                "GET",
                custom_object_path(resource, namespace, name),
            )
        except KubeApiError as error:
            if error.not_found:
                return None
            raise

    # --- create ---------------------------------------------------------------------------------------

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> str:
        """Create a Secret; returns its UID. A taken name raises ``KubeApiError`` (``conflict``)."""
        created = await self._api.request(
            f"create Secret {namespace}/{body['metadata']['name']}",
            "POST",
            core_object_path(namespace, "secrets"),
            body=dict(body),
            query={"fieldManager": FIELD_MANAGER},
        )
        return str(created["metadata"]["uid"])

    async def create_object(
        self, resource: ResourceInfo, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a custom object; returns it as stored. A taken name raises ``KubeApiError`` (conflict)."""
        return await self._api.request(
            f"create {resource.kind} {namespace}/{body['metadata']['name']}",
            "POST",
            custom_object_path(resource, namespace),
            body=dict(body),
            query={"fieldManager": FIELD_MANAGER},
        )

    # --- patch ----------------------------------------------------------------------------------------

    async def patch_secret(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str:
        """Merge-patch a Secret in place (never delete and create: no gap); returns its UID."""
        patched = await self._merge_patch(
            f"patch Secret {namespace}/{name}", core_object_path(namespace, "secrets", name), patch
        )
        return str(patched["metadata"]["uid"])

    async def patch_service_account(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch a ServiceAccount (its imagePullSecrets)."""
        await self._merge_patch(
            f"patch ServiceAccount {namespace}/{name}",
            core_object_path(namespace, "serviceaccounts", name),
            patch,
        )

    async def _merge_patch(self, what: str, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._api.request(
            what,
            "PATCH",
            path,
            body=dict(patch),
            content_type=MERGE_PATCH,
            query={"fieldManager": FIELD_MANAGER},
        )

    async def replace_spec(
        self, resource: ResourceInfo, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Set the whole spec of a custom object, so that fields removed from the desired spec are removed
        there too; returns the object as stored. The apiserver's validation refusing it is a 400 or 422."""
        return await self._json_patch(
            f"update {resource.kind} {namespace}/{name}",
            resource,
            namespace,
            name,
            [{"op": "replace", "path": "/spec", "value": dict(spec)}],
            field_manager=FIELD_MANAGER,
        )

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
        return await self._api.request(
            f"apply {resource.kind} {namespace}/{name} status",
            "PATCH",
            custom_object_path(resource, namespace, name, STATUS_SUBRESOURCE),
            body=body,
            content_type=APPLY_PATCH,
            query={"fieldManager": status_field_manager(manager), "force": "true"},
        )

    async def _current(self, resource: ResourceInfo, namespace: str, name: str) -> dict[str, Any]:
        """The object as stored, read with the ``patch`` verb (a patch that only tests its name changes
        nothing): the chart grants no ``get`` on ImageMirrors, whose controller reads them from its watch."""
        return await self._json_patch(
            f"read {resource.kind} {namespace}/{name}",
            resource,
            namespace,
            name,
            [{"op": "test", "path": "/metadata/name", "value": name}],
        )

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
        # The apiserver answers every namespaced object with both.
        namespace, name = str(metadata["namespace"]), str(metadata["name"])
        try:
            await self._json_patch(
                f"claim {resource.kind} {namespace}/{name} status fields",
                resource,
                namespace,
                name,
                [
                    {
                        "op": "test",
                        "path": "/metadata/resourceVersion",
                        "value": metadata.get("resourceVersion"),
                    },
                    {"op": "replace", "path": "/metadata/managedFields", "value": claimed},
                ],
            )
        except KubeApiError as error:
            if error.status in (409, 422):  # the test failed: the object moved on
                return False
            raise
        return True

    async def _json_patch(
        self,
        what: str,
        resource: ResourceInfo,
        namespace: str,
        name: str,
        operations: list[dict[str, Any]],
        *,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """Send a JSON patch (RFC 6902) to a custom object; returns the object as stored."""
        return await self._api.request(
            what,
            "PATCH",
            custom_object_path(resource, namespace, name),
            body=operations,
            content_type=JSON_PATCH,
            query={"fieldManager": field_manager} if field_manager else None,
        )

    # --- delete ---------------------------------------------------------------------------------------

    async def delete_secret(self, namespace: str, name: str, uid: str) -> None:
        """Delete a Secret, only if it is still the object with ``uid``; an absent one is fine."""
        try:
            await self._api.request(
                f"delete Secret {namespace}/{name}",
                "DELETE",
                core_object_path(namespace, "secrets", name),
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
        await self._api.request(
            f"post Event on {about.kind} {about.name}",
            "POST",
            core_object_path(namespace, "events"),
            body=body,
        )
