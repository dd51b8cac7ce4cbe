"""What the registry client reports after copying images, for the unit tests of the mirror's decisions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ecr_fakes import ECR_HOST
from ecr_operator.registry.reference import parse_reference
from ecr_operator.registry.results import ImageCopyResult

SOURCE = parse_reference("registry.example/team/app")
DESTINATION_URI = f"{ECR_HOST}/team/app"
DESTINATION = parse_reference(DESTINATION_URI)
# The clock of every mirror decision test.
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)


def digest(n: int) -> str:
    """The ``n``-th made-up sha256 digest."""
    return f"sha256:{n:064x}"


def copied(
    source: int, destination: int | None = None, *, up_to_date: bool = False, **fields: Any
) -> ImageCopyResult:
    """Image ``source`` (a ``digest`` number) copied from SOURCE to DESTINATION, where it is image
    ``destination``: the same one unless a platform subset was pushed or the tag was kept (``tag_kept``)."""
    destination = source if destination is None else destination
    return ImageCopyResult(
        source=SOURCE.with_digest(digest(source)),
        destination=DESTINATION.with_digest(digest(destination)),
        source_digest=digest(source),
        destination_digest=digest(destination),
        media_type="application/vnd.oci.image.manifest.v1+json",
        up_to_date=up_to_date,
        filtered=destination != source and not fields.get("tag_kept", False),
        image_bytes=0 if up_to_date else 1000 + source,
        bytes_copied=0 if up_to_date else 900,
        **fields,
    )
