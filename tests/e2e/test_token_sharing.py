"""One ECR token cache per process: a pull secret and a mirror pushing as the same AWS identity share one
token, so each refresh cycle costs that identity one GetAuthorizationToken (counted at moto), not one per
user. Measured before the shared cache: 11-12 calls in 6 cycles; with it: 6.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from mirror_support import ALLOW_LOOPBACK, API_VERSION, image_mirror, request_sync, synced
from repository_support import apply, short_token_lives

from ecr_sandbox.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(200)]

# A refresh cycle of 5 s (expiry - lead), short enough to count several.
LIFETIME_SECONDS, LEAD_SECONDS = 8, 3
CYCLE_SECONDS = LIFETIME_SECONDS - LEAD_SECONDS
CYCLES = 6
PASSES_PER_CYCLE = 4


def token_calls(world: World) -> int:
    return sum(1 for call in world.aws_calls() if call.operation == "GetAuthorizationToken")


def test_a_pull_secret_and_a_mirror_of_one_identity_share_its_token(
    world: World, operator: Any, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    operator(
        **ALLOW_LOOPBACK,
        # Both use the operator's own credentials: the pull secret through the single-tenant opt-in, the
        # mirror because its destination names no roleArn. One identity, two users.
        ECR_OPERATOR_PULL_SECRETS_USE_OPERATOR_CREDENTIALS_SINGLE_TENANT="true",
        **short_token_lives(lifetime=LIFETIME_SECONDS, lead=LEAD_SECONDS),
    )
    world.registry_client("anonymous").push_image(f"{namespace}/app", "v1")
    apply(
        world,
        {
            "apiVersion": API_VERSION,
            "kind": "EcrRepository",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {
                "repositoryName": f"{namespace}/app",
                "registry": {"region": world.region},
                "pullSecret": {},
            },
        },
    )
    source = f"{world.registries['anonymous'].host}/{namespace}/app"
    apply(
        world,
        image_mirror(
            namespace, "app", source, tags={"list": ["v1"]}, destination={"repositoryRef": {"name": "app"}}
        ),
    )
    synced(world, namespace, "app")

    before = token_calls(world)
    started = time.monotonic()
    while time.monotonic() - started < CYCLES * CYCLE_SECONDS:
        request_sync(world, namespace, "app")  # each pass authenticates at ECR with the identity's token
        time.sleep(CYCLE_SECONDS / PASSES_PER_CYCLE)
    calls = token_calls(world) - before

    with capsys.disabled():
        print(f"\nGetAuthorizationToken calls in {CYCLES} cycles, one pull secret + one mirror: {calls}")
    # One per cycle; a cycle boundary at either end of the window may add or drop one.
    assert CYCLES - 1 <= calls <= CYCLES + 1
