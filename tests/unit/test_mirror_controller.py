"""The ImageMirror controller with fake adapters (no I/O): in-memory registries behind fake registry clients,
an in-memory Kubernetes adapter, a fake ECR adapter and token cache. The e2e tests (tests/e2e/test_mirror*.py)
drive the same controller against the real world."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ecr_fakes import ECR_HOST, repository_description
from ecr_operator.api.mirror import IMAGE_MIRROR
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.config import Settings
from ecr_operator.controllers.mirror_pass import MirrorObject, MirrorPass, MirrorServices
from ecr_operator.controllers.mirror_registries import MirrorRegistries
from ecr_operator.controllers.mirror_slots import FairSlots
from ecr_operator.kube import KubeApiError, ObjectReference, SecretView
from ecr_operator.metrics import Metrics, ObjectReadiness
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.mirror import SlotLimits
from ecr_operator.reconcile.repository.observed import ObservedRepository
from ecr_operator.reconcile.repository.vocabulary import OWNER_TAG, owner_tag_value
from ecr_operator.registry.auth import Anonymous, CredentialsProvider
from ecr_operator.registry.client import ManifestHead, PushedManifest, TagList
from ecr_operator.registry.errors import AuthError, NotFound
from ecr_operator.registry.limits import DEFAULT_LIMITS
from ecr_operator.registry.manifest import Manifest, parse_manifest
from ecr_operator.registry.reference import Reference
from ecr_operator.registry.transport import RetryPolicy

pytestmark = pytest.mark.unit

SOURCE_HOST = "registry.example"
NAMESPACE = "team-a"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LOG = logging.getLogger("test_mirror_controller")


# --- an in-memory OCI registry and a client of it --------------------------------------------------------


def _digest(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


@dataclass
class MemoryRegistry:
    """Manifests by (repository, tag or digest) and blobs by digest; every request is logged."""

    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def push_image(self, repository: str, tag: str, layer: bytes) -> str:
        config, blob = b'{"architecture":"amd64","os":"linux"}', layer
        self.blobs[_digest(config)] = config
        self.blobs[_digest(blob)] = blob
        raw = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _digest(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": _digest(blob),
                        "size": len(blob),
                    }
                ],
            }
        ).encode()
        digest = _digest(raw)
        self.manifests[(repository, tag)] = self.manifests[(repository, digest)] = (raw, OCI_MANIFEST)
        return digest

    def tag_digest(self, repository: str, tag: str) -> str | None:
        found = self.manifests.get((repository, tag))
        return _digest(found[0]) if found else None


class Blob:
    """An HTTP response streaming one blob, as RegistryClient.open_blob returns it."""

    def __init__(self, content: bytes) -> None:
        self.status = 200
        self.headers = CIMultiDictProxy(CIMultiDict({"Content-Length": str(len(content))}))
        self._content = content

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        for start in range(0, len(self._content), size):
            yield self._content[start : start + size]

    def close(self) -> None:
        pass


class FakeRegistryClient:
    """The RegistryClient methods the copy engine calls, over a MemoryRegistry."""

    retry_policy = RetryPolicy()
    limits = DEFAULT_LIMITS

    def __init__(self, registry: MemoryRegistry, *, refuse: bool = False) -> None:
        self.registry = registry
        self.refuse = refuse

    async def sleep(self, seconds: float) -> None:
        pass

    def _log(self, method: str, what: str) -> None:
        self.registry.requests.append((method, what))
        if self.refuse:
            raise AuthError(f"{method} {what}: credentials refused", status=401)

    async def head_manifest(self, repo: Reference, target: str) -> ManifestHead | None:
        self._log("HEAD", f"{repo.repository}/manifests/{target}")
        found = self.registry.manifests.get((repo.repository, target))
        if found is None:
            return None
        return ManifestHead(digest=_digest(found[0]), media_type=found[1], size=len(found[0]))

    async def get_manifest(self, repo: Reference, target: str) -> Manifest:
        self._log("GET", f"{repo.repository}/manifests/{target}")
        found = self.registry.manifests.get((repo.repository, target))
        if found is None:
            raise NotFound(f"{repo} {target}: manifest unknown", status=404)
        return parse_manifest(found[0], content_type=found[1])

    async def put_manifest(self, repo: Reference, target: str, manifest: Manifest) -> PushedManifest:
        self._log("PUT", f"{repo.repository}/manifests/{target}")
        entry = (manifest.raw, manifest.media_type)
        self.registry.manifests[(repo.repository, target)] = entry
        self.registry.manifests[(repo.repository, manifest.digest)] = entry
        return PushedManifest(digest=manifest.digest, subject=None)

    async def blob_exists(self, repo: Reference, digest: str, *, for_push: bool = False) -> bool:
        self._log("HEAD", f"{repo.repository}/blobs/{digest}")
        return digest in self.registry.blobs

    async def open_blob(self, repo: Reference, digest: str) -> Blob:
        self._log("GET", f"{repo.repository}/blobs/{digest}")
        return Blob(self.registry.blobs[digest])

    async def start_upload(self, repo: Reference) -> URL:
        self._log("POST", f"{repo.repository}/blobs/uploads/")
        return URL(f"https://{repo.registry}/upload")

    async def mount_blob(self, repo: Reference, digest: str, source: Reference) -> URL | None:
        return await self.start_upload(repo)

    async def upload_blob(
        self, repo: Reference, location: URL, digest: str, size: int, chunks: AsyncIterable[bytes]
    ) -> None:
        self._log("PUT", f"{repo.repository}/blobs/{digest}")
        self.registry.blobs[digest] = b"".join([chunk async for chunk in chunks])

    async def cancel_upload(self, repo: Reference, location: URL) -> None:
        pass

    async def list_tags(self, repo: Reference, *, max_tags: int | None = None) -> TagList:
        self._log("GET", f"{repo.repository}/tags/list")
        return TagList(
            sorted(
                {tag for name, tag in self.registry.manifests if name == repo.repository and ":" not in tag}
            )
        )

    async def list_referrers(self, repo: Reference, digest: str) -> None:
        return None


@dataclass
class FakeRegistries:
    """MirrorRegistries' interface: one client per side, recording the credentials each pass asked for."""

    source: MemoryRegistry = field(default_factory=MemoryRegistry)
    ecr: MemoryRegistry = field(default_factory=MemoryRegistry)
    source_credentials: list[tuple[str, CredentialsProvider, str]] = field(default_factory=list)
    forgotten: list[AwsIdentity] = field(default_factory=list)
    refuse_push: bool = False

    async def check_source(self, registry: str) -> None:
        pass

    def source_client(
        self, namespace: str, registry: str, credentials: CredentialsProvider, fingerprint: str
    ) -> FakeRegistryClient:
        self.source_credentials.append((registry, credentials, fingerprint))
        return FakeRegistryClient(self.source)

    def destination_client(
        self, registry_host: str, identity: AwsIdentity, tokens: Any
    ) -> FakeRegistryClient:
        return FakeRegistryClient(self.ecr, refuse=self.refuse_push)

    def forget_identity(self, identity: AwsIdentity) -> None:
        self.forgotten.append(identity)


# --- Kubernetes, AWS, tokens ---------------------------------------------------------------------------


@dataclass
class FakeKube:
    """The Kube adapter's methods the mirror controller calls, over dicts."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, SecretView] = field(default_factory=dict)
    applied: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    refuse_status: bool = False

    async def read_object(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((resource.plural, name))
        return json.loads(json.dumps(found)) if found is not None else None

    async def create_object(self, resource: Any, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if (resource.plural, name) in self.objects:
            raise KubeApiError(409, "AlreadyExists", f"create {resource.kind} {namespace}/{name}")
        self.objects[(resource.plural, name)] = json.loads(json.dumps(body))
        return dict(body)

    async def replace_spec(
        self, resource: Any, namespace: str, name: str, spec: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.objects[(resource.plural, name)]["spec"] = dict(spec)
        return self.objects[(resource.plural, name)]

    async def read_secret(self, namespace: str, name: str) -> SecretView | None:
        return self.secrets.get(name)

    async def apply_status(
        self, resource: Any, namespace: str, name: str, manager: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        if self.refuse_status:
            raise KubeApiError(500, "InternalError", f"apply {resource.kind} {namespace}/{name} status")
        self.applied.append((resource.plural, manager, dict(status)))
        return dict(status)

    async def post_event(self, about: ObjectReference, event_type: str, reason: str, message: str) -> None:
        self.events.append((event_type, reason, message))


@dataclass
class FakeEcr:
    """EcrRepositories.observe_ownership over repositories by name (their owner tag)."""

    owners: dict[str, str] = field(default_factory=dict)

    async def observe_ownership(self, registry: Any, name: str) -> ObservedRepository | None:
        owner = self.owners.get(name)
        if owner is None:
            return None
        return ObservedRepository(repository_description(name), {OWNER_TAG: owner})


class FakeAws:
    def client(self, service: str, identity: AwsIdentity) -> None:
        pass


@dataclass
class FakeTokens:
    forgotten: list[AwsIdentity] = field(default_factory=list)

    def forget(self, identity: AwsIdentity) -> None:
        self.forgotten.append(identity)


# --- the world of one test -------------------------------------------------------------------------------


@dataclass
class World:
    kube: FakeKube = field(default_factory=FakeKube)
    ecr: FakeEcr = field(default_factory=FakeEcr)
    registries: FakeRegistries = field(default_factory=FakeRegistries)
    tokens: FakeTokens = field(default_factory=FakeTokens)
    limits: SlotLimits = field(default_factory=lambda: SlotLimits(total=4, per_namespace=4, per_source=4))
    services: MirrorServices = field(init=False)

    def __post_init__(self) -> None:
        metrics = Metrics()
        self.services = MirrorServices(
            settings=Settings(),
            metrics=metrics,
            readiness=ObjectReadiness(metrics.objects),
            aws=FakeAws(),  # type: ignore[arg-type]
            ecr=self.ecr,  # type: ignore[arg-type]
            kube=self.kube,  # type: ignore[arg-type]
            registries=self.registries,  # type: ignore[arg-type]
            tokens=self.tokens,  # type: ignore[arg-type]
            slots=FairSlots(self.limits),
        )

    def repository(self, name: str, *, ready: bool = True, owned: bool = True, **metadata: Any) -> None:
        """An EcrRepository (Ready or not) and its ECR repository (with this object's owner tag or not)."""
        self.kube.objects[(ECR_REPOSITORY.plural, name)] = {
            "metadata": {"name": name, "namespace": NAMESPACE, **metadata},
            "spec": {"repositoryName": f"{NAMESPACE}/{name}", "registry": {"region": "us-east-1"}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }
        owner = owner_tag_value("default", NAMESPACE, name) if owned else "other/ns/name"
        self.ecr.owners[f"{NAMESPACE}/{name}"] = owner

    async def sync(self, mirror: MirrorObject) -> float | None:
        return await MirrorPass(self.services, mirror, LOG).run()


def mirror(
    name: str = "app", *, status: Mapping[str, Any] | None = None, uid: str = "uid-1", **spec: Any
) -> MirrorObject:
    return MirrorObject(
        namespace=NAMESPACE,
        name=name,
        uid=uid,
        generation=1,
        spec={"source": {"image": f"{SOURCE_HOST}/team/app"}, "interval": "6h", **spec},
        status=status or {},
    )


def to_repository(name: str = "app") -> dict[str, Any]:
    return {"destination": {"repositoryRef": {"name": name}}, "tags": {"list": ["v1"]}}


def condition(status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return next(entry for entry in status.get("conditions", []) if entry["type"] == kind)


# --- tests -----------------------------------------------------------------------------------------------


async def test_a_missing_tag_is_copied_and_the_whole_status_applied_under_the_mirror_manager() -> None:
    world = World()
    world.repository("app")
    pushed = world.registries.source.push_image("team/app", "v1", b"layer one")

    delay = await world.sync(mirror(**to_repository()))

    assert world.registries.ecr.tag_digest(f"{NAMESPACE}/app", "v1") == pushed
    [(plural, manager, status)] = world.kube.applied
    assert (plural, manager) == (IMAGE_MIRROR.plural, "mirror")
    assert status["repositoryUri"] == f"{ECR_HOST}/{NAMESPACE}/app"
    assert [(entry["tag"], entry["destinationDigest"]) for entry in status["tags"]] == [("v1", pushed)]
    assert condition(status, "Ready")["status"] == condition(status, "Synced")["status"] == "True"
    assert None not in status.values()  # server-side apply: a cleared field is left out, not null
    assert [(kind, reason) for kind, reason, _ in world.kube.events] == [
        ("Normal", "ImageCopied"),
        ("Normal", "Synced"),  # the condition changed (from none)
    ]
    assert delay is not None
    assert 6 * 3600 * 0.9 <= delay <= 6 * 3600 * 1.1


async def test_a_pass_that_finds_nothing_new_writes_nothing_and_only_heads() -> None:
    world = World()
    world.repository("app")
    world.registries.source.push_image("team/app", "v1", b"layer one")
    first = mirror(**to_repository())
    await world.sync(first)
    world.registries.source.requests.clear()
    world.registries.ecr.requests.clear()

    # The watched body may lag behind: what the controller wrote last is what it compares with.
    await world.sync(first)

    assert len(world.kube.applied) == 1
    assert len(world.kube.events) == 2  # those of the first pass only
    assert world.registries.source.requests == [("HEAD", "team/app/manifests/v1")]
    assert world.registries.ecr.requests == [("HEAD", f"{NAMESPACE}/app/manifests/v1")]


async def test_a_failed_image_is_synced_false_with_its_reason_and_an_event() -> None:
    world = World()
    world.repository("app")
    world.registries.source.push_image("team/app", "v1", b"layer one")

    await world.sync(mirror(destination={"repositoryRef": {"name": "app"}}, tags={"list": ["v1", "gone"]}))

    [(_, _, status)] = world.kube.applied
    synced, ready = condition(status, "Synced"), condition(status, "Ready")
    assert (synced["status"], synced["reason"]) == ("False", "ImageNotFound")
    assert ready["status"] == "False"
    assert "1 of 2 images failed: gone" in synced["message"]
    assert [entry["tag"] for entry in status["tags"]] == ["v1"]  # the others are still copied
    assert ("Warning", "ImageNotFound") in [(kind, reason) for kind, reason, _ in world.kube.events]


async def test_a_refused_ecr_token_is_forgotten_with_the_clients_that_used_it() -> None:
    world = World()
    world.repository("app")
    world.registries.source.push_image("team/app", "v1", b"layer one")
    world.registries.refuse_push = True

    await world.sync(mirror(**to_repository()))

    [(_, _, status)] = world.kube.applied
    assert condition(status, "Synced")["reason"] == "AuthenticationFailed"
    identity = AwsIdentity(region="us-east-1", role_arn=None)
    assert world.tokens.forgotten == world.registries.forgotten == [identity]


async def test_a_missing_destination_waits_and_a_foreign_ecr_repository_is_a_conflict() -> None:
    world = World()
    delay = await world.sync(mirror(**to_repository("absent")))
    [(_, _, status)] = world.kube.applied
    assert condition(status, "Synced")["reason"] == "DestinationNotFound"
    assert delay is not None
    assert delay < 2

    world.repository("foreign", owned=False)
    await world.sync(mirror("other", uid="uid-2", **to_repository("foreign")))
    assert condition(world.kube.applied[-1][2], "Synced")["reason"] == "DestinationConflict"
    assert world.registries.source.requests == []  # nothing is read before the destination is known


async def test_a_status_write_the_apiserver_refuses_is_retried_soon_without_events() -> None:
    world = World()
    world.repository("app")
    world.registries.source.push_image("team/app", "v1", b"layer one")
    world.kube.refuse_status = True

    delay = await world.sync(mirror(**to_repository()))

    assert delay == 5.0
    assert world.kube.events == []  # they wait for the status they describe


def create_true(name: str = "app") -> dict[str, Any]:
    return {
        "destination": {
            "repositoryName": f"{NAMESPACE}/{name}",
            "create": True,
            "registry": {"region": "us-east-1"},
        },
        "tags": {"list": ["v1"]},
    }


async def test_create_true_creates_an_owned_child_then_waits_for_it() -> None:
    world = World()

    await world.sync(mirror(**create_true()))

    child = world.kube.objects[(ECR_REPOSITORY.plural, "app")]
    [owner] = child["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ImageMirror", "uid-1", True)
    assert child["spec"]["repositoryName"] == f"{NAMESPACE}/app"
    assert ("Normal", "DestinationCreated") in [(kind, reason) for kind, reason, _ in world.kube.events]
    assert condition(world.kube.applied[-1][2], "Synced")["reason"] == "DestinationNotReady"


async def test_create_true_adopts_its_own_child_and_refuses_a_stranger() -> None:
    world = World()
    owned = {"ownerReferences": [{"kind": "ImageMirror", "name": "app", "uid": "uid-1", "controller": True}]}
    world.repository("app", **owned)
    world.registries.source.push_image("team/app", "v1", b"layer one")

    await world.sync(mirror(**create_true()))
    assert condition(world.kube.applied[-1][2], "Synced")["status"] == "True"
    assert not [reason for _, reason, _ in world.kube.events if reason == "DestinationCreated"]

    world.repository("stranger")
    await world.sync(mirror("stranger", uid="uid-3", **create_true("stranger")))
    synced = condition(world.kube.applied[-1][2], "Synced")
    assert synced["reason"] == "DestinationConflict"
    assert "not owned by this ImageMirror" in synced["message"]


async def test_source_credentials_come_from_the_secret_and_are_told_apart_by_fingerprint() -> None:
    world = World()
    world.repository("app")
    world.registries.source.push_image("team/app", "v1", b"layer one")
    auth = base64.b64encode(b"user:secret").decode()
    document = json.dumps({"auths": {SOURCE_HOST: {"auth": auth}}}).encode()
    world.kube.secrets["creds"] = SecretView(
        uid="s-1",
        type="kubernetes.io/dockerconfigjson",
        labels={},
        data={".dockerconfigjson": base64.b64encode(document).decode()},
    )
    spec = to_repository()
    spec_with_secret = {
        **spec,
        "source": {"image": f"{SOURCE_HOST}/team/app", "credentialsSecretRef": {"name": "creds"}},
    }

    await world.sync(mirror(**spec_with_secret))
    await world.sync(mirror("anonymous", uid="uid-2", **spec))

    (registry, provider, fingerprint), (_, anonymous, none) = world.registries.source_credentials
    assert registry == SOURCE_HOST
    assert fingerprint == hashlib.sha256(document).hexdigest()
    credentials = await provider.credentials_for(SOURCE_HOST, "team/app")
    assert credentials is not None
    assert credentials.username == "user"
    assert isinstance(anonymous, Anonymous)
    assert none == ""


async def test_a_credentials_secret_without_a_docker_config_is_invalid_credentials() -> None:
    world = World()
    world.repository("app")
    world.kube.secrets["creds"] = SecretView(uid="s-1", type="Opaque", labels={}, data={"token": "eA=="})
    spec = {
        **to_repository(),
        "source": {"image": f"{SOURCE_HOST}/team/app", "credentialsSecretRef": {"name": "creds"}},
    }

    await world.sync(mirror(**spec))

    assert condition(world.kube.applied[-1][2], "Synced")["reason"] == "InvalidCredentials"


async def test_passes_take_fair_slots() -> None:
    world = World(limits=SlotLimits(total=2, per_namespace=1, per_source=2))
    world.repository("app")
    world.registries.source.push_image("team/app", "v1", b"layer one")
    slots = world.services.slots
    seen: list[int] = []
    original = world.ecr.observe_ownership

    async def observing(registry: Any, name: str) -> ObservedRepository | None:
        seen.append(slots.running)
        await asyncio.sleep(0.01)
        return await original(registry, name)

    world.ecr.observe_ownership = observing  # type: ignore[method-assign]
    passes = [world.sync(mirror(f"m{n}", uid=f"uid-{n}", **to_repository())) for n in range(3)]
    await asyncio.gather(*passes)

    assert seen == [1, 1, 1]  # one namespace: one pass at a time, whatever the total allows
    assert (slots.running, slots.waiting) == (0, 0)


async def test_the_registry_client_pool_keeps_clients_per_registry_and_credentials_within_its_bound() -> None:
    registries = MirrorRegistries(Settings(), max_clients=2)
    await registries.start()
    try:
        anonymous = Anonymous()
        first = registries.source_client("team-a", SOURCE_HOST, anonymous, "")
        assert registries.source_client("team-a", SOURCE_HOST, anonymous, "") is first
        rotated = registries.source_client("team-a", SOURCE_HOST, anonymous, "another secret")
        assert rotated is not first
        identity = AwsIdentity(region="us-east-1", role_arn=None)
        pushing = registries.destination_client(ECR_HOST, identity, FakeTokens())
        assert registries.destination_client(ECR_HOST, identity, FakeTokens()) is pushing
        assert len(registries) == 2  # the least recently used (the first source client) went
        assert registries.source_client("team-a", SOURCE_HOST, anonymous, "") is not first
        registries.forget_identity(identity)
        assert registries.destination_client(ECR_HOST, identity, FakeTokens()) is not pushing
    finally:
        await registries.stop()


async def test_tenants_never_share_what_a_source_client_learned() -> None:
    """Another namespace's mirror of the same registry, even anonymous, gets a client of its own: an
    upstream's answer to one tenant (a Bearer realm) never steers another tenant's requests."""
    registries = MirrorRegistries(Settings())
    await registries.start()
    try:
        anonymous = Anonymous()
        team_a = registries.source_client("team-a", SOURCE_HOST, anonymous, "")
        assert registries.source_client("team-b", SOURCE_HOST, anonymous, "") is not team_a
        assert registries.source_client("team-a", SOURCE_HOST, anonymous, "") is team_a
    finally:
        await registries.stop()
