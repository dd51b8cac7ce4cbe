"""Fixtures for every test layer: the real test world, started lazily once per session.

Set ``ECR_SANDBOX_ATTACH=DIR`` to run against a world ``ecr-sandbox up --state-dir DIR`` started
(faster edit-test loops; that world is left running).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from ecr_sandbox.processes import tail
from ecr_sandbox.world import World

# The ``operator`` fixture (``ecr-operator run`` as a real process), for the e2e and chaos layers.
pytest_plugins = ["operator_fixture"]

REPO_ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL_LINES = 60
WORLD_KEY = pytest.StashKey[World]()


def _crd_manifests() -> list[Path]:
    # Installed before kube-controller-manager starts, so its garbage collector watches the operator's kinds
    # from the first second instead of after its next 30 s discovery resync.
    crds = REPO_ROOT / "crds"
    return [crds] if crds.is_dir() and any(crds.glob("*.yaml")) else []


@pytest.fixture(scope="session")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    attach_dir = os.environ.get("ECR_SANDBOX_ATTACH")
    if attach_dir:
        request.config.stash[WORLD_KEY] = World.attach(Path(attach_dir))
        yield request.config.stash[WORLD_KEY]
        return
    started = World.start(tmp_path_factory.mktemp("world"), manifests=_crd_manifests())
    request.config.stash[WORLD_KEY] = started
    try:
        yield started
    finally:
        del request.config.stash[WORLD_KEY]
        started.stop(discard_data=True)


@pytest.fixture
def namespace(world: World) -> Iterator[str]:
    """A fresh namespace ``t-<random>``, deleted (without waiting) after the test."""
    name = world.create_namespace()
    yield name
    world.delete_namespace(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test that used the world shows the tail of every world process log."""
    report = yield
    world = item.config.stash.get(WORLD_KEY, None)
    if report.failed and world is not None and "world" in getattr(item, "fixturenames", ()):
        for name, path in world.logs().items():
            report.sections.append(
                (f"world log {name} (last {LOG_TAIL_LINES} lines)", tail(path, LOG_TAIL_LINES))
            )
    return report
