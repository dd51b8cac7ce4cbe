"""``ecr-sandbox demo`` (``make demo``): the whole product on one machine, driven the way a user drives it.

Starts the test world with the CRDs installed, runs ``ecr-operator run`` against it, applies ``examples/``
into a ``demo`` namespace, waits for the objects to settle, prints what ``kubectl get`` shows, and keeps
everything running until Ctrl-C (``DEMO_ONCE=1`` stops after printing).

This machine has no internet, so the public images the examples mirror (Docker Hub, quay.io) are stood in
for by look-alikes pushed into the world's anonymous registry, and the examples' source hosts are pointed
there when applied.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from ecr_sandbox.world import World

DEMO_NAMESPACE = "demo"
SETTLE_TIMEOUT = 90.0
PUBLIC_REGISTRIES = ("docker.io/", "quay.io/")
EXAMPLE_ROLE = "payments-api-deployer"
# The demo namespace's pull-only role, which its pull secrets are minted from (docs/pull-secrets.md).
PULL_ROLE_TEMPLATE = "arn:aws:iam::{accountId}:role/ecr-pull-{namespace}"
SOURCE_SECRET = "quay-pull"  # noqa: S105 -- the Secret object's name
# Look-alikes of what examples/ mirrors: repository -> (tags pushed as multi-platform indexes).
UPSTREAM_IMAGES = {
    "library/nginx": ("1.26.3", "1.27.0", "1.27.1", "1.27.2", "1.27.3", "1.27.4-rc1", "stable-alpine"),
    "prometheus/node-exporter": ("v1.7.0", "v1.8.2", "v1.9.1"),
}


def run_demo() -> int:
    repo_root = Path.cwd()
    state_dir = Path(os.environ.get("DEMO_STATE_DIR", repo_root / ".sandbox" / "demo"))
    once = os.environ.get("DEMO_ONCE", "") not in ("", "0")
    print(f"demo: starting the local world in {state_dir} ...", flush=True)
    world = World.start(state_dir, manifests=[repo_root / "crds"])
    operator: subprocess.Popen[bytes] | None = None
    try:
        print(f"demo: world up in {world.startup_seconds:.1f}s; starting ecr-operator run", flush=True)
        operator_log = state_dir / "logs" / "operator.log"
        pinned_digests = _seed_upstream_images(world)
        _create_example_roles(world)
        with operator_log.open("wb") as log:
            env = {
                **world.operator_env(),
                "ECR_OPERATOR_LOG_FORMAT": "text",
                # The stand-in upstream registry is on loopback, which mirrors may not read by default.
                "ECR_OPERATOR_MIRROR_ALLOWED_SOURCES": "127.0.0.1/32",
                # The admin lets the demo namespace put identity policies on the example's role only.
                "ECR_OPERATOR_ALLOWED_IDENTITY_POLICY_ROLES": json.dumps(
                    [{"pattern": f"arn:aws:iam::*:role/{EXAMPLE_ROLE}", "namespaces": [DEMO_NAMESPACE]}]
                ),
                # Pull secrets carry pull rights only: minted from the namespace's pull role, allowed there.
                "ECR_OPERATOR_PULL_SECRET_ROLE_ARN_TEMPLATE": PULL_ROLE_TEMPLATE,
                "ECR_OPERATOR_ALLOWED_ROLE_ARNS": json.dumps(
                    [{"pattern": _pull_role_arn(world), "namespaces": [DEMO_NAMESPACE]}]
                ),
            }
            operator = subprocess.Popen(
                [sys.executable, "-m", "ecr_operator", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        world.kubectl("create", "namespace", DEMO_NAMESPACE)
        _create_source_credentials(world)
        examples = _examples_pointed_at(world, repo_root / "examples", pinned_digests)
        print(world.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", "-", input=examples).stdout, flush=True)
        _wait_for_conditions(world)
        print(
            world.kubectl("get", "ecrrepositories,imagemirrors", "-n", DEMO_NAMESPACE, "-o", "wide").stdout,
            flush=True,
        )
        print(f"demo: operator log in {operator_log}; to use this world from a shell:")
        print(f"demo:   source {world.env_file} && kubectl get ecrrepo -A")
        if not once:
            print("demo: running; press Ctrl-C to stop", flush=True)
            _wait_for_interrupt()
        return 0 if operator.poll() is None else 1
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGTERM)
            operator.wait(timeout=15)
        world.stop(discard_data=True)
        print("demo: stopped", flush=True)


def _seed_upstream_images(world: World) -> dict[str, str]:
    """Push the look-alikes; returns each repository's digest of a build that is pinned, not tagged."""
    upstream = world.registry_client("anonymous")
    platforms = ("linux/amd64", "linux/arm64", "linux/s390x")
    pinned: dict[str, str] = {}
    for repository, tags in UPSTREAM_IMAGES.items():
        for tag in tags:
            upstream.push_index(repository, tag, platforms=platforms)
        pinned[repository] = upstream.push_index(repository, "pinned-build", platforms=platforms)
    return pinned


def _create_source_credentials(world: World) -> None:
    """The dockerconfigjson Secret examples/imagemirror-create.yaml reads its (private) source with."""
    host = world.registries["anonymous"].host
    auth = base64.b64encode(b"demo:demo").decode()
    config = json.dumps({"auths": {host: {"auth": auth}}})
    world.kubectl(
        "create",
        "secret",
        "docker-registry",
        SOURCE_SECRET,
        "-n",
        DEMO_NAMESPACE,
        "--from-file=.dockerconfigjson=/dev/stdin",
        input=config,
    )


def _create_example_roles(world: World) -> None:
    """The IAM role examples/ecrrepository-full.yaml grants access to, as an admin would have made it."""
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    world.boto3_client("iam").create_role(RoleName=EXAMPLE_ROLE, AssumeRolePolicyDocument=trust)
    _create_pull_role(world)


def _pull_role_arn(world: World) -> str:
    return PULL_ROLE_TEMPLATE.format(accountId=world.account_id, namespace=DEMO_NAMESPACE)


def _create_pull_role(world: World) -> None:
    """The demo namespace's pull role as docs/pull-secrets.md describes it: trusting the operator's
    identity (here the account's root, the world's static credentials), allowed to pull only."""
    iam = world.boto3_client("iam")
    name = _pull_role_arn(world).rsplit("/", 1)[-1]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{world.account_id}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    pull = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": f"arn:aws:ecr:*:{world.account_id}:repository/*",
            },
        ],
    }
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(RoleName=name, PolicyName="ecr-pull", PolicyDocument=json.dumps(pull))


def _examples_pointed_at(world: World, examples: Path, pinned_digests: dict[str, str]) -> str:
    """All example objects as one YAML stream, with public source registries replaced by the stand-in and
    the example's made-up digest pin replaced by a build the stand-in really has."""
    text = "\n---\n".join(path.read_text() for path in sorted(examples.glob("*.yaml")))
    text = re.sub(r"sha256:[0-9a-f]{64}", pinned_digests["prometheus/node-exporter"], text)
    for public in PUBLIC_REGISTRIES:
        text = text.replace(f"image: {public}", f"image: {world.registries['anonymous'].host}/")
    return text


def _wait_for_conditions(world: World) -> None:
    """Until every object is Ready (mirrors have copied their first tags) or the timeout passes."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    jsonpath = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'
    while time.monotonic() < deadline:
        result = world.kubectl(
            "get", "ecrrepositories,imagemirrors", "-n", DEMO_NAMESPACE, "-o", f"jsonpath={jsonpath}"
        )
        states = result.stdout.splitlines()
        if states and all(state == "True" for state in states):
            return
        time.sleep(1)


def _wait_for_interrupt() -> None:
    stop = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
