"""The Kubernetes adapter against the test world's real apiserver, as the chart's ServiceAccount.

Every method runs once under the chart's RBAC (the ``chart_identity`` fixture fails the session on any
403), and the race that made status ownership necessary is replayed: two controllers writing conditions of
one EcrRepository, interleaved in both orders and concurrently. With server-side apply neither ever loses
the other's condition; with the whole-list merge patch kopf sent, the same interleaving drops
``PullSecretReady`` every time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web

import ecr_operator
from ecr_operator.api.common import API_VERSION, ResourceInfo
from ecr_operator.api.mirror import IMAGE_MIRROR
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.kube import (
    Kube,
    KubeApiError,
    KubeConnection,
    ObjectReference,
    load_connection,
    status_field_manager,
)
from ecr_operator.kube.client import ApiClient
from ecr_operator.kube.connection import in_cluster_connection
from ecr_operator.kube.objects import APPLY_PATCH, MERGE_PATCH, core_object_path, custom_object_path
from ecr_sandbox.world import World
from operator_fixture import ChartIdentity
from without_kubernetes import PRELUDE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPOSITORY = "repository"
PULL_SECRETS = "pullsecrets"
READY, SYNCED, PULL_SECRET_READY = "Ready", "Synced", "PullSecretReady"
ROUNDS = 25  # per order; the concurrent test runs as many applies per writer
DIGEST = "sha256:" + "a" * 64


def condition(type_: str, round_: int) -> dict[str, Any]:
    """A condition whose reason names the round that wrote it, so a stale or lost one is visible."""
    return {
        "type": type_,
        "status": "True" if round_ % 2 else "False",
        "reason": f"Round{round_}",
        "message": f"written in round {round_}",
        "observedGeneration": 1,
        "lastTransitionTime": f"2026-01-01T00:{round_ // 60:02d}:{round_ % 60:02d}Z",
    }


def repository_status(round_: int) -> dict[str, Any]:
    """What the repository controller owns."""
    return {
        "observedGeneration": 1,
        "repositoryUri": f"registry.invalid/app{round_}",
        "conditions": [condition(READY, round_), condition(SYNCED, round_)],
    }


def pull_secret_status(round_: int) -> dict[str, Any]:
    """What the pull-secret controller owns: one condition."""
    return {"conditions": [condition(PULL_SECRET_READY, round_)]}


def owned_condition_types(fields: Mapping[str, Any]) -> set[str]:
    """The condition types a managedFields entry owns (its keys look like ``k:{"type":"Ready"}``)."""
    conditions = fields.get("f:status", {}).get("f:conditions", {})
    return {json.loads(key.removeprefix("k:"))["type"] for key in conditions if key.startswith("k:")}


def status_refusals(world: World, identity: ChartIdentity, namespace: str) -> int:
    """How many status writes of the adapter in ``namespace`` the apiserver refused as invalid."""
    return sum(
        1
        for event in world.audit_events(identity.username)
        if event.namespace == namespace and event.subresource == "status" and event.code == 422
    )


def reasons(status: Mapping[str, Any]) -> dict[str, str]:
    return {entry["type"]: entry["reason"] for entry in status.get("conditions") or []}


def api_client(kubeconfig: Path) -> ApiClient:
    return ApiClient(load_connection({"KUBECONFIG": str(kubeconfig)}), 4)


@contextlib.asynccontextmanager
async def started(api: ApiClient) -> AsyncIterator[Kube]:
    adapter = Kube(api)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


def chart_token(chart_identity: ChartIdentity) -> str:
    """The chart ServiceAccount's token, from the kubeconfig the operator fixture wrote."""
    return str(yaml.safe_load(chart_identity.kubeconfig.read_text())["users"][0]["user"]["token"])


@pytest.fixture
async def kube(chart_identity: ChartIdentity) -> AsyncIterator[Kube]:
    """The adapter as the operator runs it: the chart's ServiceAccount, the chart's ClusterRole."""
    async with started(api_client(chart_identity.kubeconfig)) as adapter:
        yield adapter


@pytest.fixture
async def admin(world: World) -> AsyncIterator[ApiClient]:
    """Cluster admin (a client certificate), for what the operator may not do (create ImageMirrors,
    ServiceAccounts), sending raw requests through the adapter's own client."""
    client = api_client(world.kubeconfig)
    await client.start()
    yield client
    await client.close()


async def new_repository(kube: Kube, namespace: str, name: str = "app") -> dict[str, Any]:
    return await kube.create_object(
        ECR_REPOSITORY,
        namespace,
        {
            "apiVersion": API_VERSION,
            "kind": ECR_REPOSITORY.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"registry": {"region": "us-east-1"}},
        },
    )


async def read_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    found = await kube.read_object(ECR_REPOSITORY, namespace, name)
    assert found is not None
    return dict(found.get("status") or {})


async def new_mirror(admin: ApiClient, namespace: str, name: str = "nginx") -> None:
    """An ImageMirror, created as admin: the operator itself never creates one."""
    await admin.request(
        "create ImageMirror",
        "POST",
        custom_object_path(IMAGE_MIRROR, namespace),
        body={
            "apiVersion": API_VERSION,
            "kind": IMAGE_MIRROR.kind,
            "metadata": {"name": name},
            "spec": {
                "source": {"image": "registry.invalid/library/nginx"},
                "tags": {"list": ["1.27"]},
                "destination": {"repositoryRef": {"name": "app"}},
            },
        },
    )


async def outside_apply(
    admin: ApiClient, resource: ResourceInfo, namespace: str, name: str, status: Mapping[str, Any]
) -> None:
    """Someone else's server-side apply of a few status fields (``kubectl apply --server-side``)."""
    await admin.request(
        "outside apply",
        "PATCH",
        custom_object_path(resource, namespace, name, "status"),
        body={"apiVersion": API_VERSION, "kind": resource.kind, "metadata": {"name": name}, "status": status},
        content_type=APPLY_PATCH,
        query={"fieldManager": "kubectl", "force": "true"},
    )


async def kopf_style_write(
    admin: ApiClient,
    namespace: str,
    name: str,
    snapshot: Mapping[str, Any],
    own: Mapping[str, Any],
) -> None:
    """The old way: the handler's snapshot of the conditions with its own replaced, sent as a merge patch
    of the whole list without a resourceVersion (what kopf does with ``patch.status``)."""
    mine = {entry["type"] for entry in own["conditions"]}
    kept = [entry for entry in snapshot.get("conditions") or [] if entry["type"] not in mine]
    await admin.request(
        "kopf-style status write",
        "PATCH",
        custom_object_path(ECR_REPOSITORY, namespace, name, "status"),
        body={"status": {**own, "conditions": [*kept, *own["conditions"]]}},
        content_type=MERGE_PATCH,
    )


# --- every method once ----------------------------------------------------------------------------------


def test_the_adapter_of_a_process_comes_from_its_kubeconfig_and_settings(
    world: World, chart_identity: ChartIdentity, namespace: str
) -> None:
    """``Kube.from_settings`` as ``ecr-operator run`` calls it, in a process of its own without the
    ``kubernetes`` package: KUBECONFIG from the environment, the connection limit from the settings, and
    every request naming the operator and its version as its User-Agent."""
    script = PRELUDE + (
        "import asyncio, sys\n"
        "from ecr_operator.config import Settings\n"
        "from ecr_operator.kube import Kube\n"
        "kube = Kube.from_settings(Settings())\n"
        "print(kube._api.connection_limit)\n"
        "async def main():\n"
        "    await kube.start()\n"
        "    try:\n"
        "        print(await kube.read_secret(sys.argv[1], 'absent'))\n"
        "    finally:\n"
        "        await kube.stop()\n"
        "asyncio.run(main())\n"
    )
    environment = {**os.environ, "KUBECONFIG": str(chart_identity.kubeconfig)}
    result = subprocess.run(
        [sys.executable, "-c", script, namespace], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["26", "None"]  # 16 AWS calls + 2 per mirror slot (4) + 2
    [read] = [
        event
        for event in world.audit_events(chart_identity.username)
        if event.namespace == namespace and event.name == "absent"
    ]
    assert read.user_agent == f"ecr-operator/{ecr_operator.__version__}"


async def test_a_token_file_is_read_again_when_the_kubelet_rotates_it(
    chart_identity: ChartIdentity, namespace: str, tmp_path: Path
) -> None:
    """A bound service account token is replaced about hourly: the next request sends the new one."""
    token_file = tmp_path / "token"
    token_file.write_text("expired-token")
    config = yaml.safe_load(chart_identity.kubeconfig.read_text())
    config["users"][0]["user"] = {"tokenFile": "token"}  # relative to the kubeconfig, as kubectl reads it
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))

    async with started(api_client(tmp_path / "kubeconfig")) as adapter:
        with pytest.raises(KubeApiError) as refused:
            await adapter.read_secret(namespace, "absent")
        assert refused.value.status == 401
        rotated = tmp_path / "token.new"  # the kubelet's way: a new file swapped in at once
        rotated.write_text(chart_token(chart_identity))
        rotated.replace(token_file)

        assert await adapter.read_secret(namespace, "absent") is None


async def test_in_a_pod_the_service_account_and_the_service_address_connect(
    world: World, chart_identity: ChartIdentity, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(chart_token(chart_identity))
    (tmp_path / "ca.crt").write_bytes(world.ca_bundle.read_bytes())
    apiserver = urlsplit(world.apiserver_url)
    environ = {
        "KUBERNETES_SERVICE_HOST": str(apiserver.hostname),
        "KUBERNETES_SERVICE_PORT": str(apiserver.port),
    }

    async with started(ApiClient(in_cluster_connection(environ, tmp_path), 2)) as adapter:
        assert await adapter.read_secret(namespace, "absent") is None


async def test_secret_create_read_patch_and_delete_with_the_uid_precondition(
    kube: Kube, namespace: str
) -> None:
    data = {".dockerconfigjson": base64.b64encode(b'{"auths": {}}').decode()}
    uid = await kube.create_secret(
        namespace,
        {
            "metadata": {"name": "pull", "labels": {"app.kubernetes.io/managed-by": "ecr-operator"}},
            "type": "kubernetes.io/dockerconfigjson",
            "data": data,
        },
    )
    with pytest.raises(KubeApiError) as taken:
        await kube.create_secret(namespace, {"metadata": {"name": "pull"}, "data": data})
    assert taken.value.conflict

    found = await kube.read_secret(namespace, "pull")
    assert found is not None
    assert (found.uid, found.type, dict(found.labels), dict(found.data)) == (
        uid,
        "kubernetes.io/dockerconfigjson",
        {"app.kubernetes.io/managed-by": "ecr-operator"},
        data,
    )
    assert await kube.read_secret(namespace, "absent") is None

    patched_data = {".dockerconfigjson": base64.b64encode(b'{"auths": {"a": {}}}').decode()}
    assert await kube.patch_secret(namespace, "pull", {"data": patched_data}) == uid
    patched = await kube.read_secret(namespace, "pull")
    assert patched is not None
    assert dict(patched.data) == patched_data

    with pytest.raises(KubeApiError) as stale:
        await kube.delete_secret(namespace, "pull", "00000000-0000-0000-0000-000000000000")
    assert stale.value.conflict  # the precondition protects a Secret recreated under the same name
    assert await kube.read_secret(namespace, "pull") is not None
    await kube.delete_secret(namespace, "pull", uid)
    assert await kube.read_secret(namespace, "pull") is None
    await kube.delete_secret(namespace, "pull", uid)  # already gone: fine


async def test_errors_carry_status_and_reason_but_no_body(kube: Kube, namespace: str) -> None:
    with pytest.raises(KubeApiError) as refused:
        await kube.patch_secret(namespace, "absent", {"data": {"token": "c2VjcmV0LXZhbHVl"}})
    assert refused.value.not_found
    assert str(refused.value) == f"patch Secret {namespace}/absent: HTTP 404 Not Found"


async def test_service_account_patch(kube: Kube, admin: ApiClient, namespace: str) -> None:
    accounts = core_object_path(namespace, "serviceaccounts")
    await admin.request("create ServiceAccount", "POST", accounts, body={"metadata": {"name": "app"}})

    await kube.patch_service_account(namespace, "app", {"imagePullSecrets": [{"name": "pull"}]})

    account = await admin.request(
        "read ServiceAccount", "GET", core_object_path(namespace, "serviceaccounts", "app")
    )
    assert [reference["name"] for reference in account["imagePullSecrets"]] == ["pull"]


async def test_event_post(kube: Kube, admin: ApiClient, namespace: str) -> None:
    about = ObjectReference("v1", "Secret", "pull", namespace, "4f6d2a1e-0000-0000-0000-000000000001")
    await kube.post_event(about, "Warning", "SecretNameConflict", "x" * 2000)

    events = await admin.request("list Events", "GET", core_object_path(namespace, "events"))
    [event] = events["items"]
    involved = event["involvedObject"]
    assert (involved["kind"], involved["name"], involved["uid"]) == ("Secret", "pull", about.uid)
    assert (event["type"], event["reason"], event["reportingComponent"]) == (
        "Warning",
        "SecretNameConflict",
        "ecr-operator",
    )
    assert len(event["message"]) == 1024


async def test_repository_read_create_and_replace_spec(kube: Kube, namespace: str) -> None:
    assert await kube.read_object(ECR_REPOSITORY, namespace, "app") is None
    created = await new_repository(kube, namespace)
    assert created["metadata"]["uid"]
    with pytest.raises(KubeApiError) as taken:
        await new_repository(kube, namespace)
    assert taken.value.conflict

    replaced = await kube.replace_spec(
        ECR_REPOSITORY, namespace, "app", {"registry": {"region": "us-east-1"}, "scanOnPush": True}
    )
    assert replaced["spec"]["scanOnPush"] is True
    # A field left out of the new spec is gone (defaults come back), not merged in.
    replaced = await kube.replace_spec(
        ECR_REPOSITORY, namespace, "app", {"registry": {"region": "us-east-1"}}
    )
    assert replaced["spec"].get("scanOnPush") is not True
    found = await kube.read_object(ECR_REPOSITORY, namespace, "app")
    assert found is not None
    assert found["spec"] == replaced["spec"]

    with pytest.raises(KubeApiError) as invalid:  # the CRD's CEL rule: the region is immutable
        await kube.replace_spec(ECR_REPOSITORY, namespace, "app", {"registry": {"region": "eu-west-1"}})
    assert invalid.value.status in (400, 422)


async def test_mirror_status_apply(kube: Kube, admin: ApiClient, namespace: str) -> None:
    await new_mirror(admin, namespace)
    status = {
        "observedGeneration": 1,
        "conditions": [condition(READY, 1)],
        "tags": [
            {
                "tag": "1.27",
                "sourceDigest": DIGEST,
                "destinationDigest": DIGEST,
                "syncedAt": "2026-01-01T00:00:00Z",
                "bytes": 1234,
            }
        ],
    }

    stored = await kube.apply_status(IMAGE_MIRROR, namespace, "nginx", "mirror", status)

    assert stored["conditions"] == status["conditions"]
    assert [entry["tag"] for entry in stored["tags"]] == ["1.27"]
    # Dropping a field the mirror controller applied before removes it.
    stored = await kube.apply_status(
        IMAGE_MIRROR, namespace, "nginx", "mirror", {**status, "tags": [], "conditions": []}
    )
    # An emptied list the manager owned alone is gone altogether: readers take absent for empty.
    assert "tags" not in stored
    assert "conditions" not in stored
    with pytest.raises(KubeApiError) as absent:
        await kube.apply_status(IMAGE_MIRROR, namespace, "absent", "mirror", status)
    assert absent.value.not_found


async def test_each_manager_owns_exactly_what_it_applied(kube: Kube, namespace: str) -> None:
    await new_repository(kube, namespace)
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", REPOSITORY, repository_status(1))
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, pull_secret_status(1))

    found = await kube.read_object(ECR_REPOSITORY, namespace, "app")
    assert found is not None
    owned = {
        entry["manager"]: owned_condition_types(entry["fieldsV1"])
        for entry in found["metadata"]["managedFields"]
        if entry.get("subresource") == "status"
    }
    assert owned == {
        status_field_manager(REPOSITORY): {READY, SYNCED},
        status_field_manager(PULL_SECRETS): {PULL_SECRET_READY},
    }


async def test_an_owner_that_stops_listing_a_field_removes_it_and_only_its_own(
    kube: Kube, namespace: str
) -> None:
    await new_repository(kube, namespace)
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", REPOSITORY, repository_status(1))
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, pull_secret_status(1))

    without_synced = {"observedGeneration": 1, "conditions": [condition(READY, 2)]}
    stored = await kube.apply_status(ECR_REPOSITORY, namespace, "app", REPOSITORY, without_synced)

    assert reasons(stored) == {READY: "Round2", PULL_SECRET_READY: "Round1"}
    assert "repositoryUri" not in stored  # dropped by its owner too

    stored = await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, {"conditions": []})

    assert reasons(stored) == {READY: "Round2"}
    assert stored["observedGeneration"] == 1


@pytest.mark.parametrize("same_values", [True, False], ids=["same-values", "new-values"])
async def test_a_condition_an_outside_writer_also_wrote_is_still_removed_by_its_owner(
    kube: Kube, admin: ApiClient, namespace: str, same_values: bool
) -> None:
    """An older operator (kopf's merge patch) or a ``kubectl edit`` leaves its writer co-owning fields the
    owner applies; the owner's drop must still remove them (not leave a bare ``type`` the schema refuses),
    while what only that writer wrote stays."""
    await new_repository(kube, namespace)
    old = {"conditions": [condition(READY, 1), condition(PULL_SECRET_READY, 1)]}
    await kopf_style_write(admin, namespace, "app", {}, old)
    await kube.apply_status(
        ECR_REPOSITORY, namespace, "app", PULL_SECRETS, pull_secret_status(1 if same_values else 2)
    )

    stored = await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, {"conditions": []})

    assert reasons(stored) == {READY: "Round1"}


async def test_a_drop_right_after_an_outside_edit_is_applied_again_once_claimed(
    kube: Kube,
    admin: ApiClient,
    world: World,
    chart_identity: ChartIdentity,
    namespace: str,
) -> None:
    """Someone applies one field of the condition (``kubectl apply --server-side`` of a message) right
    before the apply that drops it: the apiserver refuses the remains that would be left (422); the adapter
    claims the condition and applies again."""
    await new_repository(kube, namespace)
    await kube.apply_status(
        ECR_REPOSITORY, namespace, "app", REPOSITORY, {"conditions": [condition(READY, 1)]}
    )
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, pull_secret_status(1))
    await outside_apply(
        admin,
        ECR_REPOSITORY,
        namespace,
        "app",
        {"conditions": [{"type": PULL_SECRET_READY, "message": "edited"}]},
    )
    refused_before = status_refusals(world, chart_identity, namespace)

    stored = await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, {"conditions": []})

    assert reasons(stored) == {READY: "Round1"}
    assert status_refusals(world, chart_identity, namespace) == refused_before + 1


async def test_a_mirror_tag_an_outside_apply_touched_is_still_dropped(
    kube: Kube,
    admin: ApiClient,
    world: World,
    chart_identity: ChartIdentity,
    namespace: str,
) -> None:
    """The same for ImageMirror's ``tags`` map-list, under the chart's RBAC (which grants no ``get`` on
    ImageMirrors: the adapter reads the object back with the ``patch`` verb)."""
    await new_mirror(admin, namespace)
    tag = {
        "tag": "1.27",
        "sourceDigest": DIGEST,
        "destinationDigest": DIGEST,
        "syncedAt": "2026-01-01T00:00:00Z",
        "bytes": 1,
    }
    await kube.apply_status(
        IMAGE_MIRROR, namespace, "nginx", "mirror", {"tags": [tag, {**tag, "tag": "1.28"}]}
    )
    await outside_apply(admin, IMAGE_MIRROR, namespace, "nginx", {"tags": [{"tag": "1.27", "bytes": 2}]})
    refused_before = status_refusals(world, chart_identity, namespace)

    stored = await kube.apply_status(
        IMAGE_MIRROR, namespace, "nginx", "mirror", {"tags": [{**tag, "tag": "1.28"}]}
    )

    assert [entry["tag"] for entry in stored["tags"]] == ["1.28"]
    assert status_refusals(world, chart_identity, namespace) == refused_before + 1


# --- the race ---------------------------------------------------------------------------------------------


async def test_interleaved_owners_never_lose_each_others_conditions(kube: Kube, namespace: str) -> None:
    """Both orders, each preceded by the other writer's read (the snapshot a kopf handler works from)."""
    await new_repository(kube, namespace)
    lost = 0
    for round_ in range(1, ROUNDS + 1):
        # Order 1: the repository controller reads, the pull-secret controller writes, then the repository
        # controller writes. Order 2: the same with the roles swapped.
        for first, second in ((PULL_SECRETS, REPOSITORY), (REPOSITORY, PULL_SECRETS)):
            await read_status(kube, namespace, "app")  # the second writer's snapshot; SSA does not use it
            for manager in (first, second):
                status = repository_status(round_) if manager == REPOSITORY else pull_secret_status(round_)
                stored = await kube.apply_status(ECR_REPOSITORY, namespace, "app", manager, status)
            expected = {
                READY: f"Round{round_}",
                SYNCED: f"Round{round_}",
                PULL_SECRET_READY: f"Round{round_}",
            }
            lost += reasons(stored) != expected
    assert lost == 0, f"{lost} of {2 * ROUNDS} interleavings lost a condition"


async def test_concurrent_owners_never_lose_each_others_conditions(kube: Kube, namespace: str) -> None:
    await new_repository(kube, namespace)
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", REPOSITORY, repository_status(0))
    await kube.apply_status(ECR_REPOSITORY, namespace, "app", PULL_SECRETS, pull_secret_status(0))
    missing: list[tuple[str, int, dict[str, str]]] = []

    async def write(manager: str) -> None:
        for round_ in range(1, ROUNDS + 1):
            status = repository_status(round_) if manager == REPOSITORY else pull_secret_status(round_)
            stored = await kube.apply_status(ECR_REPOSITORY, namespace, "app", manager, status)
            if set(reasons(stored)) != {READY, SYNCED, PULL_SECRET_READY}:
                missing.append((manager, round_, reasons(stored)))

    await asyncio.gather(write(REPOSITORY), write(PULL_SECRETS), write(REPOSITORY), write(PULL_SECRETS))

    assert missing == []
    final = await read_status(kube, namespace, "app")
    assert reasons(final) == {
        READY: f"Round{ROUNDS}",
        SYNCED: f"Round{ROUNDS}",
        PULL_SECRET_READY: f"Round{ROUNDS}",
    }


async def test_the_old_whole_list_merge_patch_drops_pull_secret_ready(
    kube: Kube, admin: ApiClient, namespace: str
) -> None:
    """Why the above matters: the same interleaving, with the repository controller writing the way kopf
    did, loses the pull-secret controller's latest condition every time (and restores a stale one)."""
    await new_repository(kube, namespace)
    dropped = 0
    for round_ in range(1, ROUNDS + 1):
        snapshot = await read_status(kube, namespace, "app")  # the body kopf hands the repository handler
        fresh = await read_status(kube, namespace, "app")
        await kopf_style_write(admin, namespace, "app", fresh, pull_secret_status(round_))
        await kopf_style_write(admin, namespace, "app", snapshot, repository_status(round_))
        dropped += (
            reasons(await read_status(kube, namespace, "app")).get(PULL_SECRET_READY) != f"Round{round_}"
        )
    assert dropped == ROUNDS


# --- a misbehaving apiserver ------------------------------------------------------------------------------

MARKER = "c2VjcmV0LWluLWFuLWVycm9yLWJvZHk"  # what a Secret's data echoed in an error body would look like
CLIENT_PORTS = web.AppKey("client_ports", list[int])


async def misbehaving(request: web.Request) -> web.StreamResponse:
    """A loopback stand-in for an apiserver (or a proxy before it) answering each Secret name its way."""
    request.app[CLIENT_PORTS].append(request.transport.get_extra_info("peername")[1])
    name = request.match_info["name"]
    if name == "huge":
        return web.Response(status=500, text=f"<html>{MARKER * 40_000}</html>", content_type="text/html")
    if name == "unsized":
        response = web.StreamResponse(status=503)  # chunked: no Content-Length
        await response.prepare(request)
        await response.write(MARKER.encode())
        return response
    if name == "html":
        return web.Response(status=200, text=f"<html>{MARKER}</html>", content_type="text/html")
    return web.json_response({"kind": "Status", "message": f"secrets {MARKER} not found"}, status=404)


@pytest.fixture
async def misbehaving_kube() -> AsyncIterator[tuple[Kube, list[int]]]:
    """The adapter against the stand-in, and the client port of every request it received."""
    app = web.Application()
    app[CLIENT_PORTS] = []
    app.router.add_get("/api/v1/namespaces/{namespace}/secrets/{name}", misbehaving)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with started(ApiClient(KubeConnection(server=f"http://127.0.0.1:{port}"), 1)) as adapter:
        yield adapter, app[CLIENT_PORTS]
    await runner.cleanup()


def keeps(error: BaseException, marker: str) -> bool:
    """Whether the error, or any frame its traceback keeps alive, still holds ``marker``."""
    if marker in str(error) or marker in repr(error):
        return True
    traceback = error.__traceback__
    while traceback is not None:
        for value in traceback.tb_frame.f_locals.values():
            if isinstance(value, aiohttp.ClientResponse):
                value = value._body  # what response.read() would have kept
            if isinstance(value, str | bytes) and marker in (
                value if isinstance(value, str) else value.decode()
            ):
                return True
        traceback = traceback.tb_next
    return False


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("huge", "read Secret ns/huge: HTTP 500 Internal Server Error"),
        ("unsized", "read Secret ns/unsized: HTTP 503 Service Unavailable"),
        ("html", "read Secret ns/html: HTTP 200 answered text/html, not JSON"),
    ],
)
async def test_an_error_body_is_never_kept(
    misbehaving_kube: tuple[Kube, list[int]], name: str, expected: str
) -> None:
    adapter, _ = misbehaving_kube

    with pytest.raises(KubeApiError) as refused:
        await adapter.read_secret("ns", name)

    assert str(refused.value) == expected
    assert not keeps(refused.value, MARKER)
    assert await adapter.read_secret("ns", "absent") is None  # the client goes on working


async def test_a_small_error_body_is_read_and_dropped_so_the_connection_stays_open(
    misbehaving_kube: tuple[Kube, list[int]],
) -> None:
    adapter, client_ports = misbehaving_kube

    for _ in range(5):
        assert await adapter.read_secret("ns", "absent") is None

    assert len(set(client_ports)) == 1  # one keep-alive connection served all five 404s
