"""``make demo``: the whole product on one machine, driven the way a user drives it.

Starts the test world with the CRDs installed, runs ``ecr-operator run`` against it, applies ``examples/``
into a ``demo`` namespace, waits for the objects to settle, prints what ``kubectl get`` shows, and keeps
everything running until Ctrl-C (``DEMO_ONCE=1`` stops after printing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from ecr_operator.sandbox.world import World

DEMO_NAMESPACE = "demo"
SETTLE_TIMEOUT = 60.0


def main() -> int:
    repo_root = Path.cwd()
    state_dir = Path(os.environ.get("DEMO_STATE_DIR", repo_root / ".sandbox" / "demo"))
    once = os.environ.get("DEMO_ONCE", "") not in ("", "0")
    print(f"demo: starting the local world in {state_dir} ...", flush=True)
    world = World.start(state_dir, manifests=[repo_root / "crds"])
    operator: subprocess.Popen[bytes] | None = None
    try:
        print(f"demo: world up in {world.startup_seconds:.1f}s; starting ecr-operator run", flush=True)
        operator_log = state_dir / "logs" / "operator.log"
        with operator_log.open("wb") as log:
            env = {**world.operator_env(), "ECR_OPERATOR_LOG_FORMAT": "text"}
            operator = subprocess.Popen(
                [sys.executable, "-m", "ecr_operator", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        world.kubectl("create", "namespace", DEMO_NAMESPACE)
        print(
            world.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(repo_root / "examples")).stdout, flush=True
        )
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


def _wait_for_conditions(world: World) -> None:
    """Until every object reports a Ready condition (whatever its value) or the timeout passes."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    jsonpath = '{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}'
    while time.monotonic() < deadline:
        result = world.kubectl(
            "get", "ecrrepositories,imagemirrors", "-n", DEMO_NAMESPACE, "-o", f"jsonpath={jsonpath}"
        )
        states = result.stdout.splitlines()
        if states and all(states):
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


if __name__ == "__main__":
    sys.exit(main())
