"""The scale regression guard of issue 10 (not a timing test): what converging and deleting many
EcrRepository objects costs, counted per object in the apiserver's audit log and moto's call log.

At 10,000 objects every extra write or AWS call per object is 10,000 more requests; the bounds here are
the issue's targets, checked at 500 objects created at once (tags, a 2-rule lifecycle policy, a
repository policy: the benchmark's object, see bench/scale.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import repository_support as support

from ecr_sandbox.kube import AuditEvent
from ecr_sandbox.world import World
from operator_fixture import ChartIdentity
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

OBJECTS = 500
CREATORS = 4
WRITES_PER_CREATED = 3
AWS_CALLS_PER_CREATED = 5
WRITES_PER_DELETED = 1
LIFECYCLE_RULES = [
    {"selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 7}},
    {
        "selection": {
            "tagStatus": "tagged",
            "tagPrefixes": ["v"],
            "countType": "imageCountMoreThan",
            "countNumber": 20,
        }
    },
]
GRANTS = [{"principals": ["210987654321"], "actions": "pull"}]


def writes_in(world: World, username: str, namespace: str) -> list[AuditEvent]:
    return [
        event for event in world.audit_events(username) if event.is_write and event.namespace == namespace
    ]


def breakdown(events: list[AuditEvent]) -> str:
    """``verb resource/subresource: count`` for a failure message: which write is the one too many."""
    counted = Counter(
        f"{event.verb} {event.resource}{'/' + event.subresource if event.subresource else ''}"
        for event in events
    )
    return ", ".join(f"{line}: {count}" for line, count in counted.most_common())


def repositories_in(world: World, namespace: str) -> list[dict[str, object]]:
    listed = world.kube_client().call("GET", f"{support.API_PATH}/namespaces/{namespace}/ecrrepositories")
    items: list[dict[str, object]] = listed["items"]
    return items


def create_at_once(world: World, objects: list[dict[str, object]]) -> None:
    """``kubectl create`` in 4 processes at once: one kubectl creates ~10 objects/s on 2 busy cores."""
    slices = [objects[start::CREATORS] for start in range(CREATORS)]
    with ThreadPoolExecutor(CREATORS) as pool:
        for done in [pool.submit(create, world, part) for part in slices]:
            done.result()


def create(world: World, objects: list[dict[str, object]]) -> None:
    world.kubectl(
        "create",
        "--filename",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        timeout=180,
    )


def test_many_repositories_cost_few_writes_and_aws_calls_per_object(
    world: World,
    operator: support.Operator,
    chart_identity: ChartIdentity,
    namespaces: Callable[[], str],
) -> None:
    namespace = namespaces()
    # The default drift interval (10 min): no drift pass lands inside the counts.
    operator(ECR_OPERATOR_NAMESPACES=namespace)
    objects = [
        support.repository(
            namespace,
            f"app-{index}",
            tags={"team": "a", "index": str(index)},
            lifecyclePolicy={"rules": LIFECYCLE_RULES},
            access={"grants": GRANTS},
        )
        for index in range(OBJECTS)
    ]
    aws_mark = support.wait_for_quiet_aws(world, quiet=1.0)
    create_at_once(world, objects)

    eventually(
        f"all {OBJECTS} repositories Ready",
        lambda: (
            sum(
                support.condition(document).get("status") == "True"
                for document in repositories_in(world, namespace)
            )
            == OBJECTS
        ),
        timeout=150,
        interval=1.0,
    )
    aws_end = support.wait_for_quiet_aws(world, quiet=2.0)
    created_writes = writes_in(world, chart_identity.username, namespace)
    aws_calls = support.calls_since(world, aws_mark)[: aws_end - aws_mark]

    world.kubectl("delete", "ecrrepositories", "--all", "--namespace", namespace, "--wait=false")
    eventually(
        f"all {OBJECTS} objects gone",
        lambda: not repositories_in(world, namespace),
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
        f"created: {breakdown(created_writes)}; "
        f"AWS: {dict(Counter(call.operation for call in aws_calls).most_common())}; "
        f"deleted: {breakdown(deleted_writes)}"
    )
    print(f"\nscale guard at {OBJECTS} objects: {measured}; {details}")
    missed = {name: value for name, (value, bound) in measured.items() if value > bound}
    assert missed == {}, details
