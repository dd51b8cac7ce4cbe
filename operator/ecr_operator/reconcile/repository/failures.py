"""Why a reconcile did not converge: AWS errors classified into conditions a user can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ecr_operator.reconcile.repository.desired import Refusal
from ecr_operator.reconcile.repository.vocabulary import MAX_AWS_MESSAGE_LENGTH, Reason

ProblemKind = Literal["refused", "failed", "transient"]


@dataclass(frozen=True)
class Problem:
    """Why a reconcile did not converge.

    ``refused``: nothing may be done until the spec, the settings or the repository's owner change.
    ``failed``: AWS refused a call; a human has to act (retried once per drift interval).
    ``transient``: throttling or an AWS outage; retried soon with backoff.
    """

    reason: Reason
    message: str
    kind: ProblemKind

    @classmethod
    def refused(cls, refusal: Refusal) -> Problem:
        return cls(refusal.reason, refusal.message, "refused")


_SERVER_ERROR_CODES = frozenset(
    {"ServerException", "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceFailure"}
)
_NETWORK_ERROR_CODES = frozenset({"NetworkError"})
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "NoCredentials",
    }
)
_LIMIT_CODES = frozenset({"LimitExceededException", "LimitExceeded", "TooManyTagsException"})
_INVALID_CODES = frozenset(
    {
        "InvalidParameterException",
        "ValidationException",
        "InvalidTagParameterException",
        "MalformedPolicyDocument",
    }
)
# Operations whose IAM permission is not the operation's name alone.
_EXTRA_PERMISSIONS = {
    "CreateRepository": " (creating a repository with tags also needs ecr:TagResource)",
}


def classify_aws_failure(
    service: str, operation: str, code: str, message: str, *, http_status: int = 0, throttled: bool = False
) -> Problem:
    """Turn an AWS error into a condition a user can act on; the kind says whether to retry soon.

    ``throttled`` is the adapter's verdict (it knows every SDK spelling of "slow down").
    """
    permission = f"{service}:{operation}"
    detail = _shorten(message)
    if throttled or http_status == 429:
        return Problem(
            Reason.THROTTLED,
            f"AWS throttled {permission} after the SDK's retries; retrying with backoff: {detail}",
            "transient",
        )
    if code in _SERVER_ERROR_CODES or code in _NETWORK_ERROR_CODES or http_status >= 500:
        return Problem(
            Reason.AWS_UNAVAILABLE,
            f"{permission} failed ({code}); retrying with backoff: {detail}",
            "transient",
        )
    if code in _ACCESS_DENIED_CODES:
        return Problem(
            Reason.ACCESS_DENIED,
            f"the operator's AWS identity may not call {permission}"
            f"{_EXTRA_PERMISSIONS.get(operation, '')}: grant it in the operator's IAM policy."
            f" AWS said: {detail}",
            "failed",
        )
    if code == "KmsException":
        return Problem(
            Reason.KMS_KEY_INVALID,
            f"ECR could not use the KMS key of encryption.kmsKey ({permission}): {detail}",
            "failed",
        )
    if code == "NoSuchEntity" and operation == "PutRolePolicy":
        return Problem(
            Reason.ROLE_NOT_FOUND,
            f"access.identityPolicies names an IAM role that does not exist: {detail}",
            "failed",
        )
    if code in _INVALID_CODES:
        if operation in ("SetRepositoryPolicy", "PutRolePolicy"):
            return Problem(
                Reason.POLICY_REJECTED, f"AWS rejected the policy ({permission}): {detail}", "failed"
            )
        if operation == "PutLifecyclePolicy":
            return Problem(
                Reason.LIFECYCLE_POLICY_REJECTED, f"AWS rejected the lifecycle policy: {detail}", "failed"
            )
        return Problem(Reason.INVALID_PARAMETER, f"AWS rejected {permission}: {detail}", "failed")
    if code in _LIMIT_CODES:
        return Problem(Reason.LIMIT_EXCEEDED, f"{permission} hit an AWS limit: {detail}", "failed")
    return Problem(Reason.AWS_ERROR, f"{permission} failed with {code}: {detail}", "failed")


def _shorten(message: str) -> str:
    message = " ".join(message.split())
    if len(message) <= MAX_AWS_MESSAGE_LENGTH:
        return message
    return message[: MAX_AWS_MESSAGE_LENGTH - 1] + "…"
