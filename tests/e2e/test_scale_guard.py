"""The scale regression guard of issue 10 (not a timing test): what converging and deleting many
EcrRepository objects costs, counted per object in the apiserver's audit log and moto's call log.

At 10,000 objects every extra write or AWS call per object is 10,000 more requests; the bounds here are
the issue's targets, checked at 500 objects created at once (tags, a 2-rule lifecycle policy, a
repository policy: the benchmark's own object, created the benchmark's way, from bench/scale.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import repository_support as support
from bench import scale

from ecr_sandbox.kube import AuditEvent
from ecr_sandbox.world import World
from operator_fixture import ChartIdentity
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

OBJECTS = 500
WRITES_PER_CREATED = 3
# CreateRepository, PutLifecyclePolicy, SetRepositoryPolicy: a new object is created without a describe.
AWS_CALLS_PER_CREATED = 3
WRITES_PER_DELETED = 1


def writes_in(world: World, username: str, namespace: str) -> list[AuditEvent]:
    return [
        event for event in world.audit_events(username) if event.is_write and event.namespace == namespace
    ]


def test_many_repositories_cost_few_writes_and_aws_calls_per_object(
    world: World,
    operator: support.Operator,
    chart_identity: ChartIdentity,
    namespaces: Callable[[], str],
) -> None:
    namespace = namespaces()
    # The default drift interval (10 min): no drift pass lands inside the counts.
    operator(ECR_OPERATOR_NAMESPACES=namespace)
    objects = [scale.repository(namespace, index) for index in range(OBJECTS)]
    aws_mark = support.wait_for_quiet_aws(world, quiet=1.0)
    scale.create_all(world, objects)

    eventually(
        f"all {OBJECTS} repositories Ready",
        lambda: sum(map(scale.is_ready, scale.repositories_in(world, namespace))) == OBJECTS,
        timeout=150,
        interval=1.0,
    )
    aws_end = support.wait_for_quiet_aws(world, quiet=2.0)
    created_writes = writes_in(world, chart_identity.username, namespace)
    aws_calls = support.calls_since(world, aws_mark)[: aws_end - aws_mark]

    world.kubectl("delete", "ecrrepositories", "--all", "--namespace", namespace, "--wait=false")
    eventually(
        f"all {OBJECTS} objects gone",
        lambda: not scale.repositories_in(world, namespace),
        timeout=120,
        interval=1.0,
    )
    support.wait_for_quiet_aws(world, quiet=2.0)
    deleted_writes = writes_in(world, chart_identity.username, namespace)[len(created_writes) :]

    measured = {
        "writes per created object": (len(created_writes) / OBJECTS, WRITES_PER_CREATED),
        "AWS calls per created object": (len(aws_calls) / OBJECTS, AWS_CALLS_PER_CREATED),
        "writes per deleted object": (len(deleted_writes) / OBJECTS, WRITES_PER_DELETED),
    }
    details = (
        f"created: {scale.by_write(created_writes)}; "
        f"AWS: {scale.by_operation(aws_calls)}; "
        f"deleted: {scale.by_write(deleted_writes)}"
    )
    print(f"\nscale guard at {OBJECTS} objects: {measured}; {details}")
    missed = {name: value for name, (value, bound) in measured.items() if value > bound}
    assert missed == {}, details
