"""``python -m bench [--only GROUP] [--results DIR]``: run the benchmarks, print the table, keep the lines.

The test world is started for the run (or an existing one attached with ``--attach STATE_DIR``, e.g.
from ``ecr-sandbox up``); peers are found or installed first (see bench.peers).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import mirror, scale
from bench.peers import Peers, find_peers
from bench.report import BenchLine, load_average, print_table, results_path, write_lines, write_meta
from ecr_sandbox.world import World

CRDS = Path(__file__).resolve().parents[1] / "crds"
Group = Callable[[World, Peers, Path, argparse.Namespace], tuple[list[BenchLine], dict[str, object]]]


def run_mirror(
    world: World, peers: Peers, work: Path, options: argparse.Namespace
) -> tuple[list[BenchLine], dict[str, object]]:
    runs = mirror.Runs.all(options.runs) if options.runs else mirror.DEFAULT_RUNS
    stage = mirror.Stage(world=world, work=work, peers=peers, runs=runs)
    found = mirror.run(stage, options.cases)
    for note in stage.notes:
        print(f"bench: {note}", file=sys.stderr)
    return found, {"runs": runs.__dict__, "samples": stage.samples, "notes": stage.notes}


def run_scale(
    world: World, peers: Peers, work: Path, options: argparse.Namespace
) -> tuple[list[BenchLine], dict[str, object]]:
    return scale.run(
        world,
        work,
        options.scale_sizes,
        options.scale_namespaces,
        options.scale_mirrors,
        options.scale_drift_interval,
        options.results / "scale-progress.json",
        options.scale_cases,
    )


GROUPS: dict[str, Group] = {"mirror": run_mirror, "scale": run_scale}


def comma_separated_sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",")]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=sorted(GROUPS), action="append", help="run only this group")
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results"), help="folder for the JSON lines"
    )
    parser.add_argument("--runs", type=int, help="runs per case and tool (default: per case, 2-5)")
    parser.add_argument(
        "--cases", type=lambda text: text.split(","), default=(), help="mirror cases, comma-separated"
    )
    parser.add_argument(
        "--scale-sizes",
        type=comma_separated_sizes,
        default=list(scale.DEFAULT_SIZES),
        help="EcrRepository counts the scale group converges, comma-separated (default 1000,3000,10000)",
    )
    parser.add_argument(
        "--scale-cases",
        type=lambda text: text.split(","),
        default=(),
        help=f"scale cases, comma-separated ({', '.join(scale.CASES)}; default all)",
    )
    parser.add_argument(
        "--scale-namespaces", type=int, default=5000, help="namespaces of the pull-secret fan-out case"
    )
    parser.add_argument(
        "--scale-mirrors", type=int, default=500, help="ImageMirror objects of the steady-state mirror case"
    )
    parser.add_argument(
        "--scale-drift-interval", type=float, default=30.0, help="drift interval (s) of the steady case"
    )
    parser.add_argument("--attach", type=Path, metavar="STATE_DIR", help="use the world running there")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    started = datetime.now(UTC)
    began = time.monotonic()
    load_before = load_average()
    peers = find_peers()
    for note in peers.notes:
        print(f"bench: {note}", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix="ecr-operator-bench-"))
    # The CRDs go in before the world's controllers start, so the garbage collector watches them at once.
    world = (
        World.attach(options.attach) if options.attach else World.start(scratch / "world", manifests=[CRDS])
    )
    lines: list[BenchLine] = []
    meta: dict[str, object] = {}
    try:
        for name in options.only or sorted(GROUPS):
            work = scratch / name
            work.mkdir()
            found, details = GROUPS[name](world, peers, work, options)
            lines += found
            meta[name] = details
    finally:
        if not options.attach:
            world.stop(discard_data=True)
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = load_average()
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
        f"{os.cpu_count()} CPUs; peers: {peers.versions}; {time.monotonic() - began:.0f}s in all\n"
    )
    print_table(lines, sys.stdout)
    path = results_path(options.results, started)
    write_lines(path, lines)
    write_meta(
        path,
        {
            "started": started.isoformat(),
            "seconds": round(time.monotonic() - began, 1),
            "command": " ".join(sys.argv),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "cpus": os.cpu_count(),
            "peers": peers.versions,
            "notes": list(peers.notes),
            **meta,
        },
    )
    print(f"\nresults: {path} (details: {path.with_suffix('.meta.json')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
