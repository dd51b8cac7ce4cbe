"""What ``ecr-operator mirror`` prints: one line per image, or the ``--json`` summary."""

from __future__ import annotations

from typing import Any

from ecr_operator.mirror_cli.arguments import MirrorRequest
from ecr_operator.mirror_cli.copying import MirrorOutcome
from ecr_operator.registry.results import ImageCopyResult

# What one copy moved, per image and summed over images in the totals.
COUNTS = ("bytes_copied", "blobs_copied", "blobs_skipped", "blobs_mounted", "manifests_pushed")


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
        **{name: getattr(result, name) for name in COUNTS},
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
            **{name: sum(getattr(result, name) for result in copies) for name in COUNTS},
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


def _size(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
