"""kopf wiring of the ImageMirror controller (``controllers/mirror.py``): a daemon per mirror syncing on
its schedule, and an update handler that makes it sync at once when the spec changes or a sync is
requested."""

from __future__ import annotations

from typing import Any

import kopf

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.api.mirror import IMAGE_MIRROR
from ecr_operator.controllers.mirror_pass import MirrorObject
from ecr_operator.reconcile.mirror import requests_sync
from ecr_operator.runtime import Runtime

# A deleted mirror's copy in flight is cancelled after this long (aiohttp closes its connections).
CANCELLATION_TIMEOUT = 10.0


@kopf.on.update(GROUP, VERSION, IMAGE_MIRROR.plural)
async def sync_on_change(uid: str, diff: kopf.Diff, memo: Runtime, **_: Any) -> None:
    """A changed spec, or a new sync-request annotation, cuts the daemon's wait short."""
    if requests_sync(diff):
        memo.mirroring.request_sync(uid)


@kopf.daemon(GROUP, VERSION, IMAGE_MIRROR.plural, cancellation_timeout=CANCELLATION_TIMEOUT)
async def keep_mirrored(
    body: kopf.Body,
    uid: str,
    namespace: str | None,
    name: str,
    retry: int,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    memo: Runtime,
    **_: Any,
) -> None:
    def current() -> MirrorObject:
        # kopf's body is a live view: each pass reads the spec and status as last watched.
        return MirrorObject(
            namespace=str(namespace),
            name=name,
            uid=uid,
            generation=body.meta.get("generation"),
            spec=dict(body.spec),
            status=dict(body.get("status") or {}),
        )

    try:
        await memo.mirroring.keep_mirrored(current, restarted=bool(retry), stopped=stopped, logger=logger)
    finally:
        reason = stopped.reason
        if reason is not None and kopf.DaemonStoppingReason.RESOURCE_DELETED in reason:
            memo.mirroring.forget(uid, str(namespace), name)
