"""``ecr-operator mirror`` as a user runs it: a real process against the world's registries and moto.

What is checked is what a user sees: the exit status, the JSON summary, the digests the destination
registry serves, and which requests the source registry answered (its access log).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from ecr_operator.registry.reference import fallback_tag
from ecr_sandbox.images import (
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    SandboxRegistryClient,
    sha256_digest,
)
from ecr_sandbox.registries import RegistryInfo, RegistryRequest
from ecr_sandbox.world import World
from operator_fixture import operator_command

pytestmark = pytest.mark.e2e

OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SBOM_TYPE = "application/spdx+json"


def run_mirror(
    world: World, home: Path, *args: str, auth_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The operator's environment (AWS at moto, ECR host override, CA bundle), a HOME without any
    docker config, and REGISTRY_AUTH_FILE only when given."""
    home.mkdir(exist_ok=True)
    env = world.operator_env() | {"HOME": str(home)}
    if auth_file is not None:
        env["REGISTRY_AUTH_FILE"] = str(auth_file)
    return subprocess.run(
        [*operator_command("mirror"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def unique(name: str) -> str:
    return f"cli/{name}-{uuid.uuid4().hex[:8]}"


def requests_for(registry: RegistryInfo, repository: str, after: int) -> list[RegistryRequest]:
    return [request for request in registry.requests()[after:] if f"/v2/{repository}/" in request.path]


def content_gets(requests: list[RegistryRequest]) -> list[str]:
    """Manifest and blob GETs: what Docker Hub counts as pulls."""
    return [
        f"{request.method} {request.path}"
        for request in requests
        if request.method == "GET" and ("/manifests/" in request.path or "/blobs/" in request.path)
    ]


def manifest_size(client: SandboxRegistryClient, repository: str, reference: str) -> int:
    response = client.request(
        "HEAD",
        f"/v2/{repository}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT},
        scope=f"repository:{repository}:pull",
    )
    return int(response.header("content-length") or 0)


def test_an_image_is_copied_to_ecr_with_an_ecr_token_and_a_second_run_only_heads(
    world: World, tmp_path: Path
) -> None:
    source = world.registries["anonymous"]
    repository = unique("app")
    digest = world.registry_client("anonymous").push_image(repository, "v1", layer_size=300_000)
    target = unique("mirrored")
    destination = f"{world.ecr_registry_host()}/{target}"
    tokens_before = [call for call in world.aws_calls() if call.operation == "GetAuthorizationToken"]

    result = run_mirror(world, tmp_path / "home", "--json", f"{source.host}/{repository}:v1", destination)

    document = summary_of(result)
    assert result.stderr == ""  # no progress line without a terminal, no warnings
    [image] = document["images"]
    assert image["digest"] == image["source_digest"] == digest
    assert image["destination"] == f"{destination}:v1@{digest}"
    assert (image["up_to_date"], image["blobs_copied"], image["manifests_pushed"]) == (False, 2, 1)
    assert image["bytes_copied"] > 300_000
    assert document["ok"] is True
    assert document["totals"]["bytes_copied"] == image["bytes_copied"]
    assert world.registry_client("ecr").manifest_digest(target, "v1") == digest
    tokens = [call for call in world.aws_calls() if call.operation == "GetAuthorizationToken"]
    assert len(tokens) == len(tokens_before) + 1

    seen = len(source.requests())
    again = summary_of(
        run_mirror(world, tmp_path / "home", "--json", f"{source.host}/{repository}:v1", destination)
    )

    assert again["images"][0]["up_to_date"] is True
    assert again["totals"]["bytes_copied"] == 0
    source_requests = requests_for(source, repository, seen)
    assert source_requests
    assert {request.method for request in source_requests} == {"HEAD"}


def test_matching_tags_are_copied_from_a_token_auth_registry_with_the_auth_file(
    world: World, tmp_path: Path
) -> None:
    source = world.registries["token"]
    repository = unique("private")
    pushed = {tag: world.registry_client("token").push_image(repository, tag) for tag in ("v1", "v2", "dev")}
    basic = world.registries["basic"]
    target = unique("synced")
    arguments = ("--json", "--tags", r"v\d+", f"{source.host}/{repository}", f"{basic.host}/{target}")

    document = summary_of(
        run_mirror(world, tmp_path / "home", *arguments, auth_file=world.registry_auth_file)
    )

    assert [image["tag"] for image in document["images"]] == ["v1", "v2"]
    assert all(image["digest"] == pushed[image["tag"]] for image in document["images"])
    destination = world.registry_client("basic")
    assert destination.manifest_digest(target, "v1") == pushed["v1"]
    assert destination.manifest_digest(target, "v2") == pushed["v2"]
    assert destination.manifest_digest(target, "dev") is None

    seen = len(source.requests())
    again = summary_of(run_mirror(world, tmp_path / "home", *arguments, auth_file=world.registry_auth_file))

    assert [image["up_to_date"] for image in again["images"]] == [True, True]
    assert content_gets(requests_for(source, repository, seen)) == []


def test_a_layer_shared_by_the_tags_of_a_repository_is_copied_once(world: World, tmp_path: Path) -> None:
    source = world.registries["anonymous"]
    client = world.registry_client("anonymous")
    repository = unique("layered")
    base = client.push_blob(repository, b"\x1f\x8b" + uuid.uuid4().bytes * 4096)
    pushed = {}
    for tag in ("1.0", "1.1", "1.2", "2.0"):
        own = client.push_blob(repository, b"\x1f\x8b" + uuid.uuid4().bytes * 64)
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": client.push_blob(repository, config),
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": OCI_LAYER_GZIP, "digest": base, "size": 2 + 16 * 4096},
                    {"mediaType": OCI_LAYER_GZIP, "digest": own, "size": 2 + 16 * 64},
                ],
            }
        ).encode()
        pushed[tag] = client.push_manifest(repository, tag, manifest, OCI_MANIFEST)
    target = unique("layered-mirror")

    document = summary_of(
        run_mirror(
            world,
            tmp_path / "home",
            "--json",
            "--all-tags",
            f"{source.host}/{repository}",
            f"{world.ecr_registry_host()}/{target}",
        )
    )

    assert {image["tag"]: image["digest"] for image in document["images"]} == pushed
    # Four configs, four own layers, and the base once; the other three tags find it there.
    assert (document["totals"]["blobs_copied"], document["totals"]["blobs_skipped"]) == (9, 3)


def test_without_credentials_a_private_source_fails_with_exit_1(world: World, tmp_path: Path) -> None:
    source = world.registries["token"]
    repository = unique("private")
    world.registry_client("token").push_image(repository, "v1")

    result = run_mirror(world, tmp_path / "home", f"{source.host}/{repository}:v1", f"{source.host}/x/y")

    assert result.returncode == 1
    assert "401" in result.stderr or "denied" in result.stderr.lower()


def test_a_multi_arch_index_is_copied_digest_exact_and_a_platform_missing_upstream_is_reported(
    world: World, tmp_path: Path
) -> None:
    source = world.registries["anonymous"]
    repository = unique("multi")
    index = world.registry_client("anonymous").push_index(repository, "2.0", ("linux/amd64", "linux/arm64"))
    target = unique("multi-mirror")
    platforms = ("--platform", "linux/amd64", "--platform", "linux/arm64", "--platform", "linux/ppc64le")

    document = summary_of(
        run_mirror(
            world,
            tmp_path / "home",
            "--json",
            *platforms,
            f"{source.host}/{repository}:2.0",
            f"{world.ecr_registry_host()}/{target}",
        )
    )

    [image] = document["images"]
    assert image["digest"] == index
    assert image["filtered"] is False
    assert image["platforms_copied"] == ["linux/amd64", "linux/arm64"]
    assert image["platforms_missing"] == ["linux/ppc64le"]
    assert image["manifests_pushed"] == 3
    assert world.registry_client("ecr").manifest_digest(target, "2.0") == index


def test_referrers_are_copied_when_asked(world: World, tmp_path: Path) -> None:
    source = world.registries["anonymous"]
    client = world.registry_client("anonymous")
    repository = unique("signed")
    image = client.push_image(repository, "v1")
    empty = client.push_blob(repository, b"{}")
    payload = client.push_blob(repository, b'{"spdxVersion": "SPDX-2.3"}')
    sbom = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM_TYPE,
            "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": SBOM_TYPE, "digest": payload, "size": 27}],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": image,
                "size": manifest_size(client, repository, "v1"),
            },
        }
    ).encode()
    sbom_digest = client.push_manifest(repository, sha256_digest(sbom), sbom, OCI_MANIFEST)
    listing = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": len(sbom), "artifactType": SBOM_TYPE}
        ],
    }
    client.push_manifest(repository, fallback_tag(image), json.dumps(listing).encode(), OCI_INDEX)
    target = unique("signed-mirror")

    document = summary_of(
        run_mirror(
            world,
            tmp_path / "home",
            "--json",
            "--referrers",
            f"{source.host}/{repository}:v1",
            f"{world.ecr_registry_host()}/{target}",
        )
    )

    [copied] = document["images"]
    assert copied["referrers"] == [
        {"subject": image, "digest": sbom_digest, "artifact_type": SBOM_TYPE, "media_type": OCI_MANIFEST}
    ]
    assert world.registry_client("ecr").manifest_digest(target, sbom_digest) == sbom_digest


def test_a_missing_image_exits_1_and_a_malformed_reference_exits_2(world: World, tmp_path: Path) -> None:
    source = world.registries["anonymous"]

    missing = run_mirror(
        world, tmp_path / "home", f"{source.host}/{unique('absent')}:v1", f"{source.host}/x/y"
    )
    malformed = run_mirror(world, tmp_path / "home", f"{source.host}/UPPER/case:v1", f"{source.host}/x/y")

    assert missing.returncode == 1
    assert "not found" in missing.stderr
    assert malformed.returncode == 2
    assert "must be lowercase" in malformed.stderr
