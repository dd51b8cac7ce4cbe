"""kopf wiring of the EcrRepository controller (``controllers/repository.py``): every watch event goes to
the work queue (``controllers/repository_work.py``), which decides what to reconcile when; kopf runs only
deletions, which hold the object's finalizer.

There are no create/update handlers: kopf would record each one's outcome in annotations, one more write per
object and change. Whether a spec still needs a reconcile is ``status.observedGeneration`` instead.
"""

from __future__ import annotations

from typing import Any

import kopf

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.controllers.repository import RepositoryObject, RetryLater
from ecr_operator.handlers.startup import FINALIZER
from ecr_operator.runtime import Runtime

PLURAL = ECR_REPOSITORY.plural


@kopf.on.event(GROUP, VERSION, PLURAL)
async def repository_watched(
    type: str | None, body: kopf.Body, logger: kopf.Logger, memo: Runtime, **_: Any
) -> None:
    if type == "DELETED":
        memo.repository_work.gone(body.metadata.uid or "")
        return
    deleting = body.metadata.get("deletionTimestamp") is not None
    if not deleting and FINALIZER not in body.metadata.get("finalizers", ()):
        # kopf adds the finalizer after this event and the object comes back with it. Waiting for that
        # means nothing is made in AWS that a deletion could miss, and no status write races kopf's
        # resourceVersion-guarded finalizer patch (a lost race costs a second patch).
        return
    memo.repository_work.watched(RepositoryObject.from_body(body, logger), deleting=deleting)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_repository(
    body: kopf.Body, logger: kopf.Logger, memo: Runtime, retry: int, **_: Any
) -> None:
    _retry_if_asked(await memo.repositories.delete(RepositoryObject.from_body(body, logger), retry))


def _retry_if_asked(later: RetryLater | None) -> None:
    if later is not None:
        raise kopf.TemporaryError(later.message, delay=later.delay)
