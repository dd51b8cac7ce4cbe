"""ECR lifecycle policies: validate before sending, compare semantically.

ECR stores the text it was given but callers (consoles, other tools, AWS itself) may re-order rules or
lists; the operator compares parsed, normalised documents so re-ordering never causes a write loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ecr_operator.api.repository import MAX_LIFECYCLE_POLICY_CHARS
from ecr_operator.json_object import parse_json_object

MAX_RULES = 50


class LifecyclePolicyError(ValueError):
    """A lifecycle policy ECR would refuse; the message names the offending rule and field."""


def parse_lifecycle_policy(text: str, field: str = "lifecyclePolicy.raw") -> dict[str, Any]:
    refused = f'{field} must be a JSON object with a "rules" list'
    document = parse_json_object(text, LifecyclePolicyError, f"{field} is not valid JSON", refused)
    if not isinstance(document.get("rules"), list):
        raise LifecyclePolicyError(refused)
    return document


def validate_lifecycle_policy(document: Mapping[str, Any], field: str = "lifecyclePolicy") -> None:
    """Raise LifecyclePolicyError for what ECR's PutLifecyclePolicy would reject."""
    rules = document.get("rules")
    if not isinstance(rules, list) or not rules:
        raise LifecyclePolicyError(f"{field} needs at least one rule")
    if len(rules) > MAX_RULES:
        raise LifecyclePolicyError(f"{field} has {len(rules)} rules; ECR allows at most {MAX_RULES}")
    if len(render_lifecycle_policy(document)) > MAX_LIFECYCLE_POLICY_CHARS:
        raise LifecyclePolicyError(
            f"{field} is longer than ECR's limit of {MAX_LIFECYCLE_POLICY_CHARS} characters"
        )
    priorities: list[int] = []
    any_priority: int | None = None
    for index, rule in enumerate(rules):
        where = f"{field}.rules[{index}]"
        if not isinstance(rule, Mapping):
            raise LifecyclePolicyError(f"{where} must be an object")
        priority = rule.get("rulePriority")
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 1:
            raise LifecyclePolicyError(f"{where}.rulePriority must be a positive integer")
        if priority in priorities:
            raise LifecyclePolicyError(f"{where}.rulePriority {priority} is used by another rule")
        priorities.append(priority)
        selection = rule.get("selection")
        if not isinstance(selection, Mapping):
            raise LifecyclePolicyError(f"{where}.selection is required")
        _validate_selection(selection, f"{where}.selection")
        action = rule.get("action", {})
        if not isinstance(action, Mapping) or action.get("type") != "expire":
            raise LifecyclePolicyError(f'{where}.action.type must be "expire"')
        if selection.get("tagStatus") == "any":
            any_priority = priority
    # ECR evaluates rules by priority; a tagStatus=any rule must come last or it shadows the others.
    if any_priority is not None and any_priority != max(priorities):
        raise LifecyclePolicyError(
            f"{field}: the rule with tagStatus any must have the highest rulePriority ({max(priorities)})"
        )


def _validate_selection(selection: Mapping[str, Any], where: str) -> None:
    tag_status = selection.get("tagStatus")
    if tag_status not in {"tagged", "untagged", "any"}:
        raise LifecyclePolicyError(f"{where}.tagStatus must be tagged, untagged or any")
    prefixes = selection.get("tagPrefixList")
    patterns = selection.get("tagPatternList")
    if tag_status == "tagged" and not (prefixes or patterns):
        raise LifecyclePolicyError(f"{where}: tagStatus tagged needs tagPrefixList or tagPatternList")
    if tag_status != "tagged" and (prefixes or patterns):
        raise LifecyclePolicyError(f"{where}: tagPrefixList/tagPatternList only apply to tagStatus tagged")
    if prefixes and patterns:
        raise LifecyclePolicyError(f"{where}: use tagPrefixList or tagPatternList, not both")
    count_type = selection.get("countType")
    count_number = selection.get("countNumber")
    if count_type not in {"imageCountMoreThan", "sinceImagePushed"}:
        raise LifecyclePolicyError(f"{where}.countType must be imageCountMoreThan or sinceImagePushed")
    if not isinstance(count_number, int) or isinstance(count_number, bool) or count_number < 1:
        raise LifecyclePolicyError(f"{where}.countNumber must be a positive integer")
    if count_type == "sinceImagePushed" and selection.get("countUnit") != "days":
        raise LifecyclePolicyError(f'{where}.countUnit must be "days" when countType is sinceImagePushed')
    if count_type == "imageCountMoreThan" and "countUnit" in selection:
        raise LifecyclePolicyError(f"{where}.countUnit only applies to countType sinceImagePushed")


def normalise_lifecycle_policy(document: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """Canonical form: rules ordered by priority, tag lists sorted, absent descriptions dropped."""
    if document is None:
        return None
    parsed = parse_lifecycle_policy(document) if isinstance(document, str) else dict(document)
    rules = []
    for rule in parsed.get("rules", []):
        canonical = {key: value for key, value in rule.items() if not (key == "description" and not value)}
        selection = dict(canonical.get("selection", {}))
        for list_key in ("tagPrefixList", "tagPatternList"):
            if list_key in selection:
                selection[list_key] = sorted(set(selection[list_key]))
        canonical["selection"] = selection
        rules.append(canonical)
    rules.sort(key=lambda rule: (rule.get("rulePriority", 0), json.dumps(rule, sort_keys=True)))
    return {"rules": rules}


def lifecycle_policies_equal(
    left: Mapping[str, Any] | str | None, right: Mapping[str, Any] | str | None
) -> bool:
    return normalise_lifecycle_policy(left) == normalise_lifecycle_policy(right)


def render_lifecycle_policy(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
