"""parse_json_object: one JSON object, or the caller's error in the caller's words (pure)."""

from __future__ import annotations

import pytest

from ecr_operator.json_object import parse_json_object

pytestmark = pytest.mark.unit


class Refused(Exception):
    pass


def parse(text: str | bytes) -> dict[str, object]:
    return parse_json_object(text, Refused, "body is not JSON", "body is not a JSON object")


def test_an_object_is_returned_from_text_or_bytes() -> None:
    assert parse('{"a": [1]}') == {"a": [1]}
    assert parse(b'{"a": 1}') == {"a": 1}


def test_text_that_is_not_json_says_where_it_broke_never_what_it_holds() -> None:
    with pytest.raises(Refused) as caught:
        parse('{"password": "hunter2"')
    assert str(caught.value).startswith("body is not JSON: ")
    assert "at line 1" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [b"\xff\xfe\xfa", "[" * 200_000],
    ids=["bytes that are no Unicode text", "nesting deeper than the stack"],
)
def test_what_the_parser_cannot_read_at_all_is_refused_too(text: str | bytes) -> None:
    with pytest.raises(Refused, match=r"^body is not JSON"):
        parse(text)


@pytest.mark.parametrize("text", ["[]", '"text"', "1", "null"])
def test_other_json_is_not_an_object(text: str) -> None:
    with pytest.raises(Refused, match=r"^body is not a JSON object$"):
        parse(text)
