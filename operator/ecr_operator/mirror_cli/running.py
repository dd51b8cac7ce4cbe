"""Running a valid ``ecr-operator mirror`` command: credentials, the copies, what is printed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ecr_operator.logs import configure_logging
from ecr_operator.mirror_cli.arguments import (
    EXIT_COPY_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    MirrorRequest,
    fail,
)
from ecr_operator.mirror_cli.copying import MirrorOutcome, connections_for, mirror
from ecr_operator.mirror_cli.credentials import (
    EcrTokenCredentials,
    RegistrySettings,
    auth_file_candidates,
    load_auth_files,
    registry_endpoints,
    registry_settings,
)
from ecr_operator.mirror_cli.output import describe, summary
from ecr_operator.mirror_cli.progress import ProgressLine
from ecr_operator.registry.auth import (
    ChainedCredentials,
    CredentialsProvider,
    DockerConfigCredentials,
    InvalidDockerConfig,
)
from ecr_operator.registry.client import RegistryClient
from ecr_operator.registry.errors import RegistryError
from ecr_operator.registry.transport import AiohttpSender, create_session


def run(request: MirrorRequest) -> int:
    """Copy what ``request`` asks for and report it; returns the exit status."""
    try:
        settings = registry_settings(os.environ)
        candidates = auth_file_candidates(os.environ, Path.home(), request.auth_file)
        configs = load_auth_files(candidates, required=request.auth_file is not None)
    except (ValueError, InvalidDockerConfig) as error:  # InvalidSettingsError is a ValueError
        return fail(EXIT_USAGE, str(error))
    configure_logging("text", "INFO" if request.verbose else "WARNING")
    progress = ProgressLine(sys.stderr) if request.progress else None
    try:
        outcome = asyncio.run(_run(request, settings, configs, progress))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted")
    except RegistryError as error:
        return fail(EXIT_COPY_FAILED, str(error))
    finally:
        if progress is not None:
            progress.clear()
    if request.json_output:
        print(json.dumps(summary(request, outcome), indent=2))
    else:
        for result in outcome.copies:
            print(describe(result))
    for failure in outcome.failures:
        # Most registry errors already start with the image they are about.
        named = failure.error.startswith(str(failure.source))
        print(f"{PROG}: {'' if named else f'{failure.source}: '}{failure.error}", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_COPY_FAILED


async def _run(
    request: MirrorRequest,
    settings: RegistrySettings,
    configs: Sequence[DockerConfigCredentials],
    progress: ProgressLine | None,
) -> MirrorOutcome:
    providers: list[CredentialsProvider] = [*configs, EcrTokenCredentials()]
    endpoints = registry_endpoints(
        settings.host_overrides, [request.source.registry, request.destination.registry]
    )
    async with create_session(
        ca_bundle=settings.ca_bundle, connections=connections_for(request.jobs)
    ) as session:
        # One client for both sides: a shared token cache, and blob mounts within one registry.
        client = RegistryClient(
            AiohttpSender(session), credentials=ChainedCredentials(*providers), endpoints=endpoints
        )
        return await mirror(request, client, progress)
