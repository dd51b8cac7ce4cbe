"""The command line of ``ecr-operator mirror``: parsed and checked before any file or network access."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecr_operator.registry.errors import InvalidReference
from ecr_operator.registry.platforms import PlatformFilter
from ecr_operator.registry.reference import Reference, parse_reference
from ecr_operator.tag_patterns import InvalidTagPattern, TagPattern, compile_tag_pattern

DEFAULT_JOBS = 4
MAX_JOBS = 8
# Tags in flight per blob job: a tag with nothing to copy costs two HEADs and no memory, so a resync
# goes faster with more of them, while blobs (memory, connections) stay bounded by --jobs per image.
TAGS_PER_JOB = 2
PROG = "ecr-operator mirror"
# Exit statuses, as the epilog of --help states them.
EXIT_OK = 0
EXIT_COPY_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


class UsageError(ValueError):
    """The command line asks for something that cannot be done as written."""


_DESCRIPTION = (
    "Copy an image digest-exact from one registry to another (any OCI registry, ECR "
    "included), or every tag of a repository that matches --tags. Nothing is copied that the "
    "destination already has: a repeated run only sends HEAD requests to the source."
)
_EPILOG = (
    "Credentials: --authfile, else REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/"
    "auth.json, $XDG_CONFIG_HOME/containers/auth.json, $DOCKER_CONFIG/config.json (~/.docker/"
    "config.json), ~/.dockercfg (the first file with an entry for a registry wins; credential "
    "helpers are not run). An ECR registry (<account>.dkr.ecr.<region>.amazonaws.com) without an "
    "entry gets an authorization token from the AWS credentials in the environment. "
    "Exit status: 0 copied (or up to date), 1 a copy failed, 2 usage error."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG)
    _add_what_to_copy(parser)
    _add_how_to_run(parser)
    return parser


def _add_what_to_copy(parser: argparse.ArgumentParser) -> None:
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


def _add_how_to_run(parser: argparse.ArgumentParser) -> None:
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
    tag_pattern = _tag_pattern(options, source, destination)
    if tag_pattern is None and source.tag is None and source.digest is None:
        source = source.with_tag("latest")  # as docker and skopeo read a bare name
    return MirrorRequest(
        source=source,
        destination=destination,
        tag_pattern=tag_pattern,
        referrers=options.referrers,
        jobs=options.jobs,
        json_output=options.json_output,
        auth_file=options.authfile,
        progress=stderr_is_terminal and not options.no_progress,
        verbose=options.verbose,
        platforms=platforms,
    )


def _tag_pattern(options: argparse.Namespace, source: Reference, destination: Reference) -> TagPattern | None:
    """The pattern of --tags (or --all-tags), whose SRC and DST must then name repositories; else None."""
    pattern_text = ".*" if options.all_tags else options.tags
    if pattern_text is None:
        return None
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
    return tag_pattern


def fail(code: int, message: str) -> int:
    """Say on stderr why the command stops, and return its exit status."""
    print(f"{PROG}: {message}", file=sys.stderr)
    return code
