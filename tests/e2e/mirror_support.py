"""Shared steps of the ImageMirror e2e tests: manifests, reading objects back, waiting for a pass.

Conditions are read with ``repository_support.condition`` and waits go through ``waiting.eventually``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from repository_support import apply, condition, repository

from ecr_sandbox.world import World
from waiting import eventually

API_VERSION = "ecr-operator.io/v1alpha1"
# The world's registries listen on 127.0.0.1: an admin allows that as they would an in-cluster registry.
ALLOW_LOOPBACK = {"ECR_OPERATOR_MIRROR_ALLOWED_SOURCES": "127.0.0.1/32"}
SYNC_REQUEST = "reconcile.ecr-operator.io/requestedAt"


def get(world: World, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    result = world.kubectl("get", kind, name, "--namespace", namespace, "--output", "json", check=False)
    if result.returncode != 0:
        return None
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def ecr_repository(world: World, namespace: str, name: str, repository_name: str | None = None) -> str:
    """An EcrRepository (its own controller creates the repository in moto); returns its repositoryName."""
    document = repository(namespace, name, registry={"region": world.region})
    if repository_name is not None:
        document["spec"]["repositoryName"] = repository_name
    apply(world, document)
    return str(document["spec"]["repositoryName"])


def image_mirror(namespace: str, name: str, image: str, **spec: Any) -> dict[str, Any]:
    """An ImageMirror of ``image`` into the EcrRepository of its own name, unless ``spec`` names a
    ``destination``."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ImageMirror",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"image": image},
            "interval": "6h",
            "destination": {"repositoryRef": {"name": name}},
            **spec,
        },
    }


def current(document: Mapping[str, Any]) -> bool:
    """Whether the status speaks of the spec as it is now."""
    observed = (document.get("status") or {}).get("observedGeneration")
    return observed is not None and observed == document["metadata"]["generation"]


def pass_ended(
    world: World, namespace: str, name: str, synced: str, description: str, timeout: float
) -> dict[str, Any]:
    """The mirror once a pass of its current spec ended with ``Synced`` = ``synced``."""

    def probe() -> dict[str, Any] | None:
        document = get(world, "imagemirror", namespace, name)
        if document is None or not current(document):
            return None
        return document if condition(document, "Synced").get("status") == synced else None

    return eventually(f"ImageMirror {namespace}/{name} {description}", probe, timeout)


def synced(world: World, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """The mirror once a pass of its current spec finished cleanly."""
    return pass_ended(world, namespace, name, "True", "to sync", timeout)


def request_sync(world: World, namespace: str, name: str) -> None:
    world.kubectl(
        "annotate", "imagemirror", name, "--namespace", namespace, f"{SYNC_REQUEST}={time.time_ns()}",
        "--overwrite",
    )  # fmt: skip


def ecr_digest(world: World, repository: str, reference: str) -> str | None:
    return world.registry_client("ecr").manifest_digest(repository, reference)
