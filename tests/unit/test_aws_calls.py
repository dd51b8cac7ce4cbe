"""call_aws_unless_absent: an answer that the subject is absent is None; every other failure stays one."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from ecr_operator.aws.calls import AwsCallFailed, call_aws_unless_absent

pytestmark = pytest.mark.unit

ABSENT = "LifecyclePolicyNotFoundException"


def refusing(code: str) -> Any:
    """A stand-in for a boto3 method that fails the way botocore reports an AWS error."""

    def call(**parameters: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "DeleteLifecyclePolicy")

    return call


async def test_the_response_comes_back_when_the_call_succeeds() -> None:
    def answer(**parameters: Any) -> dict[str, Any]:
        return {"asked": parameters}

    response = await call_aws_unless_absent(ABSENT, "ecr", "GetLifecyclePolicy", answer, repositoryName="a")

    assert response == {"asked": {"repositoryName": "a"}}


async def test_the_absent_code_is_none() -> None:
    assert await call_aws_unless_absent(ABSENT, "ecr", "DeleteLifecyclePolicy", refusing(ABSENT)) is None


async def test_any_other_code_is_raised() -> None:
    with pytest.raises(AwsCallFailed) as failed:
        await call_aws_unless_absent(
            ABSENT, "ecr", "DeleteLifecyclePolicy", refusing("AccessDeniedException")
        )

    assert (failed.value.operation, failed.value.code) == ("DeleteLifecyclePolicy", "AccessDeniedException")
