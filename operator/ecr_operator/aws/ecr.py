"""ECR repositories through boto3: observe them, and execute the actions ``reconcile.repository`` planned.

Describing is batched. Every ``describe`` made for the same registry while a batch is open (all the drift
checks of one pass wake together) joins one ``DescribeRepositories`` call of up to 100 names. A batch
stays open while callers keep arriving, so a pass's checks coalesce however busy the event loop is, and
closes when full, after a short lull, or at its maximum age. That call
fails as a whole with ``RepositoryNotFoundException`` when any one name is missing; the missing name is
read from the error and the call repeated without it, or, if the error does not name one of the batch,
the batch is split in halves. A pass over existing repositories therefore costs ceil(n / 100) calls.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore import xform_name

from ecr_operator.aws.calls import AwsCallFailed, call_aws, call_aws_unless_absent
from ecr_operator.aws.session import AwsClients
from ecr_operator.reconcile.identity import AwsIdentity
from ecr_operator.reconcile.repository.actions import (
    ClaimRepository,
    CreateRepository,
    DeleteLifecyclePolicy,
    DeleteRepository,
    DeleteRepositoryPolicy,
    PutImageScanningConfiguration,
    PutImageTagMutability,
    PutLifecyclePolicy,
    RepositoryAction,
    SetRepositoryPolicy,
    TagRepository,
    UntagRepository,
)
from ecr_operator.reconcile.repository.observed import ObservedRepository, RepositoryDescription
from ecr_operator.reconcile.repository.vocabulary import ADOPTED_TAG, ADOPTED_TAG_VALUE, OWNER_TAG

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient
    from mypy_boto3_ecr.type_defs import RepositoryTypeDef

logger = logging.getLogger(__name__)

SERVICE = "ecr"
REPOSITORY_NOT_FOUND = "RepositoryNotFoundException"
REPOSITORY_ALREADY_EXISTS = "RepositoryAlreadyExistsException"
REPOSITORY_NOT_EMPTY = "RepositoryNotEmptyException"
LIFECYCLE_POLICY_NOT_FOUND = "LifecyclePolicyNotFoundException"
REPOSITORY_POLICY_NOT_FOUND = "RepositoryPolicyNotFoundException"

# ECR accepts at most 100 names per DescribeRepositories call.
MAX_DESCRIBE_BATCH = 100
# A batch closes this long after its latest caller joined: a single create or update waits only this,
# while the checks of a pass, arriving milliseconds apart, keep joining.
DESCRIBE_BATCH_LULL = 0.2
# ... and at the latest this long after it opened, so a steady trickle of callers cannot starve it.
DESCRIBE_BATCH_MAX_AGE = 2.0
# "The repository with name 'team/app' does not exist in the registry with id '123456789012'"
_MISSING_NAME = re.compile(r"repository with name '([^']+)'")


@dataclass(frozen=True, order=True)
class RegistryRef:
    """A registry (account, or the identity's own when None) reached with an identity (region, role)."""

    identity: AwsIdentity
    registry_id: str | None = None

    def parameters(self) -> dict[str, str]:
        """``registryId`` for calls naming a repository; omitted for the identity's own registry."""
        return {"registryId": self.registry_id} if self.registry_id else {}


class RepositoryClaimedElsewhere(Exception):
    """After tagging an unowned repository, its owner tag named someone else: another claimant won."""

    def __init__(self, repository: str, owner: str | None) -> None:
        super().__init__(f"repository {repository} is claimed by {owner or 'nobody'}")
        self.repository = repository
        self.owner = owner


def description_from(repository: RepositoryTypeDef) -> RepositoryDescription:
    encryption = repository.get("encryptionConfiguration", {})
    return RepositoryDescription(
        name=repository["repositoryName"],
        arn=repository["repositoryArn"],
        uri=repository["repositoryUri"],
        registry_id=repository["registryId"],
        image_tag_mutability=repository.get("imageTagMutability", "MUTABLE"),
        exclusion_filters=frozenset(
            (item["filterType"], item["filter"])
            for item in repository.get("imageTagMutabilityExclusionFilters", [])
        ),
        scan_on_push=bool(repository.get("imageScanningConfiguration", {}).get("scanOnPush", False)),
        encryption_type=encryption.get("encryptionType", "AES256"),
        kms_key=encryption.get("kmsKey"),
    )


class _Batch:
    """Names waiting for one DescribeRepositories call, each with the futures of its callers."""

    def __init__(self, opened: float) -> None:
        self.waiters: dict[str, list[asyncio.Future[RepositoryDescription | None]]] = {}
        self.opened = opened
        self.last_joined = opened


class EcrRepositories:
    """The ECR side of the EcrRepository controller; one per process (it holds the describe batches)."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients
        self._pending: dict[RegistryRef, _Batch] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def _client(self, registry: RegistryRef) -> ECRClient:
        return await self._clients.client_off_loop("ecr", registry.identity)

    # --- reading ------------------------------------------------------------------------------------

    async def describe(self, registry: RegistryRef, name: str) -> RepositoryDescription | None:
        """The repository, or None when it does not exist; joins the registry's pending batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RepositoryDescription | None] = loop.create_future()
        batch = self._pending.get(registry)
        if batch is None:
            batch = self._pending[registry] = _Batch(loop.time())
            self._spawn(self._flush_later(registry, batch))
        batch.waiters.setdefault(name, []).append(future)
        batch.last_joined = loop.time()
        if len(batch.waiters) >= MAX_DESCRIBE_BATCH:
            del self._pending[registry]
            self._spawn(self._flush(registry, batch))
        return await future

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_later(self, registry: RegistryRef, batch: _Batch) -> None:
        loop = asyncio.get_running_loop()
        while self._pending.get(registry) is batch:
            closing = min(batch.last_joined + DESCRIBE_BATCH_LULL, batch.opened + DESCRIBE_BATCH_MAX_AGE)
            if loop.time() < closing:
                await asyncio.sleep(closing - loop.time())
                continue
            del self._pending[registry]
            await self._flush(registry, batch)
        # A batch no longer pending was flushed already, for being full.

    async def _flush(self, registry: RegistryRef, batch: _Batch) -> None:
        try:
            found = await self.describe_many(registry, list(batch.waiters))
        except Exception as error:
            for futures in batch.waiters.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            return
        for name, futures in batch.waiters.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(name))

    async def describe_many(
        self, registry: RegistryRef, names: Sequence[str]
    ) -> dict[str, RepositoryDescription]:
        """Describe existing repositories among ``names`` in as few calls as the missing ones allow."""
        client = await self._client(registry)
        found: dict[str, RepositoryDescription] = {}
        pending = [
            list(dict.fromkeys(names[start : start + MAX_DESCRIBE_BATCH]))
            for start in range(0, len(names), MAX_DESCRIBE_BATCH)
        ]
        while pending:
            chunk = pending.pop()
            try:
                response = await call_aws(
                    SERVICE,
                    "DescribeRepositories",
                    client.describe_repositories,
                    repositoryNames=chunk,
                    **registry.parameters(),
                )
            except AwsCallFailed as error:
                if error.code != REPOSITORY_NOT_FOUND:
                    raise
                pending.extend(_without_missing(chunk, error.message))
                continue
            for repository in response.get("repositories", []):
                description = description_from(repository)
                found[description.name] = description
        return found

    async def observe(self, registry: RegistryRef, name: str) -> ObservedRepository | None:
        """The repository with its tags, lifecycle policy and repository policy; None when absent."""
        description = await self.describe(registry, name)
        if description is None:
            return None
        tags, lifecycle_policy, repository_policy = await asyncio.gather(
            self.tags(registry, description.arn),
            self.lifecycle_policy(registry, name),
            self.repository_policy(registry, name),
        )
        return ObservedRepository(description, tags, lifecycle_policy, repository_policy)

    async def observe_ownership(self, registry: RegistryRef, name: str) -> ObservedRepository | None:
        """The repository and its tags only: enough to decide whether it is this object's."""
        description = await self.describe(registry, name)
        if description is None:
            return None
        return ObservedRepository(description, await self.tags(registry, description.arn))

    async def tags(self, registry: RegistryRef, arn: str) -> dict[str, str]:
        client = await self._client(registry)
        response = await call_aws(
            SERVICE, "ListTagsForResource", client.list_tags_for_resource, resourceArn=arn
        )
        return {tag["Key"]: tag["Value"] for tag in response.get("tags", [])}

    async def lifecycle_policy(self, registry: RegistryRef, name: str) -> str | None:
        return await self._policy_text(
            registry, name, "GetLifecyclePolicy", LIFECYCLE_POLICY_NOT_FOUND, "lifecyclePolicyText"
        )

    async def repository_policy(self, registry: RegistryRef, name: str) -> str | None:
        return await self._policy_text(
            registry, name, "GetRepositoryPolicy", REPOSITORY_POLICY_NOT_FOUND, "policyText"
        )

    async def _policy_text(
        self, registry: RegistryRef, name: str, operation: str, absent: str, text_key: str
    ) -> str | None:
        """A policy of the repository as AWS returned it; None when it has none (error code ``absent``)."""
        client = await self._client(registry)
        method = getattr(client, xform_name(operation))
        response = await call_aws_unless_absent(absent, SERVICE, operation, method, **_named(registry, name))
        return None if response is None else response.get(text_key)

    # --- writing ------------------------------------------------------------------------------------

    async def apply(self, registry: RegistryRef, action: RepositoryAction) -> RepositoryDescription | None:
        """Execute one planned action; returns the repository when the action created it.

        One method per action type (``_APPLY``); an action that is one call on its repository is described
        in ``_REPOSITORY_CALLS``. Deleting something already absent succeeds: every action is safe to
        repeat after a crash.
        """
        client = await self._client(registry)
        return await _APPLY[type(action)](self, client, registry, action)

    async def _create_repository(
        self, client: ECRClient, registry: RegistryRef, action: CreateRepository
    ) -> RepositoryDescription:
        encryption: dict[str, Any] = {"encryptionType": action.encryption_type}
        if action.kms_key is not None:
            encryption["kmsKey"] = action.kms_key
        parameters: dict[str, Any] = {
            "repositoryName": action.repository,
            "imageTagMutability": action.image_tag_mutability,
            "imageScanningConfiguration": {"scanOnPush": action.scan_on_push},
            "encryptionConfiguration": encryption,
            # The owner tag is in here: a repository never exists without it, not even briefly.
            "tags": _tags(action.tags),
            **registry.parameters(),
        }
        if action.exclusion_filters:
            parameters["imageTagMutabilityExclusionFilters"] = _filters(action.exclusion_filters)
        response = await call_aws(SERVICE, "CreateRepository", client.create_repository, **parameters)
        return description_from(response["repository"])

    async def _claim_repository(
        self, client: ECRClient, registry: RegistryRef, action: ClaimRepository
    ) -> None:
        # The adopted tag comes with the owner tag, never after it: an adopted repository is never, even
        # briefly, one that looks created (and so deletable) by its object.
        tags = ((OWNER_TAG, action.owner), (ADOPTED_TAG, ADOPTED_TAG_VALUE))
        await call_aws(SERVICE, "TagResource", client.tag_resource, resourceArn=action.arn, tags=_tags(tags))
        # Read it back: a concurrent claimant (another cluster) may have tagged it too; last wins.
        owner = (await self.tags(registry, action.arn)).get(OWNER_TAG)
        if owner != action.owner:
            raise RepositoryClaimedElsewhere(action.arn, owner)

    async def _tag_repository(self, client: ECRClient, registry: RegistryRef, action: TagRepository) -> None:
        tags = _tags(action.tags)
        await call_aws(SERVICE, "TagResource", client.tag_resource, resourceArn=action.arn, tags=tags)

    async def _untag_repository(
        self, client: ECRClient, registry: RegistryRef, action: UntagRepository
    ) -> None:
        keys = list(action.keys)
        await call_aws(SERVICE, "UntagResource", client.untag_resource, resourceArn=action.arn, tagKeys=keys)

    async def _call_on_repository(self, client: ECRClient, registry: RegistryRef, action: Any) -> None:
        """Execute an action that is one call on its repository (``_REPOSITORY_CALLS``)."""
        call = _REPOSITORY_CALLS[type(action)]
        method = getattr(client, xform_name(call.operation))
        parameters = {**call.parameters(action), **_named(registry, action.repository)}
        if call.absent is None:
            await call_aws(SERVICE, call.operation, method, **parameters)
        else:
            await call_aws_unless_absent(call.absent, SERVICE, call.operation, method, **parameters)


@dataclass(frozen=True)
class _RepositoryCall:
    """How an action that is one ECR call on its repository is made."""

    operation: str
    parameters: Callable[[Any], Mapping[str, Any]] = lambda action: {}
    """What the call takes besides the repository's name and registry."""
    absent: str | None = None
    """The error code saying the call's subject is gone already: deleting it again succeeds."""


def _tag_mutability(action: PutImageTagMutability) -> dict[str, Any]:
    parameters: dict[str, Any] = {"imageTagMutability": action.image_tag_mutability}
    if action.exclusion_filters:
        parameters["imageTagMutabilityExclusionFilters"] = _filters(action.exclusion_filters)
    return parameters


_REPOSITORY_CALLS: dict[type[RepositoryAction], _RepositoryCall] = {
    PutImageTagMutability: _RepositoryCall("PutImageTagMutability", _tag_mutability),
    PutImageScanningConfiguration: _RepositoryCall(
        "PutImageScanningConfiguration",
        lambda action: {"imageScanningConfiguration": {"scanOnPush": action.scan_on_push}},
    ),
    PutLifecyclePolicy: _RepositoryCall(
        "PutLifecyclePolicy", lambda action: {"lifecyclePolicyText": action.text}
    ),
    DeleteLifecyclePolicy: _RepositoryCall("DeleteLifecyclePolicy", absent=LIFECYCLE_POLICY_NOT_FOUND),
    SetRepositoryPolicy: _RepositoryCall("SetRepositoryPolicy", lambda action: {"policyText": action.text}),
    DeleteRepositoryPolicy: _RepositoryCall("DeleteRepositoryPolicy", absent=REPOSITORY_POLICY_NOT_FOUND),
    DeleteRepository: _RepositoryCall(
        "DeleteRepository", lambda action: {"force": action.force}, REPOSITORY_NOT_FOUND
    ),
}

_ApplyStep = Callable[
    [EcrRepositories, "ECRClient", RegistryRef, Any], Coroutine[Any, Any, RepositoryDescription | None]
]
# The executor of each action type (an action type without one is a KeyError, caught by the tests).
_APPLY: dict[type[RepositoryAction], _ApplyStep] = {
    CreateRepository: EcrRepositories._create_repository,
    ClaimRepository: EcrRepositories._claim_repository,
    TagRepository: EcrRepositories._tag_repository,
    UntagRepository: EcrRepositories._untag_repository,
    **dict.fromkeys(_REPOSITORY_CALLS, EcrRepositories._call_on_repository),
}


def _named(registry: RegistryRef, repository: str) -> dict[str, str]:
    """The parameters that address the action's repository."""
    return {"repositoryName": repository, **registry.parameters()}


def _tags(tags: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags]


def _filters(filters: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"filterType": filter_type, "filter": pattern} for filter_type, pattern in filters]


def _without_missing(chunk: list[str], message: str) -> list[list[str]]:
    """What is left to describe after a RepositoryNotFoundException for ``chunk``."""
    match = _MISSING_NAME.search(message)
    missing = match.group(1) if match else None
    if missing in chunk:
        rest = [name for name in chunk if name != missing]
        return [rest] if rest else []
    if len(chunk) == 1:
        return []  # the error can only be about this one name
    # The message did not name a repository of this batch: find the missing ones by halving.
    middle = len(chunk) // 2
    return [chunk[:middle], chunk[middle:]]
