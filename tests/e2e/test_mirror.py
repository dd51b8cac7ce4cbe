"""ImageMirror end to end: the operator process copies images from the world's registries into its ECR.

Sources are the world's anonymous, basic-auth and token-auth registries; the ECR control plane is moto and
its data plane the "ecr" registry, reached through the registry host override. Digests are checked where a
user would check them: in that registry. Requests the operator made are read from the registries' access
logs. The world's registries listen on 127.0.0.1, so the operator is told to allow that (as an admin would
for an in-cluster registry), except in the test that shows the default refusal.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any

import pytest
from mirror_support import (
    ALLOW_LOOPBACK,
    ecr_digest,
    ecr_repository,
    get,
    image_mirror,
    request_sync,
    synced,
)
from repository_support import apply, condition, short_token_lives

from ecr_sandbox.images import OCI_INDEX, OCI_MANIFEST, SandboxRegistryClient, sha256_digest
from ecr_sandbox.registries import RegistryRequest
from ecr_sandbox.world import World
from operator_fixture import StartOperator
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


# --- helpers ----------------------------------------------------------------------------------------


def docker_config_secret(world: World, namespace: str, name: str, registry: str) -> None:
    info = world.registries[registry]
    auth = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
    config = json.dumps({"auths": {info.host: {"auth": auth}}})
    apply(
        world,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
        },
    )


def requests_for(world: World, registry: str, repository: str, since: int = 0) -> list[RegistryRequest]:
    return [r for r in world.registries[registry].requests()[since:] if f"/v2/{repository}/" in r.path]


def settled_count(world: World, registry: str) -> int:
    """How many requests the registry logged, once it stopped logging (it writes just after answering)."""
    seen = -1
    while True:
        count = len(world.registries[registry].requests())
        if count == seen:
            return count
        seen = count
        time.sleep(0.2)


def heads(requests: list[RegistryRequest]) -> list[tuple[str, str, int]]:
    """The manifest requests among ``requests``: method, tag and status, sorted."""
    return sorted(
        (r.method, r.path.split("?")[0].rsplit("/", 1)[-1], r.status)
        for r in requests
        if "/manifests/" in r.path
    )


def last_pass(metrics_url: str, namespace: str, name: str) -> float:
    """When the mirror last finished a pass without errors (its last-success gauge), 0 if never."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:  # noqa: S310 -- loopback URL
        lines = response.read().decode().splitlines()
    for line in lines:
        labels, _, value = line.removeprefix("ecr_operator_mirror_last_success_timestamp_seconds{").partition(
            "} "
        )
        if value and sorted(labels.split(",")) == sorted([f'name="{name}"', f'namespace="{namespace}"']):
            return float(value)
    return 0.0


def wait_for_pass(metrics_url: str, namespace: str, name: str, *, after: float) -> None:
    eventually(f"a sync pass of {name}", lambda: last_pass(metrics_url, namespace, name) > after, 60)


def status_writes(world: World, namespace: str) -> int:
    """Writes of ImageMirror status in ``namespace`` the apiserver has audited."""
    return sum(
        1
        for event in world.audit_events()
        if event.resource == "imagemirrors"
        and event.subresource == "status"
        and event.namespace == namespace
        and event.is_write
    )


def events(world: World, namespace: str, name: str, reason: str, count: int = 1) -> list[dict[str, Any]]:
    """The Events with ``reason`` about ``name``, once there are ``count`` (the operator posts them
    asynchronously, just after writing status)."""
    selector = f"involvedObject.name={name}"

    def probe() -> list[dict[str, Any]] | None:
        result = world.kubectl(
            "get", "events", "--namespace", namespace, "--field-selector", selector, "-o", "json"
        )
        found = [event for event in json.loads(result.stdout)["items"] if event["reason"] == reason]
        return found if len(found) >= count else None

    return eventually(f"{count} {reason} Event(s) about {name}", probe, timeout=30)


def push_artifact(client: SandboxRegistryClient, repository: str, subject: str, artifact_type: str) -> str:
    """An OCI artifact (an SBOM, a signature) whose subject is ``subject``; returns its digest."""
    subject_head = client.request(
        "HEAD",
        f"/v2/{repository}/manifests/{subject}",
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        scope=f"repository:{repository}:pull",
    )
    empty = client.push_blob(repository, b"{}")
    content = json.dumps({"artifact": artifact_type, "of": subject}).encode()
    payload = client.push_blob(repository, content)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": payload, "size": len(content)}],
            "subject": {
                "mediaType": subject_head.header("content-type"),
                "digest": subject,
                "size": int(subject_head.header("content-length") or 0),
            },
        }
    ).encode()
    return client.push_manifest(repository, sha256_digest(manifest), manifest, OCI_MANIFEST)


def push_fallback_index(
    client: SandboxRegistryClient, repository: str, subject: str, referrers: list[str]
) -> str:
    """How cosign and oras list referrers on registries without the referrers API: a tag sha256-<hex>."""
    entries = []
    for digest in referrers:
        head = client.request(
            "GET",
            f"/v2/{repository}/manifests/{digest}",
            headers={"Accept": OCI_MANIFEST},
            scope=f"repository:{repository}:pull",
        )
        document = json.loads(head.body)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(head.body),
                "artifactType": document["artifactType"],
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return client.push_manifest(repository, subject.replace(":", "-"), index, OCI_INDEX)


@pytest.fixture
def running(operator: StartOperator) -> Any:
    """The operator, allowed to read from loopback (where the world's registries listen)."""
    return operator(**ALLOW_LOOPBACK)


# --- tests ------------------------------------------------------------------------------------------


def test_tags_from_anonymous_basic_and_token_registries_arrive_digest_exact(
    world: World, running: Any, namespace: str
) -> None:
    pushed: dict[str, dict[str, str]] = {}
    for registry in ("anonymous", "basic", "token"):
        client = world.registry_client(registry)
        repository = f"{namespace}/{registry}"
        pushed[registry] = {
            "v1": client.push_image(repository, "v1"),
            "multi": client.push_index(repository, "multi", ("linux/amd64", "linux/arm64")),
        }
    for registry in ("basic", "token"):
        docker_config_secret(world, namespace, f"{registry}-credentials", registry)

    for registry in ("anonymous", "basic", "token"):
        destination = ecr_repository(world, namespace, f"from-{registry}")
        source: dict[str, Any] = {"image": f"{world.registries[registry].host}/{namespace}/{registry}"}
        if registry != "anonymous":
            source["credentialsSecretRef"] = {"name": f"{registry}-credentials"}
        document = image_mirror(
            namespace,
            registry,
            source["image"],
            tags={"list": ["v1", "multi"]},
            destination={"repositoryRef": {"name": f"from-{registry}"}},
        )
        document["spec"]["source"] = source
        apply(world, document)

    for registry in ("anonymous", "basic", "token"):
        mirror = synced(world, namespace, registry)
        status = mirror["status"]
        destination = f"{namespace}/from-{registry}"
        assert status["repositoryUri"] == f"{world.ecr_registry_host()}/{destination}"
        assert condition(mirror, "Ready")["status"] == "True"
        assert status["lastSyncTime"]
        assert status["nextSyncTime"] > status["lastSyncTime"]
        by_tag = {entry["tag"]: entry for entry in status["tags"]}
        assert sorted(by_tag) == ["multi", "v1"]
        for tag, digest in pushed[registry].items():
            assert by_tag[tag]["sourceDigest"] == by_tag[tag]["destinationDigest"] == digest
            assert by_tag[tag]["bytes"] > 0
            assert ecr_digest(world, destination, tag) == digest, f"{registry}:{tag}"
        assert by_tag["multi"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert len(events(world, namespace, "token", "ImageCopied", count=2)) == 2


def test_a_resync_with_nothing_new_only_heads_the_source_then_a_moved_tag_is_followed(
    world: World, running: Any, namespace: str
) -> None:
    source = world.registry_client("anonymous")
    repository = f"{namespace}/app"
    first = {tag: source.push_image(repository, tag) for tag in ("v1", "v2")}
    image = f"{world.registries['anonymous'].host}/{repository}"
    follow, keep = ecr_repository(world, namespace, "follow"), ecr_repository(world, namespace, "keep")
    apply(
        world,
        image_mirror(
            namespace,
            "follow",
            image,
            tags={"list": ["v1", "v2"]},
            destination={"repositoryRef": {"name": "follow"}},
        ),
    )
    apply(
        world,
        image_mirror(
            namespace,
            "keep",
            image,
            tags={"include": r"^v[0-9]+$"},
            mutableTags="Keep",
            destination={"repositoryRef": {"name": "keep"}},
        ),
    )
    before = {name: synced(world, namespace, name) for name in ("follow", "keep")}

    mark = settled_count(world, "anonymous")
    ecr_mark = settled_count(world, "ecr")
    writes = status_writes(world, namespace)
    done = {name: last_pass(running.metrics_url, namespace, name) for name in ("follow", "keep")}
    for name in ("follow", "keep"):
        request_sync(world, namespace, name)
    for name, previous_pass in done.items():
        wait_for_pass(running.metrics_url, namespace, name, after=previous_pass)
    settled_count(world, "anonymous")
    settled_count(world, "ecr")
    resync = [
        (r.method, r.path.split("?")[0].rsplit("/", 2)[-2:])
        for r in requests_for(world, "anonymous", repository, mark)
    ]

    # Per tag one manifest HEAD (a HEAD is no pull on Docker Hub); the include filter adds the tag listing.
    assert sorted(resync) == sorted(
        [("HEAD", ["manifests", "v1"]), ("HEAD", ["manifests", "v2"])] * 2 + [("GET", ["tags", "list"])]
    )
    # ECR too: one HEAD per tag, authenticated from the start (the client kept what it learned).
    for destination in (follow, keep):
        assert heads(requests_for(world, "ecr", destination, ecr_mark)) == [
            ("HEAD", "v1", 200),
            ("HEAD", "v2", 200),
        ]
    assert status_writes(world, namespace) == writes  # a pass that finds nothing new writes nothing
    for name in ("follow", "keep"):
        after = get(world, "imagemirror", namespace, name)
        assert after is not None
        assert after["status"] == before[name]["status"]

    moved = source.push_image(repository, "v1")
    for name in ("follow", "keep"):
        request_sync(world, namespace, name)

    def followed() -> dict[str, Any] | None:
        document = get(world, "imagemirror", namespace, "follow")
        tags = {entry["tag"]: entry for entry in (document or {}).get("status", {}).get("tags", [])}
        return document if tags.get("v1", {}).get("sourceDigest") == moved else None

    eventually("the moved tag to be followed", followed, timeout=60)
    assert ecr_digest(world, follow, "v1") == moved
    assert ecr_digest(world, follow, "v2") == first["v2"]
    kept = eventually(
        "the moved tag to be reported as kept",
        lambda: (
            (document := get(world, "imagemirror", namespace, "keep"))
            and "Kept v1" in condition(document, "Synced")["message"]
            and document
        ),
        timeout=60,
    )
    assert condition(kept, "Ready")["status"] == "True"
    assert ecr_digest(world, keep, "v1") == first["v1"]
    assert {entry["tag"]: entry["sourceDigest"] for entry in kept["status"]["tags"]}["v1"] == first["v1"]


def test_a_resync_from_authenticated_registries_heads_each_image_once_on_each_side(
    world: World, running: Any, namespace: str
) -> None:
    # Basic and token (bearer) auth upstream, basic auth at ECR: each 401 is answered once, by the first
    # pass; later passes send the credentials (or the cached bearer token) with their first request.
    mirrors = {}
    for registry in ("basic", "token"):
        repository = f"{namespace}/{registry}"
        client = world.registry_client(registry)
        for tag in ("v1", "v2"):
            client.push_image(repository, tag)
        docker_config_secret(world, namespace, f"{registry}-credentials", registry)
        destination = ecr_repository(world, namespace, f"from-{registry}")
        document = image_mirror(
            namespace,
            registry,
            f"{world.registries[registry].host}/{repository}",
            tags={"list": ["v1", "v2"]},
            destination={"repositoryRef": {"name": f"from-{registry}"}},
        )
        document["spec"]["source"]["credentialsSecretRef"] = {"name": f"{registry}-credentials"}
        apply(world, document)
        mirrors[registry] = (repository, destination)
    for registry in mirrors:
        synced(world, namespace, registry)
    shown = world.kubectl(
        "get", "imagemirror", "token", "--namespace", namespace, "--show-managed-fields", "--output", "json"
    )
    writers = {
        (entry["manager"], entry["operation"], entry.get("subresource"))
        for entry in json.loads(shown.stdout)["metadata"]["managedFields"]
    }
    assert ("ecr-operator-mirror", "Apply", "status") in writers  # status by server-side apply, own manager

    for _ in range(2):  # two no-op passes: the second shows nothing is re-learned pass after pass
        marks = {registry: settled_count(world, registry) for registry in ("basic", "token", "ecr")}
        done = {registry: last_pass(running.metrics_url, namespace, registry) for registry in mirrors}
        for registry in mirrors:
            request_sync(world, namespace, registry)
        for registry, previous_pass in done.items():
            wait_for_pass(running.metrics_url, namespace, registry, after=previous_pass)
        for registry in ("basic", "token", "ecr"):
            settled_count(world, registry)
        for registry, (repository, destination) in mirrors.items():
            upstream = heads(requests_for(world, registry, repository, marks[registry]))
            assert upstream == [("HEAD", "v1", 200), ("HEAD", "v2", 200)], registry
            pushed = heads(requests_for(world, "ecr", destination, marks["ecr"]))
            assert pushed == [("HEAD", "v1", 200), ("HEAD", "v2", 200)], registry


def test_a_mirror_and_a_pull_secret_of_one_identity_share_its_ecr_token(
    world: World, operator: StartOperator, namespace: str
) -> None:
    # Pull secrets of the operator's own identity (single-tenant opt-in) and a mirror pushing as that same
    # identity: one token cache serves both, so each refresh cycle costs one GetAuthorizationToken.
    label = {"ecr-operator-test/shared-token": namespace}
    world.kubectl("label", "namespace", namespace, f"ecr-operator-test/shared-token={namespace}")
    cycle = 10.0
    running = operator(
        **ALLOW_LOOPBACK,
        ECR_OPERATOR_PULL_SECRETS=json.dumps(
            {
                "registries": [{"accountId": world.account_id, "region": world.region}],
                "namespaceSelector": {"matchLabels": label},
            }
        ),
        ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT="true",
        # moto's tokens say they expired in 2015: the fallback lifetime applies, refreshed every 10 s.
        **short_token_lives(lifetime=20, lead=10),
    )
    source = world.registry_client("anonymous")
    source.push_image(f"{namespace}/app", "v1")
    ecr_repository(world, namespace, "app")
    apply(
        world,
        image_mirror(
            namespace,
            "app",
            f"{world.registries['anonymous'].host}/{namespace}/app",
            tags={"list": ["v1"]},
            destination={"repositoryRef": {"name": "app"}},
        ),
    )
    synced(world, namespace, "app")

    def token_calls() -> int:
        return sum(1 for call in world.aws_calls() if call.operation == "GetAuthorizationToken")

    # Three cycles with a mirror pass about every second, so the mirror needs a token in every cycle.
    before, started = token_calls(), time.monotonic()
    while time.monotonic() - started < 3 * cycle:
        previous_pass = last_pass(running.metrics_url, namespace, "app")
        request_sync(world, namespace, "app")
        wait_for_pass(running.metrics_url, namespace, "app", after=previous_pass)
        time.sleep(1.0)
    calls = token_calls() - before
    print(f"GetAuthorizationToken calls in 3 cycles of one identity (pull secret + mirror): {calls}")
    assert calls <= 3 + 1  # one per cycle (a window of three cycles may catch the start of a fourth)


def test_a_platform_subset_of_an_index_tolerates_a_platform_missing_upstream(
    world: World, running: Any, namespace: str
) -> None:
    source = world.registry_client("anonymous")
    repository = f"{namespace}/multi"
    index = source.push_index(repository, "v1", ("linux/amd64", "linux/arm64", "linux/s390x"))
    children = json.loads(
        source.request("GET", f"/v2/{repository}/manifests/v1", headers={"Accept": OCI_INDEX}).body
    )["manifests"]
    destination = ecr_repository(world, namespace, "multi")
    apply(
        world,
        image_mirror(
            namespace,
            "multi",
            f"{world.registries['anonymous'].host}/{repository}",
            tags={"list": ["v1"]},
            platforms=["linux/amd64", "linux/riscv64"],
        ),
    )

    mirror = synced(world, namespace, "multi")

    [entry] = mirror["status"]["tags"]
    assert entry["sourceDigest"] == index
    assert entry["destinationDigest"] != index  # a filtered index: only linux/amd64 is in ECR
    assert entry["platforms"] == ["linux/amd64"]
    assert entry["missingPlatforms"] == ["linux/riscv64"]
    assert ecr_digest(world, destination, "v1") == entry["destinationDigest"]
    in_ecr = json.loads(
        world.registry_client("ecr")
        .request(
            "GET",
            f"/v2/{destination}/manifests/v1",
            headers={"Accept": OCI_INDEX},
            scope=f"repository:{destination}:pull",
        )
        .body
    )
    assert in_ecr["manifests"] == [children[0]]
    assert ecr_digest(world, destination, children[1]["digest"]) is None
    assert condition(mirror, "Ready")["status"] == "True"
    assert "Platforms missing upstream: linux/riscv64" in condition(mirror, "Ready")["message"]
    [missing] = events(world, namespace, "multi", "PlatformsMissing")
    assert "linux/riscv64" in missing["message"]
    assert missing["type"] == "Warning"


def test_referrers_are_copied_with_the_image(world: World, running: Any, namespace: str) -> None:
    source = world.registry_client("basic")
    repository = f"{namespace}/signed"
    image = source.push_image(repository, "v1")
    sbom = push_artifact(source, repository, image, "application/spdx+json")
    signature = push_artifact(source, repository, sbom, "application/vnd.dev.cosign.artifact.sig.v1+json")
    push_fallback_index(source, repository, image, [sbom])
    push_fallback_index(source, repository, sbom, [signature])
    docker_config_secret(world, namespace, "credentials", "basic")
    destination = ecr_repository(world, namespace, "signed")
    document = image_mirror(
        namespace,
        "signed",
        f"{world.registries['basic'].host}/{repository}",
        tags={"list": ["v1"]},
        referrers=True,
    )
    document["spec"]["source"]["credentialsSecretRef"] = {"name": "credentials"}
    apply(world, document)

    synced(world, namespace, "signed")

    assert ecr_digest(world, destination, "v1") == image
    assert ecr_digest(world, destination, sbom) == sbom
    assert ecr_digest(world, destination, signature) == signature
    for subject in (image, sbom):
        tag = subject.replace(":", "-")
        assert ecr_digest(world, destination, tag) == source.manifest_digest(repository, tag)


def test_create_true_makes_an_owned_repository_that_goes_with_the_mirror(
    world: World, running: Any, namespace: str
) -> None:
    source = world.registry_client("anonymous")
    repository = f"{namespace}/owned"
    digest = source.push_image(repository, "v1")
    apply(
        world,
        image_mirror(
            namespace,
            "owned",
            f"{world.registries['anonymous'].host}/{repository}",
            tags={"list": ["v1"]},
            destination={
                "repositoryName": f"{namespace}/owned",
                "create": True,
                "registry": {"region": world.region},
                "template": {"imageTagMutability": "IMMUTABLE"},
            },
            mutableTags="Keep",
        ),
    )

    mirror = synced(world, namespace, "owned")
    child = get(world, "ecrrepository", namespace, "owned")
    assert child is not None
    [owner] = child["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ImageMirror",
        "owned",
        mirror["metadata"]["uid"],
        True,
    )
    assert child["spec"]["repositoryName"] == f"{namespace}/owned"
    assert child["spec"]["imageTagMutability"] == "IMMUTABLE"
    assert mirror["status"]["repositoryUri"] == child["status"]["repositoryUri"]
    assert ecr_digest(world, f"{namespace}/owned", "v1") == digest
    assert events(world, namespace, "owned", "DestinationCreated")

    world.kubectl("delete", "imagemirror", "owned", "--namespace", namespace, "--wait=true")
    eventually(
        "the garbage collector to delete the child EcrRepository",
        lambda: get(world, "ecrrepository", namespace, "owned") is None,
        timeout=60,
    )


def test_a_loopback_source_is_refused_without_the_admins_allowance(
    world: World, operator: StartOperator, namespace: str
) -> None:
    operator()
    source = world.registry_client("anonymous")
    repository = f"{namespace}/internal"
    source.push_image(repository, "v1")
    ecr_repository(world, namespace, "internal")
    mark = settled_count(world, "anonymous")
    apply(
        world,
        image_mirror(
            namespace, "internal", f"{world.registries['anonymous'].host}/{repository}", tags={"list": ["v1"]}
        ),
    )

    def refused() -> dict[str, Any] | None:
        document = get(world, "imagemirror", namespace, "internal")
        return (
            document if document and condition(document, "Ready").get("reason") == "SourceRefused" else None
        )

    mirror = eventually("the source to be refused", refused, timeout=60)
    ready = condition(mirror, "Ready")
    assert ready["status"] == "False"
    assert "127.0.0.1" in ready["message"]
    assert "ECR_OPERATOR_MIRROR_ALLOWED_SOURCES" in ready["message"]
    assert mirror["status"].get("tags", []) == []
    assert requests_for(world, "anonymous", repository, mark) == []
    [warning] = events(world, namespace, "internal", "SourceRefused")
    assert warning["type"] == "Warning"


def test_a_restarted_operator_leaves_synced_mirrors_alone(
    world: World, operator: StartOperator, namespace: str
) -> None:
    source = world.registry_client("anonymous")
    repository = f"{namespace}/quiet"
    source.push_image(repository, "v1")
    ecr_repository(world, namespace, "quiet")
    first = operator(**ALLOW_LOOPBACK)
    apply(
        world,
        image_mirror(
            namespace, "quiet", f"{world.registries['anonymous'].host}/{repository}", tags={"list": ["v1"]}
        ),
    )
    synced(world, namespace, "quiet")
    assert first.terminate() == 0
    mark, writes = settled_count(world, "anonymous"), status_writes(world, namespace)

    second = operator(**ALLOW_LOOPBACK)
    time.sleep(3)  # a mirror that was due (or whose spec had changed) would have synced at once
    assert requests_for(world, "anonymous", repository, mark) == []
    assert status_writes(world, namespace) == writes

    # It is alive all the same: asked to, it syncs (finding nothing new).
    done = last_pass(second.metrics_url, namespace, "quiet")
    request_sync(world, namespace, "quiet")
    wait_for_pass(second.metrics_url, namespace, "quiet", after=done)
    assert status_writes(world, namespace) == writes
