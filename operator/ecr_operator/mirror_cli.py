"""``ecr-operator mirror SRC DST``: copy an image, or the matching tags of a repository, once.

The same engine as the ImageMirror controller (``registry.copy_image``), for someone without a cluster.
Credentials come from the docker/containers auth files skopeo and docker read, and, for an ECR host
without an entry there, from an ECR authorization token (GetAuthorizationToken with the standard AWS
credential chain). Registry host overrides and the CA bundle are the operator's own settings
(``ECR_OPERATOR_REGISTRY_HOST_OVERRIDES``, ``ECR_OPERATOR_CA_BUNDLE``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ecr_operator.ecr_hosts import ecr_host_region
from ecr_operator.logs import configure_logging
from ecr_operator.registry.auth import (
    ChainedCredentials,
    Credentials,
    CredentialsProvider,
    DockerConfigCredentials,
    InvalidDockerConfig,
)
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.copy import copy_image
from ecr_operator.registry.errors import AuthError, InvalidReference, NotFound, RegistryError
from ecr_operator.registry.platforms import PlatformFilter
from ecr_operator.registry.reference import Reference, parse_reference, validate_tag
from ecr_operator.registry.results import BlobDone, BlobProgress, BlobStarted, ImageCopyResult, ProgressEvent
from ecr_operator.registry.transport import AiohttpSender, create_session
from ecr_operator.tag_patterns import InvalidTagPattern, TagPattern, compile_tag_pattern

EXIT_OK = 0
EXIT_COPY_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_JOBS = 4
MAX_JOBS = 8
# Tags in flight per blob job: a tag with nothing to copy costs two HEADs and no memory, so a resync
# goes faster with more of them, while blobs (memory, connections) stay bounded by --jobs per image.
TAGS_PER_JOB = 2
PROG = "ecr-operator mirror"
SETTINGS_PREFIX = "ECR_OPERATOR_"

# Keys of a docker config entry that carry a credential; entries without any (docker writes
# ``"auths": {"host": {}}`` when a credential helper holds the secret) say nothing and are skipped.
_CREDENTIAL_KEYS = ("auth", "username", "password", "identitytoken", "registrytoken")


class UsageError(ValueError):
    """The command line asks for something that cannot be done as written."""


# --- the command line ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorRequest:
    """A parsed, validated command line."""

    source: Reference
    destination: Reference
    tag_pattern: TagPattern | None
    platforms: PlatformFilter | None
    referrers: bool
    jobs: int
    json_output: bool
    auth_file: Path | None
    progress: bool
    verbose: bool


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Copy an image digest-exact from one registry to another (any OCI registry, ECR "
        "included), or every tag of a repository that matches --tags. Nothing is copied that the "
        "destination already has: a repeated run only sends HEAD requests to the source.",
        epilog="Credentials: --authfile, else REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/"
        "auth.json, $XDG_CONFIG_HOME/containers/auth.json, $DOCKER_CONFIG/config.json (~/.docker/"
        "config.json), ~/.dockercfg (the first file with an entry for a registry wins; credential "
        "helpers are not run). An ECR registry (<account>.dkr.ecr.<region>.amazonaws.com) without an "
        "entry gets an authorization token from the AWS credentials in the environment. "
        "Exit status: 0 copied (or up to date), 1 a copy failed, 2 usage error.",
    )
    parser.add_argument(
        "source",
        metavar="SRC",
        help="image (registry/repository[:tag][@digest]), or a repository with --tags",
    )
    parser.add_argument(
        "destination",
        metavar="DST",
        help="image or repository to copy to; without a tag the source tag is kept",
    )
    tags = parser.add_mutually_exclusive_group()
    tags.add_argument(
        "--tags",
        metavar="REGEX",
        help="copy every tag of the SRC repository that the regular expression matches whole "
        "(SRC and DST name repositories, not tags)",
    )
    tags.add_argument("--all-tags", action="store_true", help="copy every tag of the SRC repository")
    parser.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        action="append",
        default=[],
        help="copy only this platform of a multi-platform image (repeatable); the index "
        "itself is still copied byte-exact, so platforms left out must already be in DST",
    )
    parser.add_argument(
        "--referrers",
        action="store_true",
        help="also copy signatures, SBOMs and attestations that refer to the image",
    )
    parser.add_argument(
        "--jobs",
        metavar="N",
        type=int,
        default=DEFAULT_JOBS,
        help=f"blobs copied at once per image (default {DEFAULT_JOBS}, at most {MAX_JOBS}); with --tags, "
        f"{TAGS_PER_JOB}N tags are handled at once",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        dest="json_output",
        help="print a JSON summary on stdout instead of one line per image",
    )
    parser.add_argument(
        "--authfile",
        metavar="PATH",
        type=Path,
        help="docker/containers auth file to read credentials from (only this one)",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line on stderr (it is only drawn on a terminal anyway)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and each copy on stderr")
    return parser


def parse_request(argv: Sequence[str], *, stderr_is_terminal: bool = False) -> MirrorRequest:
    """Parse and check the command line; UsageError says what is wrong (argparse exits on its own)."""
    options = build_parser().parse_args(list(argv))
    try:
        source = parse_reference(options.source)
        destination = parse_reference(options.destination)
        platforms = PlatformFilter.parse(options.platform) if options.platform else None
    except InvalidReference as error:
        raise UsageError(str(error)) from None
    if not 1 <= options.jobs <= MAX_JOBS:
        raise UsageError(f"--jobs must be between 1 and {MAX_JOBS}")
    pattern_text = ".*" if options.all_tags else options.tags
    tag_pattern: TagPattern | None = None
    if pattern_text is not None:
        try:
            tag_pattern = compile_tag_pattern(pattern_text)
        except InvalidTagPattern as error:
            raise UsageError(f"--tags {pattern_text!r} is not a regular expression: {error.detail}") from None
        if source.tag is not None or source.digest is not None:
            raise UsageError(f"with --tags or --all-tags, SRC names a repository: drop the tag from {source}")
        if destination.tag is not None or destination.digest is not None:
            raise UsageError(
                f"with --tags or --all-tags, DST names a repository: drop the tag from {destination}"
            )
    elif source.tag is None and source.digest is None:
        source = source.with_tag("latest")  # as docker and skopeo read a bare name
    return MirrorRequest(
        source=source,
        destination=destination,
        tag_pattern=tag_pattern,
        platforms=platforms,
        referrers=options.referrers,
        jobs=options.jobs,
        json_output=options.json_output,
        auth_file=options.authfile,
        progress=stderr_is_terminal and not options.no_progress,
        verbose=options.verbose,
    )


# --- credentials --------------------------------------------------------------------------------


def auth_file_candidates(environ: Mapping[str, str], home: Path, explicit: Path | None = None) -> list[Path]:
    """Auth files in the order containers-auth.json(5) reads them (docker's config among them).

    An explicit ``--authfile`` or ``REGISTRY_AUTH_FILE`` is the only file read, as in skopeo.
    """
    if explicit is not None:
        return [explicit]
    if environ.get("REGISTRY_AUTH_FILE"):
        return [Path(environ["REGISTRY_AUTH_FILE"])]
    candidates: list[Path] = []
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
    candidates.append(config_home / "containers" / "auth.json")
    docker_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else home / ".docker"
    candidates.append(docker_dir / "config.json")
    candidates.append(home / ".dockercfg")
    return candidates


def read_auth_file(path: Path) -> DockerConfigCredentials:
    """Credentials of one auth file; InvalidDockerConfig names the file (never a credential)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise InvalidDockerConfig(f"cannot read {path}: {error.strerror}") from None
    except ValueError:
        raise InvalidDockerConfig(f"{path} is not JSON") from None
    if not isinstance(document, dict):
        raise InvalidDockerConfig(f"{path} is not a JSON object")
    # ~/.dockercfg (docker before 1.7) is the bare host -> entry mapping; a config.json may hold no
    # "auths" at all when a credential store keeps every secret.
    auths = document if path.name == ".dockercfg" else document.get("auths", {})
    if not isinstance(auths, dict):
        raise InvalidDockerConfig(f"{path}: 'auths' is not an object")
    usable = {
        key: value
        for key, value in auths.items()
        if isinstance(value, dict) and any(value.get(name) for name in _CREDENTIAL_KEYS)
    }
    try:
        return DockerConfigCredentials.from_json({"auths": usable})
    except InvalidDockerConfig as error:
        raise InvalidDockerConfig(f"{path}: {error}") from None


def load_auth_files(candidates: Sequence[Path], *, required: bool) -> list[DockerConfigCredentials]:
    """Every candidate that exists, parsed; a ``required`` (explicitly named) file must exist."""
    found = []
    for path in candidates:
        if not required and not path.is_file():
            continue
        found.append(read_auth_file(path))
    return found


def ecr_region(registry: str) -> str | None:
    """The region of an ECR registry host (``<account>.dkr.ecr.<region>.amazonaws.com``), else None."""
    return ecr_host_region(registry)


def decode_ecr_token(token: str) -> Credentials:
    """An ECR authorization token is base64 of ``AWS:<password>``."""
    try:
        username, colon, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthError("ECR returned an authorization token that is not base64") from None
    if not colon:
        raise AuthError("ECR returned an authorization token that is not user:password")
    return Credentials(username, password)


def fetch_ecr_credentials(region: str) -> Credentials:
    """GetAuthorizationToken in ``region`` with the environment's AWS credentials (AWS_ENDPOINT_URL too).

    boto3 is imported here, not at the top: it costs a third of a second and 15 MB that copies between
    other registries do not need.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from ecr_operator.aws.session import AwsClients, error_code, error_message
    from ecr_operator.reconcile.identity import AwsIdentity

    client = AwsClients().client("ecr", AwsIdentity(region=region))
    try:
        answer = client.get_authorization_token()
    except (BotoCoreError, ClientError) as error:
        raise AuthError(
            f"ECR authorization token in {region}: {error_code(error)}: {error_message(error)}"
        ) from None
    data = answer.get("authorizationData") or []
    if not data or "authorizationToken" not in data[0]:
        raise AuthError(f"ECR authorization token in {region}: the answer holds no token")
    return decode_ecr_token(data[0]["authorizationToken"])


class EcrTokenCredentials:
    """Credentials for ECR registry hosts from GetAuthorizationToken, fetched once per region.

    A token opens every registry the AWS principal may reach in its region (12 h), so one per region
    serves the whole run.
    """

    def __init__(self, fetch: Callable[[str], Credentials] = fetch_ecr_credentials) -> None:
        self._fetch = fetch
        self._by_region: dict[str, Credentials] = {}
        self._lock = asyncio.Lock()

    async def credentials_for(self, registry: str, repository: str) -> Credentials | None:
        region = ecr_region(registry)
        if region is None:
            return None
        async with self._lock:
            if region not in self._by_region:
                self._by_region[region] = await asyncio.to_thread(self._fetch, region)
            return self._by_region[region]


@dataclass(frozen=True)
class RegistrySettings:
    """The operator settings this command uses."""

    host_overrides: Mapping[str, str] = field(default_factory=dict)
    ca_bundle: Path | None = None


def registry_settings(environ: Mapping[str, str]) -> RegistrySettings:
    """Host overrides and CA bundle from the operator settings (InvalidSettingsError if malformed).

    Without any ``ECR_OPERATOR_*`` variable the settings are their defaults, and pydantic (a tenth of
    a second of start-up) is not imported at all.
    """
    if not any(name.upper().startswith(SETTINGS_PREFIX) for name in environ):
        return RegistrySettings()
    from ecr_operator.config import load_settings

    settings = load_settings()
    return RegistrySettings(settings.registry_host_overrides, settings.ca_bundle)


def registry_endpoints(overrides: Mapping[str, str], registries: Sequence[str]) -> dict[str, str]:
    """Where each ECR registry is really served: its own override, else the ``*`` one, else itself."""
    endpoints = {}
    for registry in registries:
        target = overrides.get(registry) or (overrides.get("*") if ecr_region(registry) else None)
        if target:
            endpoints[registry] = target
    return endpoints


# --- progress -----------------------------------------------------------------------------------


class ProgressLine:
    """One status line on a terminal, redrawn at most ten times a second: a bar over the bytes of the
    blobs started so far (a registry does not say the total before the manifests are read)."""

    WIDTH = 24

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.images_total = 1
        self.images_done = 0
        self._blob_sizes: dict[str, int] = {}
        self._transferred: dict[str, int] = {}
        self._blobs_done = 0
        self._started = clock()
        self._drawn_at: float | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if isinstance(event, BlobStarted):
            self._blob_sizes[event.digest] = event.size
            self._transferred[event.digest] = 0
        elif isinstance(event, BlobProgress):
            self._transferred[event.digest] = event.transferred
        elif isinstance(event, BlobDone):
            self._blobs_done += 1
            if event.outcome == "copied":
                self._transferred[event.digest] = event.size
        self.draw()

    def image_done(self) -> None:
        self.images_done += 1
        self.draw(force=True)

    def render(self) -> str:
        now = self.clock()
        total = sum(self._blob_sizes.values())
        moved = sum(self._transferred.values())
        filled = self.WIDTH * moved // total if total else 0
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        rate = moved / max(now - self._started, 1e-3)
        line = f"[{bar}] {_mib(moved)}/{_mib(total)} MiB {rate / 2**20:.1f} MiB/s, {self._blobs_done} blobs"
        if self.images_total > 1:
            line = f"{self.images_done}/{self.images_total} images " + line
        return line

    def draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < 0.1:
            return
        self._drawn_at = now
        self.stream.write("\r" + self.render() + "\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        if self._drawn_at is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


# --- the work -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagFailure:
    source: Reference
    error: str


@dataclass
class MirrorOutcome:
    copies: list[ImageCopyResult] = field(default_factory=list)
    failures: list[TagFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def connections_for(jobs: int) -> int:
    """Connections the session may open: every blob in flight holds its source GET while it opens the
    destination upload, so each of the tags at once needs two per blob job, plus its manifest requests,
    plus a margin. Fewer, and blobs could hold every connection waiting for a second one."""
    tags = TAGS_PER_JOB * jobs
    return 2 * tags * jobs + 2 * tags + 8


def select_tags(tags: Sequence[str], pattern: TagPattern) -> list[str]:
    """Tags the pattern matches whole, in a stable order; names no client could pull are left out."""
    return sorted(tag for tag in tags if pattern.fullmatch(tag) and _is_tag(tag))


def _is_tag(text: str) -> bool:
    try:
        validate_tag(text)
    except InvalidReference:
        return False
    return True


async def mirror(
    request: MirrorRequest,
    client: RegistryClient,
    progress: ProgressLine | None = None,
) -> MirrorOutcome:
    """Run the copies the request asks for; failures of single tags are collected, not raised."""
    outcome = MirrorOutcome()
    began = time.monotonic()
    if request.tag_pattern is None:
        pairs = [(request.source, request.destination)]
    else:
        listed = await client.list_tags(request.source)
        tags = select_tags(listed, request.tag_pattern)
        if not tags:
            raise NotFound(
                f"no tag of {request.source} matches {request.tag_pattern.pattern!r}"
                f" ({len(listed)} tags listed)"
            )
        pairs = [(request.source.with_tag(tag), request.destination.with_tag(tag)) for tag in tags]
    if progress is not None:
        progress.images_total = len(pairs)
    slots = asyncio.Semaphore(TAGS_PER_JOB * request.jobs)

    async def copy(source: Reference, destination: Reference) -> ImageCopyResult:
        return await copy_image(
            source,
            destination,
            source_client=client,
            platforms=request.platforms,
            referrers=request.referrers,
            concurrency=request.jobs,
            progress=progress,
        )

    async def copy_one(source: Reference, destination: Reference) -> None:
        async with slots:
            try:
                try:
                    result = await copy(source, destination)
                except RegistryError as error:
                    if "MANIFEST_BLOB_UNKNOWN" not in error.codes:
                        raise
                    # A blob another tag's copy was committing at the same moment (see below): the
                    # blobs are all there now, so a second pass only pushes the manifest.
                    result = await copy(source, destination)
            except (RegistryError, InvalidReference) as error:  # e.g. DST pins another digest
                outcome.failures.append(TagFailure(source, _explain(error, destination)))
            else:
                outcome.copies.append(result)
            if progress is not None:
                progress.image_done()

    # Tags of one repository mostly share their base layers. The first tag goes alone, so the others
    # find those blobs in the destination instead of all uploading them at once: bytes saved, and no
    # race in registries that rewrite a repository's blob link non-atomically (distribution 2.8 then
    # refuses a manifest pushed meanwhile with MANIFEST_BLOB_UNKNOWN; measured in `make bench`).
    first, *others = pairs
    await copy_one(*first)
    async with asyncio.TaskGroup() as group:
        for source, destination in others:
            group.create_task(copy_one(source, destination))
    outcome.copies.sort(key=lambda result: str(result.source))
    outcome.failures.sort(key=lambda failure: str(failure.source))
    outcome.seconds = time.monotonic() - began
    return outcome


def _explain(error: RegistryError | InvalidReference, destination: Reference) -> str:
    message = str(error)
    codes = error.codes if isinstance(error, RegistryError) else ()
    if ecr_region(destination.registry) and "NAME_UNKNOWN" in codes:
        message += (
            f" (does the ECR repository {destination.repository} exist? this command does not create it)"
        )
    return message


# --- output -------------------------------------------------------------------------------------


def image_summary(result: ImageCopyResult) -> dict[str, Any]:
    return {
        "source": str(result.source),
        "destination": str(result.destination),
        "tag": result.destination.tag,
        "digest": result.destination_digest,
        "source_digest": result.source_digest,
        "media_type": result.media_type,
        "up_to_date": result.up_to_date,
        "filtered": result.filtered,
        "bytes_copied": result.bytes_copied,
        "blobs_copied": result.blobs_copied,
        "blobs_skipped": result.blobs_skipped,
        "blobs_mounted": result.blobs_mounted,
        "manifests_pushed": result.manifests_pushed,
        "platforms_copied": list(result.platforms_copied),
        "platforms_missing": list(result.platforms_missing),
        "referrers": [
            {
                "subject": referrer.subject,
                "digest": referrer.digest,
                "artifact_type": referrer.artifact_type,
                "media_type": referrer.media_type,
            }
            for referrer in result.referrers
        ],
    }


def summary(request: MirrorRequest, outcome: MirrorOutcome) -> dict[str, Any]:
    """The ``--json`` document."""
    copies = outcome.copies
    return {
        "source": str(request.source),
        "destination": str(request.destination),
        "ok": outcome.ok,
        "seconds": round(outcome.seconds, 3),
        "images": [image_summary(result) for result in copies],
        "failures": [{"source": str(failure.source), "error": failure.error} for failure in outcome.failures],
        "totals": {
            "images": len(copies),
            "up_to_date": sum(result.up_to_date for result in copies),
            "failed": len(outcome.failures),
            "bytes_copied": sum(result.bytes_copied for result in copies),
            "blobs_copied": sum(result.blobs_copied for result in copies),
            "blobs_skipped": sum(result.blobs_skipped for result in copies),
            "blobs_mounted": sum(result.blobs_mounted for result in copies),
            "manifests_pushed": sum(result.manifests_pushed for result in copies),
            "referrers": sum(len(result.referrers) for result in copies),
        },
    }


def describe(result: ImageCopyResult) -> str:
    """One line for humans."""
    where = (
        f"{result.destination.name}:{result.destination.tag}"
        if result.destination.tag
        else str(result.destination)
    )
    if result.up_to_date:
        line = f"{where} up to date at {result.destination_digest}"
    else:
        line = (
            f"{where} copied {result.destination_digest}: {_size(result.bytes_copied)} in "
            f"{result.blobs_copied} blobs ({result.blobs_skipped} already there,"
            f" {result.blobs_mounted} mounted)"
        )
    if result.filtered:
        line += f" (the platforms asked for, of {result.source_digest})"
    if result.platforms_missing:
        line += f"; platforms missing upstream: {', '.join(result.platforms_missing)}"
    if result.referrers:
        line += f"; {len(result.referrers)} referrers"
    return line


# --- entry point --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        request = parse_request(arguments, stderr_is_terminal=sys.stderr.isatty())
    except SystemExit as exit_:  # argparse: --help (0) or a malformed command line (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except UsageError as error:
        return _fail(EXIT_USAGE, str(error))
    try:
        settings = registry_settings(os.environ)
        candidates = auth_file_candidates(os.environ, Path.home(), request.auth_file)
        configs = load_auth_files(candidates, required=request.auth_file is not None)
    except (ValueError, InvalidDockerConfig) as error:  # InvalidSettingsError is a ValueError
        return _fail(EXIT_USAGE, str(error))
    configure_logging("text", "INFO" if request.verbose else "WARNING")
    progress = ProgressLine(sys.stderr) if request.progress else None
    try:
        outcome = asyncio.run(_run(request, settings, configs, progress))
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")
    except RegistryError as error:
        return _fail(EXIT_COPY_FAILED, str(error))
    finally:
        if progress is not None:
            progress.clear()
    if request.json_output:
        print(json.dumps(summary(request, outcome), indent=2))
    else:
        for result in outcome.copies:
            print(describe(result))
    for failure in outcome.failures:
        # Most registry errors already start with the image they are about.
        named = failure.error.startswith(str(failure.source))
        print(f"{PROG}: {'' if named else f'{failure.source}: '}{failure.error}", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_COPY_FAILED


async def _run(
    request: MirrorRequest,
    settings: RegistrySettings,
    configs: Sequence[DockerConfigCredentials],
    progress: ProgressLine | None,
) -> MirrorOutcome:
    providers: list[CredentialsProvider] = [*configs, EcrTokenCredentials()]
    endpoints = registry_endpoints(
        settings.host_overrides, [request.source.registry, request.destination.registry]
    )
    async with create_session(
        ca_bundle=settings.ca_bundle, connections=connections_for(request.jobs)
    ) as session:
        # One client for both sides: a shared token cache, and blob mounts within one registry.
        client = RegistryClient(
            AiohttpSender(session), credentials=ChainedCredentials(*providers), endpoints=endpoints
        )
        return await mirror(request, client, progress)


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
