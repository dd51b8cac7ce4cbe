"""Making a status field the operator applies its own alone, so that leaving it out later removes it.

Server-side apply removes a field its manager stops listing only if no other manager owns it too. A field
a non-apply client also wrote (a merge patch of an older operator version or of kopf, ``kubectl edit``)
keeps that writer as a co-owner, often of a condition's key alone: dropping the condition would then leave
an entry with only ``type``, which the schema refuses (HTTP 422), and its owner could never remove it.
Status is output, so what the applying manager owns is taken away from writers outside the operator, as
``kubectl`` does when an object moves from client-side to server-side apply; what only they own is left.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

STATUS_SUBRESOURCE = "status"

FieldSet = Mapping[str, Any]
"""A FieldsV1 tree: keys ``f:name``, ``k:{key}``, ``v:value`` or ``.`` (the node itself); ``{}`` is a leaf."""


def claim_status_fields(
    entries: Sequence[Mapping[str, Any]], field_manager: str, operator_prefix: str
) -> list[dict[str, Any]] | None:
    """``metadata.managedFields`` with every status field ``field_manager`` owns (and all inside a condition
    it owns) removed from the entries of managers outside ``operator_prefix`` (an entry left empty goes);
    None when none of them shares one."""
    own = next(
        (
            entry
            for entry in entries
            if entry.get("manager") == field_manager and entry.get("subresource") == STATUS_SUBRESOURCE
        ),
        None,
    )
    if own is None:
        return None
    owned: FieldSet = own.get("fieldsV1") or {}
    claimed: list[dict[str, Any]] = []
    changed = False
    for entry in entries:
        manager = str(entry.get("manager", ""))
        if entry.get("subresource") != STATUS_SUBRESOURCE or manager.startswith(operator_prefix):
            claimed.append(copy.deepcopy(dict(entry)))
            continue
        fields: FieldSet = entry.get("fieldsV1") or {}
        shared = _shared(fields, owned)
        if not shared:
            claimed.append(copy.deepcopy(dict(entry)))
            continue
        changed = True
        left = _without(fields, shared)
        if left:
            claimed.append({**copy.deepcopy(dict(entry)), "fieldsV1": left})
    return claimed if changed else None


def _shared(fields: FieldSet, owned: FieldSet) -> dict[str, Any]:
    """The part of ``fields`` that ``owned`` holds too, or lies inside a list item (``k:``) ``owned`` holds
    itself (its ``.``): inside a condition the manager owns, every field is the manager's."""
    shared: dict[str, Any] = {}
    for key, children in fields.items():
        if key not in owned:
            continue
        mine = owned[key]
        if (key.startswith("k:") and "." in mine) or (not children and not mine):
            shared[key] = copy.deepcopy(children)
        elif children and mine:
            below = _shared(children, mine)
            if below:
                shared[key] = below
    return shared


def _without(fields: FieldSet, removed: FieldSet) -> dict[str, Any]:
    """``fields`` less the leaves of ``removed``; a node whose children all go goes too."""
    left: dict[str, Any] = {}
    for key, children in fields.items():
        if key not in removed:
            left[key] = copy.deepcopy(children)
        elif children and removed[key]:
            below = _without(children, removed[key])
            if below:
                left[key] = below
    return left
