"""The mirror benchmarks of issue 5: ``ecr-operator mirror`` against skopeo, crane, regctl and regsync.

Every tool runs as a process started the same way (start-up counts for all), copying from the world's
anonymous registry to its "ecr" registry (htpasswd credentials from one auth file, TLS with the world's
CA). Each run copies fresh content (see bench.content) into a repository no run used before, runs of
the tools are interleaved so that background load hits them alike, and after every run the destination
digests are checked against the source: a copy that changed a digest would not count.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol, TypeVar

import yaml

from bench.content import (
    config_for,
    gzip_of_random,
    image_manifest,
    push_bytes,
    push_file,
    push_image,
    push_index,
    push_manifest,
    write_gzip_of_random,
)
from bench.latency import delayed
from bench.measure import CommandFailed, Measured, require_gnu_time, run_measured
from bench.peers import Peers
from bench.report import BenchLine, Target, median, ours_at_most, ours_equal, ratio_at_most
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.reference import Reference, parse_reference
from ecr_operator.registry.transport import AiohttpSender, create_session
from ecr_sandbox.registries import RegistryInfo, RegistryRequest, parse_access_log
from ecr_sandbox.world import World

T = TypeVar("T")
MB = 1_000_000
TAGS = 50
ROUND_TRIP = 0.020
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/s390x")


@dataclass(frozen=True)
class Runs:
    """How many times each case runs per tool (the median is reported)."""

    single: int
    multi_arch: int
    sync: int
    large_layer: int
    latency: int

    @classmethod
    def all(cls, runs: int) -> Runs:
        return cls(**{case.name: runs for case in fields(cls)})


# A sync run copies 50 tags and a large-layer run 1 GiB: these run fewer times.
DEFAULT_RUNS = Runs(single=5, multi_arch=5, sync=3, large_layer=2, latency=3)


@dataclass
class Stage:
    """Where the benchmarks run: the world, a scratch folder, credentials, the tools, the samples."""

    world: World
    work: Path
    peers: Peers
    runs: Runs
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    samples: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _seed: int = field(default_factory=lambda: secrets.randbits(32))

    @property
    def source(self) -> RegistryInfo:
        return self.world.registries["anonymous"]

    @property
    def destination(self) -> RegistryInfo:
        return self.world.registries["ecr"]

    # Scratch HOME, and the one auth file (also as a docker config) every tool reads.
    home: Path = field(init=False)
    auth_file: Path = field(init=False)
    docker_config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home, self.auth_file, self.docker_config = (
            self.work / name for name in ("home", "auth.json", "docker")
        )

    def fresh_seed(self) -> int:
        self._seed += 1
        return self._seed

    def repository(self, side: str, case: str, tool: str, run: int) -> str:
        """A repository name no earlier run (of this bench or another on the same world) used."""
        return f"bench-{self.run_id}/{side}/{case}/{tool}-{run}"

    def write_credentials(self, extra_destination_hosts: Sequence[str] = ()) -> None:
        """One auth file for every tool: the destination's user under its host (and proxy hosts)."""
        registry = self.destination
        assert registry.username is not None
        assert registry.password is not None
        token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
        auths = {host: {"auth": token} for host in (registry.host, *extra_destination_hosts)}
        document = json.dumps({"auths": auths}, indent=2)
        self.docker_config.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.auth_file.write_text(document)
        (self.docker_config / "config.json").write_text(document)

    def env(self) -> dict[str, str]:
        """The same environment for every tool; HOME is scratch, so no tool reads the user's config."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TMPDIR": str(self.work),
            "DOCKER_CONFIG": str(self.docker_config),
            "REGISTRY_AUTH_FILE": str(self.auth_file),
            # The world's CA as the system roots: Go's crypto/x509 (crane, regctl, regsync) and OpenSSL
            # (ours) both read SSL_CERT_FILE; skopeo is given the same CA with --*-cert-dir.
            "SSL_CERT_FILE": str(self.world.ca_bundle),
        }

    def run(self, argv: Sequence[str]) -> Measured:
        return run_measured(argv, env=self.env(), cwd=self.work, timeout=900)

    def measure(
        self,
        case: str,
        tool: Copier,
        argv: Sequence[str] | None,
        repository: str,
        expected: Mapping[str, str],
    ) -> Measured | None:
        """Run one copy and check that ``repository`` now has the ``expected`` tag digests. A peer that
        fails is noted and left out of this sample; ours fails the benchmark (its numbers must never be
        quietly missing)."""
        if argv is None:
            raise ValueError(f"{tool.name} has no command for {case}")
        try:
            measured = self.run(argv)
            check_copied(self, tool.name, repository, expected)
        except (CommandFailed, RuntimeError) as error:
            if tool.name == "ours":
                raise
            self.notes.append(f"{case}: {tool.name} failed: {str(error)[:500]}")
            print(f"bench: {case}: {tool.name} failed, left out of this run", file=sys.stderr)
            return None
        return measured

    def record(self, case: str, tool: str, measured: Measured, **extra: float) -> None:
        self.samples.setdefault(case, {}).setdefault(tool, []).append(
            {
                "seconds": round(measured.seconds, 4),
                "cpu_seconds": round(measured.cpu_seconds, 4),
                "max_rss_mb": round(measured.max_rss_bytes / MB, 1),
                **extra,
            }
        )

    def median_of(self, case: str, tool: str, key: str) -> float | None:
        samples = self.samples.get(case, {}).get(tool)
        return median([sample[key] for sample in samples]) if samples else None

    def client_call(self, work: Callable[[RegistryClient], Awaitable[T]]) -> T:
        """Run ``work`` with a registry client of our own (anonymous: the source needs no credentials)."""

        async def main() -> T:
            async with create_session(ca_bundle=self.world.ca_bundle) as session:
                return await work(RegistryClient(AiohttpSender(session)))

        return asyncio.run(main())

    def source_ref(self, repository: str) -> Reference:
        return parse_reference(f"{self.source.host}/{repository}")


# --- tools ---------------------------------------------------------------------------------------


class Copier(Protocol):
    """A tool as the benchmarks drive it; None from copy/sync means it has no such command."""

    @property
    def name(self) -> str: ...

    def warm_up(self) -> list[str]: ...

    def copy(self, source: str, destination: str) -> list[str] | None: ...

    def sync(self, stage: Stage, source_repo: str, destination_repo: str) -> list[str] | None: ...


@dataclass(frozen=True)
class FixedArguments:
    """A tool whose commands are fixed arguments before SRC and DST; None: it has no such command."""

    name: str
    executable: Path
    copy_arguments: tuple[str, ...] | None
    sync_arguments: tuple[str, ...] | None
    warm_up_arguments: tuple[str, ...] = ("version",)

    def warm_up(self) -> list[str]:
        return [str(self.executable), *self.warm_up_arguments]

    def copy(self, source: str, destination: str) -> list[str] | None:
        return self._command(self.copy_arguments, source, destination)

    def sync(self, stage: Stage, source_repo: str, destination_repo: str) -> list[str] | None:
        return self._command(self.sync_arguments, source_repo, destination_repo)

    def _command(self, arguments: tuple[str, ...] | None, source: str, destination: str) -> list[str] | None:
        return None if arguments is None else [str(self.executable), *arguments, source, destination]


@dataclass(frozen=True)
class Skopeo:
    executable: Path
    # --src-cert-dir, --dest-cert-dir, --authfile: skopeo is told where the world's CA and credentials are.
    access: tuple[str, ...]
    name: str = "skopeo"

    def warm_up(self) -> list[str]:
        return [str(self.executable), "--version"]

    def copy(self, source: str, destination: str) -> list[str]:
        # --all: every platform of an index (else only the host's, under a rewritten index);
        # --preserve-digests: fail rather than change a digest.
        return [
            str(self.executable),
            "copy",
            "--all",
            "--preserve-digests",
            *self.access,
            f"docker://{source}",
            f"docker://{destination}",
        ]

    def sync(self, stage: Stage, source_repo: str, destination_repo: str) -> list[str]:
        # skopeo sync puts the source's last path component under the destination it is given.
        prefix, _, leaf = destination_repo.rpartition("/")
        if leaf != source_repo.rpartition("/")[2]:
            raise ValueError("skopeo sync keeps the repository's last name: use the same one on both sides")
        return [
            str(self.executable),
            "sync",
            "--src=docker",
            "--dest=docker",
            "--all",
            "--preserve-digests",
            *self.access,
            source_repo,
            prefix,
        ]


@dataclass(frozen=True)
class Regsync:
    """regclient's sync tool: a config file per sync, no copy command (regctl copies)."""

    executable: Path
    name: str = "regsync"

    def warm_up(self) -> list[str]:
        return [str(self.executable), "version"]

    def copy(self, source: str, destination: str) -> None:
        return None

    def sync(self, stage: Stage, source_repo: str, destination_repo: str) -> list[str]:
        ca = stage.world.ca_bundle.read_text()
        destination = stage.destination
        config = {
            "version": 1,
            "creds": [
                {"registry": source_repo.partition("/")[0], "regcert": ca},
                {
                    "registry": destination_repo.partition("/")[0],
                    "regcert": ca,
                    "user": destination.username,
                    "pass": destination.password,
                },
            ],
            # As many tags at once as ours copies (--jobs 4).
            "defaults": {"parallel": 4, "skipDockerConfig": True},
            "sync": [{"source": source_repo, "target": destination_repo, "type": "repository"}],
        }
        path = stage.work / f"regsync-{destination_repo.replace('/', '_').replace(':', '_')}.yml"
        path.write_text(yaml.safe_dump(config))
        return [str(self.executable), "once", "-c", str(path)]


def copiers(stage: Stage) -> list[Copier]:
    ours = FixedArguments(
        "ours",
        Path(sys.executable).with_name("ecr-operator"),
        copy_arguments=("mirror", "--no-progress"),
        sync_arguments=("mirror", "--no-progress", "--all-tags"),
        warm_up_arguments=("mirror", "--help"),
    )
    found: list[Copier] = [ours]
    peers = stage.peers
    if peers.skopeo:
        cert_dir = stage.world.registry_cert_dir
        access = (
            f"--src-cert-dir={cert_dir}",
            f"--dest-cert-dir={cert_dir}",
            f"--authfile={stage.auth_file}",
        )
        found.append(Skopeo(peers.skopeo, access))
    if peers.crane:
        found.append(FixedArguments("crane", peers.crane, ("copy",), ("copy", "--all-tags")))
    if peers.regctl:
        # regsync is regclient's sync tool.
        found.append(FixedArguments("regctl", peers.regctl, ("image", "copy"), None))
    if peers.regsync:
        found.append(Regsync(peers.regsync))
    return found


def copying(tools: Sequence[Copier]) -> list[Copier]:
    return [tool for tool in tools if tool.copy("a/b:c", "d/e:f") is not None]


def syncing(stage: Stage, tools: Sequence[Copier]) -> list[Copier]:
    return [tool for tool in tools if tool.sync(stage, "h:1/a/app", "h:1/b/app") is not None]


def rounds(tools: Sequence[Copier], runs: int) -> Iterator[tuple[int, Copier]]:
    """Every tool once per round, each round starting with another tool, so none always goes first."""
    for run in range(runs):
        shift = run % len(tools)
        for tool in [*tools[shift:], *tools[:shift]]:
            yield run, tool


# --- checks and bookkeeping ----------------------------------------------------------------------


def settle() -> None:
    """Flush what seeding wrote, so the kernel's writeback does not land inside a measured run."""
    os.sync()


def check_copied(stage: Stage, tool: str, repository: str, expected: Mapping[str, str]) -> None:
    destination = stage.world.registry_client("ecr")
    for tag, digest in expected.items():
        found = destination.manifest_digest(repository, tag)
        if found != digest:
            raise RuntimeError(f"{tool} left {repository}:{tag} at {found}; the source has {digest}")


def forget_blob(stage: Stage, digest: str) -> None:
    """Delete a blob's bytes from both registries' storage once no run needs it (1 GiB each)."""
    hex_digest = digest.removeprefix("sha256:")
    for registry in ("anonymous", "ecr"):
        data = (
            stage.world.state_dir
            / "registries"
            / registry
            / "data/docker/registry/v2/blobs/sha256"
            / hex_digest[:2]
            / hex_digest
            / "data"
        )
        data.unlink(missing_ok=True)


class AccessLog:
    """New requests in a registry's access log since this object was made."""

    def __init__(self, registry: RegistryInfo) -> None:
        self.path = registry.access_log
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def requests(self) -> list[RegistryRequest]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", errors="replace")
        return parse_access_log(text)

    def since(self) -> list[tuple[str, str]]:
        return [(request.method, request.path) for request in self.requests()]


def content_gets(requests: Sequence[tuple[str, str]]) -> int:
    """Manifest and blob GETs: what Docker Hub counts as pulls (a tag listing is not one)."""
    return sum(
        1 for method, path in requests if method == "GET" and ("/manifests/" in path or "/blobs/" in path)
    )


# --- seeding -------------------------------------------------------------------------------------


def seed_single(stage: Stage, repository: str) -> str:
    layers = [gzip_of_random(20 * MB, stage.fresh_seed()) for _ in range(5)]
    source = stage.source_ref(repository)

    async def push(client: RegistryClient) -> str:
        return (await push_image(client, source, "v1", layers=layers, salt=repository)).digest

    return stage.client_call(push)


def seed_multi_arch(stage: Stage, repository: str) -> str:
    source = stage.source_ref(repository)
    seed = stage.fresh_seed()

    async def push(client: RegistryClient) -> str:
        index = await push_index(
            client, source, "v1", platforms=PLATFORMS, layer_sizes=(10 * MB, 10 * MB), seed=seed
        )
        return index.digest

    return stage.client_call(push)


def seed_tags(stage: Stage, repository: str) -> dict[str, str]:
    """TAGS images sharing a 4 MB base layer, each with a 100 kB layer of its own, as app tags do."""
    source = stage.source_ref(repository)
    base = gzip_of_random(4 * MB, stage.fresh_seed())
    own_layers = [gzip_of_random(100_000, stage.fresh_seed()) for _ in range(TAGS)]

    async def push(client: RegistryClient) -> dict[str, str]:
        tags = {}
        for number, own in enumerate(own_layers):
            tag = f"1.{number}.0"
            tags[tag] = (await push_image(client, source, tag, layers=[base, own], salt=repository)).digest
        return tags

    return stage.client_call(push)


def seed_large(stage: Stage, repository: str) -> tuple[str, str]:
    """A 1 GiB layer image; returns (manifest digest, layer digest)."""
    source = stage.source_ref(repository)
    path = stage.work / "large-layer.gz"
    blob = write_gzip_of_random(path, 1 << 30, stage.fresh_seed())

    async def push(client: RegistryClient) -> str:
        layer = await push_file(client, source, path, blob)
        config = await push_bytes(client, source, config_for("linux/amd64", [layer], repository))
        return (await push_manifest(client, source, "v1", image_manifest(config, [layer]))).digest

    try:
        return stage.client_call(push), blob.digest
    finally:
        path.unlink()


# --- cases ---------------------------------------------------------------------------------------


def single_image_cold(stage: Stage, tools: Sequence[Copier]) -> None:
    cold_copy(stage, tools, "single_image_cold", "single", stage.runs.single, seed_single)


def multi_arch_cold(stage: Stage, tools: Sequence[Copier]) -> None:
    cold_copy(stage, tools, "multi_arch_cold", "multi", stage.runs.multi_arch, seed_multi_arch)


def cold_copy(
    stage: Stage,
    tools: Sequence[Copier],
    case: str,
    slug: str,
    runs: int,
    seed: Callable[[Stage, str], str],
) -> None:
    """One image tagged v1, freshly seeded per (run, tool), copied into an empty repository by each tool."""
    plan = list(rounds(copying(tools), runs))
    digests = {
        (run, tool.name): seed(stage, stage.repository("src", slug, tool.name, run)) for run, tool in plan
    }
    settle()
    for run, tool in plan:
        target = stage.repository("dst", slug, tool.name, run)
        source = stage.repository("src", slug, tool.name, run)
        argv = tool.copy(f"{stage.source.host}/{source}:v1", f"{stage.destination.host}/{target}:v1")
        measured = stage.measure(case, tool, argv, target, {"v1": digests[(run, tool.name)]})
        if measured is not None:
            stage.record(case, tool.name, measured)


@dataclass(frozen=True)
class SyncRun:
    """One tool's sync of a freshly seeded source repository into a destination no run used before."""

    tool: Copier
    source: str
    target: str
    tags: dict[str, str]
    """tag -> the digest the target must hold afterwards"""

    def argv(self, stage: Stage, source_host: str, destination_host: str) -> list[str] | None:
        return self.tool.sync(stage, f"{source_host}/{self.source}", f"{destination_host}/{self.target}")


def seeded_syncs(stage: Stage, tools: Sequence[Copier], case: str, runs: int) -> list[SyncRun]:
    """The sync runs of ``case`` in order, all seeded before the first one is measured."""
    syncs = []
    for run, tool in rounds(syncing(stage, tools), runs):
        source = f"{stage.repository('src', case, tool.name, run)}/app"
        target = f"{stage.repository('dst', case, tool.name, run)}/app"
        syncs.append(SyncRun(tool, source, target, seed_tags(stage, source)))
    settle()
    return syncs


def tag_sync(stage: Stage, tools: Sequence[Copier]) -> None:
    """A cold sync of TAGS tags, then the same sync again with nothing to do: its time and source GETs."""
    for sync in seeded_syncs(stage, tools, "sync", stage.runs.sync):
        argv = sync.argv(stage, stage.source.host, stage.destination.host)
        measured = stage.measure("tag_sync_cold", sync.tool, argv, sync.target, sync.tags)
        if measured is None:
            continue
        stage.record("tag_sync_cold", sync.tool.name, measured)
        log = AccessLog(stage.source)
        again = stage.measure("noop_resync", sync.tool, argv, sync.target, sync.tags)
        if again is None:
            continue
        stage.record(
            "noop_resync",
            sync.tool.name,
            again,
            source_gets=content_gets(log.since()),
            ms_per_tag=again.seconds * 1000 / TAGS,
        )


def tag_sync_with_latency(stage: Stage, tools: Sequence[Copier]) -> None:
    """The cold tag sync through proxies that add ROUND_TRIP to every round trip on both sides."""
    syncs = seeded_syncs(stage, tools, "latency", stage.runs.latency)
    targets = {
        "source": ("127.0.0.1", int(stage.source.host.rpartition(":")[2])),
        "destination": ("127.0.0.1", int(stage.destination.host.rpartition(":")[2])),
    }
    with delayed(targets, ROUND_TRIP) as routes:
        source_host = f"127.0.0.1:{routes['source'].listen_port}"
        destination_host = f"127.0.0.1:{routes['destination'].listen_port}"
        stage.write_credentials([destination_host])
        try:
            for sync in syncs:
                argv = sync.argv(stage, source_host, destination_host)
                measured = stage.measure("tag_sync_latency", sync.tool, argv, sync.target, sync.tags)
                if measured is not None:
                    stage.record("tag_sync_latency", sync.tool.name, measured)
        finally:
            stage.write_credentials()


def large_layer(stage: Stage, tools: Sequence[Copier]) -> None:
    """A 1 GiB layer: the peak RSS of the whole process (and the time it took). Seeded per run, and
    its bytes deleted after, so the case needs 2 GiB of disk at a time, not 2 GiB per run."""
    able = [tool for tool in copying(tools) if tool.name in ("ours", "skopeo")]
    for run, tool in rounds(able, stage.runs.large_layer):
        source = stage.repository("src", "large", tool.name, run)
        target = stage.repository("dst", "large", tool.name, run)
        digest, layer = seed_large(stage, source)
        settle()
        argv = tool.copy(f"{stage.source.host}/{source}:v1", f"{stage.destination.host}/{target}:v1")
        try:
            measured = stage.measure("large_layer", tool, argv, target, {"v1": digest})
        finally:
            forget_blob(stage, layer)
        if measured is not None:
            stage.record("large_layer", tool.name, measured)


# --- the group -----------------------------------------------------------------------------------

CASES: dict[str, Callable[[Stage, Sequence[Copier]], None]] = {
    "single": single_image_cold,
    "multi-arch": multi_arch_cold,
    "sync": tag_sync,
    "large-layer": large_layer,
    "latency": tag_sync_with_latency,
}


def lines(stage: Stage) -> list[BenchLine]:
    """The comparisons: with skopeo (where issue 5 sets the targets), and with the other peers alike."""
    found: list[BenchLine] = []

    def compare(case: str, name: str, unit: str, key: str, target: Target) -> None:
        ours = stage.median_of(case, "ours", key)
        if ours is None:
            return
        peers = [tool for tool in stage.samples.get(case, {}) if tool != "ours"]
        for peer in peers:
            found.append(
                BenchLine.compare(
                    f"mirror.{name}.vs_{peer}", unit, ours, stage.median_of(case, peer, key), target
                )
            )
        if not peers:
            found.append(BenchLine.compare(f"mirror.{name}", unit, ours, None, target))

    compare("single_image_cold", "single_image_cold_5x20MB", "s", "seconds", ratio_at_most(1.0))
    compare("multi_arch_cold", "multi_arch_cold_3x2x10MB", "s", "seconds", ratio_at_most(1.0))
    compare("tag_sync_cold", f"tag_sync_cold_{TAGS}_tags", "s", "seconds", ratio_at_most(0.8))
    compare("noop_resync", "noop_resync", "ms/tag", "ms_per_tag", ratio_at_most(0.5))
    compare("noop_resync", "noop_resync_source_gets", "requests", "source_gets", ours_equal(0))
    compare("large_layer", "peak_rss_1GiB_layer", "MB", "max_rss_mb", ours_at_most(100))
    compare("large_layer", "large_layer_cold_1GiB", "s", "seconds", ratio_at_most(1.0))
    compare("tag_sync_latency", f"tag_sync_{TAGS}_tags_20ms_rtt", "s", "seconds", ratio_at_most(0.5))
    return found


def run(stage: Stage, only_cases: Sequence[str] = ()) -> list[BenchLine]:
    require_gnu_time()
    stage.write_credentials()
    tools = copiers(stage)
    for tool in tools:  # page cache and Python's bytecode cache warm before anything is measured
        stage.run(tool.warm_up())
    for name, case in CASES.items():
        if only_cases and name not in only_cases:
            continue
        print(f"bench: mirror {name} ...", file=sys.stderr, flush=True)
        case(stage, tools)
    return lines(stage)
