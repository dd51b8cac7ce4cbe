"""``ecr-sandbox up|down|demo``: the test world detached for manual work, or the whole product demo.

A command of its own, not of ``ecr-operator``: the product never imports the test world.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ecr_sandbox.processes import ProcessError
from ecr_sandbox.tools import ToolMissingError
from ecr_sandbox.world import World


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecr-sandbox",
        description="The local test world (Kubernetes control plane, moto, registries), or the demo.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a world in the background and write STATE_DIR/env")
    up.add_argument("--state-dir", type=Path, required=True, help="where the world keeps its files and logs")
    up.add_argument(
        "--apply",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="YAML file or directory (e.g. crds/) to apply before the controllers start; repeatable",
    )
    down = commands.add_parser("down", help="stop the world running in STATE_DIR")
    down.add_argument("--state-dir", type=Path, required=True)
    commands.add_parser(
        "demo",
        help="a world, the operator and examples/ from the current directory (what `make demo` runs)",
        description="Environment: DEMO_ONCE=1 exits after printing; DEMO_STATE_DIR (default .sandbox/demo).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if options.command == "demo":
        from ecr_sandbox.demo import run_demo

        return run_demo()
    if options.command == "up":
        try:
            world = World.start(options.state_dir, detach=True, manifests=options.apply)
        except (ProcessError, ToolMissingError, RuntimeError) as error:
            print(f"sandbox up failed: {error}", file=sys.stderr)
            return 1
        milestones = ", ".join(
            f"{name} at {seconds:.1f}s" for name, seconds in world.startup_milestones.items()
        )
        print(f"sandbox up in {world.startup_seconds:.1f}s ({milestones})")
        print(f"kube-apiserver  {world.apiserver_url}")
        print(f"moto (AWS)      {world.aws_endpoint}")
        for info in world.registries.values():
            print(f"registry {info.name:<10} {info.host}")
        print(f"logs in {world.state_dir / 'logs'}; use it with:  source {world.env_file}")
        return 0
    try:
        world = World.attach(options.state_dir)
    except FileNotFoundError as error:
        print(f"sandbox down: {error}", file=sys.stderr)
        return 1
    world.stop()
    print(f"sandbox in {world.state_dir} stopped")
    return 0
