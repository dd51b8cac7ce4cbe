"""Fixtures of the e2e layer: every operator it starts runs as the Helm chart's ServiceAccount
(tests/operator_fixture.py); ``namespaces`` for the EcrRepository tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from repository_support import API_PATH, Operator

from ecr_sandbox.world import World
from operator_fixture import ChartIdentity


@pytest.fixture(scope="session", autouse=True)
def _operators_run_as_chart(operators_run_as_chart: ChartIdentity) -> ChartIdentity:
    return operators_run_as_chart


@pytest.fixture
def namespaces(world: World, operator: Operator) -> Iterator[Callable[..., str]]:
    """A factory of fresh namespaces (random names, or exactly ``name``). At teardown (while the test's
    operators still run, so finalizers are honoured) every EcrRepository in them is deleted, then the
    namespaces."""
    created: list[str] = []

    def create(name: str | None = None) -> str:
        if name is None:
            created.append(world.create_namespace())
        else:
            world.kube_client().call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
            created.append(name)
        return created[-1]

    yield create

    for namespace in created:
        world.kubectl(
            "delete", "ecrrepositories", "--all", "--namespace", namespace, "--wait=false", check=False
        )
    for namespace in created:
        listing = f"{API_PATH}/namespaces/{namespace}/ecrrepositories"
        deadline = time.monotonic() + 30
        while world.kube_client().call("GET", listing)["items"] and time.monotonic() < deadline:
            time.sleep(0.3)
        for leftover in world.kube_client().call("GET", listing)["items"]:  # no operator left to finish them
            world.kubectl(
                "patch",
                "ecrrepository",
                leftover["metadata"]["name"],
                "--namespace",
                namespace,
                "--type=merge",
                "--patch",
                '{"metadata": {"finalizers": null}}',
                check=False,
            )
        world.delete_namespace(namespace)
