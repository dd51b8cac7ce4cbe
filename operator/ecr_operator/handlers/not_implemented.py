"""Until a kind's controller exists, tell users so on the object rather than leave its status blank.

Each kind's controller replaces its registration here when it lands. Nothing in AWS or in the cluster is
changed: the handler only reports ``Ready=Unknown`` with reason ``ControllerNotImplemented``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.conditions import READY, DesiredCondition, conditions_patch

NOT_IMPLEMENTED = "ControllerNotImplemented"


@kopf.on.resume(GROUP, VERSION, "ecrrepositories")
@kopf.on.create(GROUP, VERSION, "ecrrepositories")
@kopf.on.update(GROUP, VERSION, "ecrrepositories")
@kopf.on.resume(GROUP, VERSION, "imagemirrors")
@kopf.on.create(GROUP, VERSION, "imagemirrors")
@kopf.on.update(GROUP, VERSION, "imagemirrors")
async def report_not_implemented(
    body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    condition = DesiredCondition(
        type=READY,
        status="Unknown",
        reason=NOT_IMPLEMENTED,
        message=f"This ecr-operator version does not reconcile {body['kind']} yet; nothing was changed.",
        observed_generation=meta.get("generation"),
    )
    conditions = conditions_patch(status, [condition], datetime.now(UTC))
    if conditions is not None:
        patch.status["conditions"] = conditions
