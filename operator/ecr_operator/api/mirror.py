"""`ImageMirror`: images copied from any OCI registry into ECR on a schedule, digest-exact."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from ecr_operator.api.common import (
    DURATION_PATTERN,
    ApiModel,
    CelRule,
    Conditions,
    Duration,
    ImageTag,
    LocalObjectReference,
    RegistryIdentity,
    RepositoryName,
    ResourceInfo,
    SetList,
    StatusModel,
    exactly_one_of,
    format_duration,
)
from ecr_operator.api.repository import EcrRepositorySpec, ImageTagMutability, RepositorySettings
from ecr_operator.tag_patterns import compile_tag_pattern

# --- source -----------------------------------------------------------------------------------------

_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
# A registry host must be explicit (a dotted name, localhost, an IP, or anything with a port), so
# "nginx" is refused instead of silently meaning docker.io/library/nginx.
_REGISTRY_HOST = (
    rf"((localhost|{_HOST_LABEL}(\.{_HOST_LABEL})+|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?"
    rf"|{_HOST_LABEL}:[0-9]{{1,5}})"
)
_PATH_COMPONENT = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
SOURCE_IMAGE_PATTERN = rf"^{_REGISTRY_HOST}(/{_PATH_COMPONENT})+$"


class MirrorSource(ApiModel):
    """Where images come from."""

    image: Annotated[
        str,
        CelRule(
            f"self.matches(r'{SOURCE_IMAGE_PATTERN}')",
            "source.image must be a repository with its registry host and no tag or digest,"
            " e.g. docker.io/library/nginx",
            check=lambda image: re.fullmatch(SOURCE_IMAGE_PATTERN, image) is not None,
        ),
    ] = Field(
        min_length=1,
        max_length=512,
        description=(
            "Repository to copy from, with its registry host and without tag or digest, e.g."
            " docker.io/library/nginx, ghcr.io/org/app, quay.io/prometheus/node-exporter."
        ),
    )
    credentials_secret_ref: LocalObjectReference | None = Field(
        default=None,
        description=(
            "A kubernetes.io/dockerconfigjson Secret in this namespace with credentials for the source"
            " registry. Anonymous access when omitted."
        ),
    )


# --- what to copy -----------------------------------------------------------------------------------

_SEMVER_VERSION = r"v?([0-9]+|[xX*])(\.([0-9]+|[xX*])){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?"
_SEMVER_COMPARATOR = (
    rf"(((>=|<=|=>|=<|>|<|!=|=|~>|~|\^)\s*)?{_SEMVER_VERSION}|{_SEMVER_VERSION}\s+-\s+{_SEMVER_VERSION})"
)
_SEMVER_AND = rf"{_SEMVER_COMPARATOR}((\s*,\s*|\s+){_SEMVER_COMPARATOR})*"
SEMVER_RANGE_PATTERN = rf"^\s*{_SEMVER_AND}(\s*\|\|\s*{_SEMVER_AND})*\s*$"


# What RE2 refuses and a Python or PCRE user is likely to write: lookaround and backreferences. Caught at
# admission; everything else RE2 refuses is reported as InvalidSpec naming the field (CEL cannot run RE2's
# parser on a user pattern).
_UNSUPPORTED_REGEX = r"\(\?<?[=!]|\\[1-9]"
TagPatternText = Annotated[
    str,
    CelRule(
        f"!self.matches(r'{_UNSUPPORTED_REGEX}')",
        "tags.include and tags.exclude use RE2 syntax: lookahead/lookbehind ((?=, (?!, (?<=, (?<!)"
        " and backreferences (\\1) are not supported",
        check=lambda pattern: re.search(_UNSUPPORTED_REGEX, pattern) is None,
    ),
]


class TagSelection(ApiModel):
    """Which upstream tags to copy: the listed tags plus the tags matched by include/exclude/semver."""

    cel_rules = (
        CelRule(
            "has(self.list) || has(self.include) || has(self.semver)",
            "tags must select something: set list, include or semver (include: '.*' selects every tag)",
            check=lambda t: t.names is not None or t.include is not None or t.semver is not None,
            reason="FieldValueRequired",
        ),
        CelRule(
            "!has(self.keepLatest) || has(self.include) || has(self.semver)",
            "tags.keepLatest applies to tags matched by include or semver; set one of them",
            check=lambda t: t.keep_latest is None or t.include is not None or t.semver is not None,
            field_path=".keepLatest",
            reason="FieldValueForbidden",
        ),
        CelRule(
            "!has(self.exclude) || has(self.include) || has(self.semver)",
            "tags.exclude filters tags matched by include or semver; set one of them",
            check=lambda t: t.exclude is None or t.include is not None or t.semver is not None,
            field_path=".exclude",
            reason="FieldValueForbidden",
        ),
    )

    names: Annotated[list[ImageTag], SetList()] | None = Field(
        default=None,
        alias="list",
        min_length=1,
        max_length=256,
        description="Tags copied by name, e.g. [stable, 1.27.3]. Always copied, whatever the filters say.",
    )
    include: TagPatternText | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            r"Regular expression (RE2 syntax: no lookaround, no backreferences) searched in each upstream"
            r" tag; matching tags are copied. Anchor it to match whole tags, e.g. ^1\.2[6-9]\.[0-9]+$."
            " Matching takes linear time whatever the pattern."
        ),
    )
    exclude: TagPatternText | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "Regular expression (RE2 syntax) searched in each tag; matching tags are skipped, e.g."
            " -rc[0-9]*$."
        ),
    )
    semver: (
        Annotated[
            str,
            CelRule(
                f"self.matches(r'{SEMVER_RANGE_PATTERN}')",
                "tags.semver must be a semantic-version range like '>=1.26.0 <1.28.0', '~1.27' or '^2'",
                check=lambda semver: re.fullmatch(SEMVER_RANGE_PATTERN, semver) is not None,
            ),
        ]
        | None
    ) = Field(
        default=None,
        min_length=1,
        max_length=256,
        description=(
            "Semantic-version range a tag must satisfy, e.g. '>=1.26.0 <1.28.0', '~1.27', '^2',"
            " '1.2.x || >=2.0 <2.5'. Tags that are not versions never match; a leading v is accepted."
        ),
    )
    keep_latest: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description=(
            "Copy only the N highest versions among the tags matched by include/semver (by semantic"
            " version; tags that are not versions sort below versions, then by name)."
        ),
    )

    @field_validator("include", "exclude")
    @classmethod
    def _is_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compile_tag_pattern(pattern)  # InvalidTagPattern is a ValueError: "tags.include: not a valid ..."
        return pattern


Digest = Annotated[
    str,
    StringConstraints(max_length=135, pattern=r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
]
Platform = Annotated[
    str,
    StringConstraints(max_length=64, pattern=r"^(all|[a-z0-9]+/[a-z0-9_]+(/[a-z0-9.]+)?)$"),
]


class MutableTagPolicy(StrEnum):
    """What to do when an upstream tag moves to another image."""

    FOLLOW = "Follow"
    KEEP = "Keep"


# --- destination ------------------------------------------------------------------------------------


class MirrorDestination(ApiModel):
    """The ECR repository images go to: an existing EcrRepository, or one the operator creates."""

    cel_rules = (
        exactly_one_of(
            "repository_ref",
            "repository_name",
            "destination must set exactly one of repositoryRef or repositoryName",
        ),
        CelRule(
            "!has(self.repositoryName) || self.create",
            "destination.create must be true with repositoryName: the operator then creates an"
            " EcrRepository for it",
            check=lambda d: d.repository_name is None or d.create,
            field_path=".create",
        ),
        CelRule(
            "!has(self.repositoryName) || has(self.registry)",
            "destination.registry is required with repositoryName",
            check=lambda d: d.repository_name is None or d.registry is not None,
            field_path=".registry",
            reason="FieldValueRequired",
        ),
        CelRule(
            "!has(self.repositoryRef) || (!self.create && !has(self.registry) && !has(self.template))",
            "destination.create, registry and template apply only with repositoryName, not repositoryRef",
            check=lambda d: (
                d.repository_ref is None or (not d.create and d.registry is None and d.template is None)
            ),
            field_path=".repositoryRef",
            reason="FieldValueForbidden",
        ),
    )

    repository_ref: LocalObjectReference | None = Field(
        default=None, description="An EcrRepository in this namespace that receives the images."
    )
    repository_name: RepositoryName | None = Field(
        default=None,
        description=(
            "Name of an ECR repository the operator creates for this mirror, as a child EcrRepository"
            " owned by the mirror (deleted with it, per its deletionPolicy). Requires create: true."
        ),
    )
    create: bool = Field(
        default=False, description="Must be true with repositoryName: consent to create the repository."
    )
    registry: RegistryIdentity | None = Field(
        default=None, description="Registry of the repository to create; required with repositoryName."
    )
    template: RepositorySettings | None = Field(
        default=None,
        description="Settings of the repository to create, as in an EcrRepository spec. Defaults apply.",
    )

    def child_repository_spec(self) -> EcrRepositorySpec:
        """The spec of the EcrRepository the operator creates for the create: true form."""
        if self.repository_name is None or self.registry is None:
            raise ValueError("destination has no repositoryName to create")
        settings = self.template or RepositorySettings()
        return EcrRepositorySpec(
            **dict(settings), repository_name=self.repository_name, registry=self.registry
        )


# --- the mirror -------------------------------------------------------------------------------------

MIN_INTERVAL = timedelta(minutes=1)


class ImageMirrorSpec(ApiModel):
    """Desired state of an image mirror."""

    cel_rules = (
        CelRule(
            "has(self.tags) || has(self.digests)",
            "set tags or digests: a mirror must select what to copy",
            check=lambda s: s.tags is not None or s.digests is not None,
            field_path=".tags",
            reason="FieldValueRequired",
        ),
        CelRule(
            "self.mutableTags == 'Keep' || !has(self.destination.template)"
            " || self.destination.template.imageTagMutability != 'IMMUTABLE'",
            "mutableTags must be Keep when destination.template.imageTagMutability is IMMUTABLE:"
            " ECR refuses to move an immutable tag",
            check=lambda s: (
                s.mutable_tags == MutableTagPolicy.KEEP
                or s.destination.template is None
                or s.destination.template.image_tag_mutability != ImageTagMutability.IMMUTABLE
            ),
            field_path=".mutableTags",
        ),
    )

    source: MirrorSource = Field(description="Where images come from.")
    tags: TagSelection | None = Field(default=None, description="Which upstream tags to copy.")
    digests: Annotated[list[Digest], SetList()] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Images pinned by digest (sha256:...), copied untagged, digest-exact.",
    )
    platforms: Annotated[
        list[Platform],
        SetList(),
        CelRule(
            "!self.exists(p, p == 'all') || size(self) == 1",
            "platforms: all cannot be combined with other platforms",
            check=lambda platforms: "all" not in platforms or len(platforms) == 1,
        ),
    ] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Platforms to copy from multi-platform images, as os/arch[/variant], e.g. linux/amd64,"
            " linux/arm64/v8. Empty or [all] copies every platform and keeps the index digest exact;"
            " a subset is pushed as a new index. Platforms an image lacks are skipped and reported."
        ),
    )
    referrers: bool = Field(
        default=False,
        description="Also copy OCI referrers of each image: signatures, SBOMs, attestations.",
    )
    destination: MirrorDestination = Field(description="The ECR repository images go to.")
    interval: Annotated[
        Duration,
        CelRule(
            # Guarded by the pattern so a malformed value reports one error, not a CEL conversion error too.
            f"!self.matches(r'{DURATION_PATTERN}')"
            f" || duration(self) >= duration('{format_duration(MIN_INTERVAL)}')",
            f"interval must be at least {format_duration(MIN_INTERVAL)}",
            check=lambda interval: interval >= MIN_INTERVAL,
        ),
    ] = Field(
        default="6h",
        validate_default=True,
        description=(
            "How often to look for upstream changes, as a duration like 6h, 30m or 1h30m (at least"
            " 1m); jittered. A pass that finds nothing new only sends HEAD requests upstream."
        ),
    )
    suspend: bool = Field(default=False, description="Stop syncing; already copied images stay.")
    mutable_tags: MutableTagPolicy = Field(
        default=MutableTagPolicy.FOLLOW,
        description=(
            "When an upstream tag moves to another image: Follow copies the new image and moves the"
            " tag; Keep never changes a tag once copied (use it with IMMUTABLE repositories)."
        ),
    )

    @property
    def wanted_platforms(self) -> frozenset[str] | None:
        """The platforms to copy, or None for every platform."""
        if not self.platforms or self.platforms == ["all"]:
            return None
        return frozenset(self.platforms)


# --- status -----------------------------------------------------------------------------------------

StatusPlatforms = Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=64)]
StatusDigest = Annotated[str, StringConstraints(max_length=256)]


class MirroredImage(StatusModel):
    """What the last sync copied for one image."""

    destination_digest: StatusDigest = Field(
        description=("Digest of the image in ECR: the source digest, unless a platform subset was copied.")
    )
    synced_at: datetime = Field(description="When the destination last changed for this image.")
    size_bytes: int = Field(
        alias="bytes", ge=0, description="Size of the copied image: its manifests and blobs, in bytes."
    )
    platforms: StatusPlatforms | None = Field(default=None, description="Platforms copied.")
    missing_platforms: StatusPlatforms | None = Field(
        default=None, description="Requested platforms the source image does not have."
    )


class MirroredTag(MirroredImage):
    """A copied tag."""

    tag: str = Field(max_length=128, description="The tag, in the source and in ECR.")
    source_digest: StatusDigest = Field(description="Digest the tag pointed to upstream when copied.")


class MirroredDigest(MirroredImage):
    """A copied digest pin."""

    digest: StatusDigest = Field(description="The pinned source digest.")


MAX_STATUS_TAGS = 500


class ImageMirrorStatus(StatusModel):
    """Observed state of an image mirror."""

    conditions: Conditions = Field(default_factory=list)
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation of the spec last reconciled."
    )
    repository_uri: str | None = Field(
        default=None, max_length=512, description="URI of the destination ECR repository."
    )
    last_sync_time: datetime | None = Field(
        default=None,
        description="When the last sync pass completed: every selected image was current afterwards.",
    )
    next_sync_time: datetime | None = Field(default=None, description="When the next sync is due.")
    tags: list[MirroredTag] = Field(
        default_factory=list,
        max_length=MAX_STATUS_TAGS,
        description=f"Copied tags (at most {MAX_STATUS_TAGS} listed), newest versions first.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["tag"]},
    )
    digests: list[MirroredDigest] = Field(
        default_factory=list,
        max_length=100,
        description="Copied digest pins.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["digest"]},
    )


IMAGE_MIRROR = ResourceInfo(
    kind="ImageMirror", plural="imagemirrors", singular="imagemirror", short_names=("imgmirror",)
)
