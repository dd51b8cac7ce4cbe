"""Parse text that must be one JSON object, with the caller's words and error type when it is not."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def parse_json_object(
    text: str | bytes, refuse: Callable[[str], Exception], not_json: str, not_object: str
) -> dict[str, Any]:
    """``text`` as a JSON object, or ``refuse(message)`` raised: ``not_json`` with the parser's reason when
    it is not JSON, ``not_object`` when it is JSON of another kind.

    The reason says where the text broke, never what it holds: documents here may carry credentials.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise refuse(f"{not_json}: {error.msg} at line {error.lineno}") from None
    except (ValueError, RecursionError):  # bytes that are no Unicode text; nesting deeper than Python's stack
        raise refuse(not_json) from None
    if not isinstance(document, dict):
        raise refuse(not_object)
    return document
