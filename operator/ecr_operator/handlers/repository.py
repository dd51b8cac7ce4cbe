"""kopf wiring of the EcrRepository controller (``controllers/repository.py``): create/update/resume, the
drift timer, and delete. Each handler unpacks kopf's arguments and calls the Runtime's controller."""

from __future__ import annotations

from typing import Any

import kopf

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.api.repository import ECR_REPOSITORY
from ecr_operator.controllers.repository import RepositoryObject, RetryLater
from ecr_operator.runtime import Runtime

PLURAL = ECR_REPOSITORY.plural
# How soon a drift timer asks again whether its pass is due after returning. Each call waits for the
# pass itself (DriftSchedule), so this only bounds how late a timer notices a pass.
DRIFT_TIMER_TICK = 1.0


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile_repository(
    body: kopf.Body, logger: kopf.Logger, memo: Runtime, retry: int, **_: Any
) -> None:
    _retry_if_asked(await memo.repositories.reconcile(_object(body, logger), retry))


@kopf.timer(GROUP, VERSION, PLURAL, id="drift", interval=DRIFT_TIMER_TICK)
async def check_drift(body: kopf.Body, logger: kopf.Logger, memo: Runtime, **kwargs: Any) -> None:
    """Once per drift pass: compare AWS with the spec and repair what was changed outside the operator."""
    # kopf passes these to timers, but its TimerFn protocol does not declare them.
    stopped: kopf.DaemonStopped = kwargs["stopped"]
    retry: int = kwargs["retry"]
    delay = memo.repositories.drift_delay(body.metadata.uid or "")
    if delay > 0:
        await stopped.wait(delay)
        if stopped:
            return
    # ``body`` is kept current by kopf while the timer sleeps: read it only now.
    _retry_if_asked(await memo.repositories.check_drift(_object(body, logger), retry))


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_repository(
    body: kopf.Body, logger: kopf.Logger, memo: Runtime, retry: int, **_: Any
) -> None:
    _retry_if_asked(await memo.repositories.delete(_object(body, logger), retry))


def _object(body: kopf.Body, logger: kopf.Logger) -> RepositoryObject:
    metadata = body.metadata
    return RepositoryObject(
        namespace=metadata.namespace or "",
        name=metadata.name or "",
        uid=metadata.uid or "",
        generation=metadata.get("generation"),
        spec=dict(body.spec),
        status=dict(body.get("status") or {}),
        managed_fields=tuple(metadata.get("managedFields") or ()),
        log=logger,
    )


def _retry_if_asked(later: RetryLater | None) -> None:
    if later is not None:
        raise kopf.TemporaryError(later.message, delay=later.delay)
