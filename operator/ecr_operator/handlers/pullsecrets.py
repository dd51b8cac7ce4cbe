"""Pull-secret rotation wired into kopf: indexes instead of LIST calls, and the events that ask for syncs.

- ``kopf.index`` keeps Namespaces, ServiceAccounts, the operator's own Secrets (selected server-side by
  label, so other Secrets never reach the process) and EcrRepositories in memory; the startup handler hands
  them to the ``PullSecretController`` the Runtime owns (``controllers/pullsecrets.py``).
- A change enqueues its namespace. Indexers enqueue additions and updates (ServiceAccounts are chatty);
  ``@on.event`` handlers only catch deletions. An EcrRepository enqueues its namespace only when it
  concerns pull secrets (``PullSecretController.repository_seen``).
"""

from __future__ import annotations

from typing import Any

import kopf

from ecr_operator.api.common import GROUP, VERSION
from ecr_operator.controllers.pullsecrets import PullSecretIndexes
from ecr_operator.reconcile.pullsecrets import (
    MANAGED_LABELS,
    MANAGED_SECRET_SELECTOR,
    NamespaceView,
    RepositoryView,
    SecretView,
    ServiceAccountView,
)
from ecr_operator.runtime import Runtime

# kopf hands each index to handlers as a keyword argument named by its id.
NAMESPACES_INDEX = "pull_secret_namespaces"
SERVICE_ACCOUNTS_INDEX = "pull_secret_service_accounts"
SECRETS_INDEX = "pull_secret_secrets"
REPOSITORIES_INDEX = "pull_secret_repositories"


@kopf.on.startup()
async def attach_pull_secret_indexes(settings: kopf.OperatorSettings, memo: Runtime, **kwargs: Any) -> None:
    # Server-side selection: other Secrets never reach the process, let alone its memory.
    settings.watching.label_selectors["v1", "secrets"] = MANAGED_SECRET_SELECTOR
    # kopf passes each index (live; filled once the watches start) as a keyword named after its indexer.
    memo.pull_secrets.attach(
        PullSecretIndexes(
            kwargs[NAMESPACES_INDEX],
            kwargs[SERVICE_ACCOUNTS_INDEX],
            kwargs[SECRETS_INDEX],
            kwargs[REPOSITORIES_INDEX],
        )
    )


def _requested(memo: Runtime, namespace: str | None) -> str:
    """Ask for a sync of ``namespace``; returns it for use as an index key."""
    name = namespace or ""
    if name:
        memo.pull_secrets.request_sync(name)
    return name


@kopf.index("v1", "namespaces", id=NAMESPACES_INDEX)
async def pull_secret_namespaces(
    body: kopf.Body, name: str, memo: Runtime, **_: Any
) -> dict[str, NamespaceView]:
    return {_requested(memo, name): NamespaceView.from_body(body)}


@kopf.index("v1", "serviceaccounts", id=SERVICE_ACCOUNTS_INDEX)
async def pull_secret_service_accounts(
    body: kopf.Body, namespace: str | None, memo: Runtime, **_: Any
) -> dict[str, ServiceAccountView]:
    return {_requested(memo, namespace): ServiceAccountView.from_body(body)}


@kopf.index("v1", "secrets", labels=dict(MANAGED_LABELS), id=SECRETS_INDEX)
async def pull_secret_secrets(
    body: kopf.Body, namespace: str | None, memo: Runtime, **_: Any
) -> dict[str, SecretView]:
    return {_requested(memo, namespace): SecretView.from_body(body)}


@kopf.index(GROUP, VERSION, "ecrrepositories", id=REPOSITORIES_INDEX)
async def pull_secret_repositories(
    body: kopf.Body, namespace: str | None, memo: Runtime, **_: Any
) -> dict[str, RepositoryView]:
    # Every repository is indexed, not only those asking for a secret: kopf keeps the old value when an
    # indexer returns None, and a repository that stops asking must leave the index.
    view = RepositoryView.from_body(body)
    memo.pull_secrets.repository_seen(view)
    return {namespace or "": view}


def _not_ready(memo: Runtime, **_: Any) -> bool:
    return not memo.pull_secrets.ready


@kopf.on.event("v1", "namespaces", when=_not_ready)
async def pull_secrets_indexed(memo: Runtime, **_: Any) -> None:
    """kopf runs handlers only after every index is filled; the first call opens the sync queue."""
    memo.pull_secrets.mark_ready()


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


# Indexers never see deletions: a deleted Secret is re-created, a deleted repository's demand dropped.
@kopf.on.event("v1", "secrets", labels=dict(MANAGED_LABELS), when=_deleted)
async def pull_secret_deleted(namespace: str | None, memo: Runtime, **_: Any) -> None:
    _requested(memo, namespace)


@kopf.on.event(GROUP, VERSION, "ecrrepositories", when=_deleted)
async def pull_secret_repository_deleted(uid: str, namespace: str | None, memo: Runtime, **_: Any) -> None:
    memo.pull_secrets.repository_gone(uid, namespace or "")
