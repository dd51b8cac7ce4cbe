"""kopf as this operator configures it: its bookkeeping lands under ecr-operator.io, never kopf.zalando.org.

The e2e tests see the diff-base annotation on real objects; handler progress and the finalizer only
appear while a handler is retrying or a deletion handler exists, so they are checked here against kopf's
own storage code.
"""

from __future__ import annotations

import copy
import os

import kopf
import pytest

from ecr_operator.config import Settings
from ecr_operator.handlers.startup import configure_kopf
from ecr_operator.kube import Kube, KubeConnection
from ecr_operator.kube.client import ApiClient
from ecr_operator.metrics import Metrics
from ecr_operator.runtime import Runtime

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.upper().startswith("ECR_OPERATOR_"):
            monkeypatch.delenv(name)
    return Settings()


@pytest.fixture
def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    configured = kopf.OperatorSettings()
    configure_kopf(configured, settings)
    return configured


def an_object(kind: str = "EcrRepository") -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "ecr-operator.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": "app", "namespace": "team-a", "annotations": {}},
            "spec": {"registry": {"region": "us-east-1"}},
        }
    )


def test_the_finalizer_is_the_operators_own(kopf_settings: kopf.OperatorSettings) -> None:
    assert kopf_settings.persistence.finalizer == "ecr-operator.io/finalizer"


def test_handler_progress_is_kept_in_annotations_under_the_operators_domain(
    kopf_settings: kopf.OperatorSettings,
) -> None:
    patch = kopf.Patch()

    kopf_settings.persistence.progress_storage.store(
        key=kopf.HandlerId("reconcile_repository"),
        record={"started": "2025-01-01T00:00:00", "retries": 2, "delayed": "2025-01-01T00:01:00"},
        body=an_object(),
        patch=patch,
    )

    annotations = set(patch["metadata"]["annotations"])
    assert "ecr-operator.io/reconcile_repository" in annotations
    assert all(key.startswith("ecr-operator.io/") for key in annotations)
    # Status fields outside the CRD schema are pruned by the apiserver: progress kept there would be lost.
    assert "status" not in patch


def test_the_diff_base_is_kept_under_the_operators_domain(kopf_settings: kopf.OperatorSettings) -> None:
    body, patch = an_object("ImageMirror"), kopf.Patch()
    storage = kopf_settings.persistence.diffbase_storage

    storage.store(body=body, patch=patch, essence=storage.build(body=body))

    assert "ecr-operator.io/last-handled-configuration" in patch["metadata"]["annotations"]


def test_no_diff_base_is_written_to_repositories(kopf_settings: kopf.OperatorSettings) -> None:
    # EcrRepository has no create/update handlers (observedGeneration says what is due): kopf's only
    # write to one is its finalizer.
    body, patch = an_object(), kopf.Patch()
    storage = kopf_settings.persistence.diffbase_storage

    storage.store(body=body, patch=patch, essence=storage.build(body=body))

    assert not patch
    assert storage.fetch(body=body) is None


def test_watch_timeouts_are_whole_seconds(kopf_settings: kopf.OperatorSettings) -> None:
    # kopf sends str(server_timeout) as timeoutSeconds; the apiserver answers "300.0" with 400 Bad Request.
    assert str(kopf_settings.watching.server_timeout).isdigit()
    assert kopf_settings.watching.client_timeout is not None
    assert kopf_settings.watching.client_timeout > float(kopf_settings.watching.server_timeout or 0)


def test_every_object_shares_the_one_runtime(settings: Settings) -> None:
    # Nothing connects until the client is started and a call is made.
    runtime = Runtime.create(settings, Kube(ApiClient(KubeConnection(server="https://127.0.0.1:1"), 1)))

    # kopf shallow-copies the memo per object; the copy must be the process-wide runtime itself.
    assert copy.copy(runtime) is runtime
    assert isinstance(runtime.metrics, Metrics)
