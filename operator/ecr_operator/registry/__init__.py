"""OCI distribution client and digest-exact copy engine (aiohttp only: no kopf, no boto3)."""

from ecr_operator.registry.auth import (
    Anonymous,
    ChainedCredentials,
    Credentials,
    CredentialsProvider,
    DockerConfigCredentials,
    InvalidDockerConfig,
    StaticCredentials,
    TokenCache,
)
from ecr_operator.registry.client import ManifestHead, RegistryClient
from ecr_operator.registry.copy import (
    BlobDone,
    BlobProgress,
    BlobStarted,
    ImageCopyResult,
    ManifestPushed,
    ProgressCallback,
    ProgressEvent,
    ReferrerCopy,
    copy_image,
)
from ecr_operator.registry.errors import (
    AuthError,
    DigestMismatch,
    InvalidReference,
    ManifestTooLarge,
    NoMatchingPlatform,
    NotFound,
    RegistryError,
    UnsupportedMediaType,
)
from ecr_operator.registry.platforms import Platform, PlatformFilter
from ecr_operator.registry.reference import Reference, parse_reference
from ecr_operator.registry.transport import AiohttpSender, RetryPolicy, build_ssl_context, create_session

__all__ = [
    "AiohttpSender",
    "Anonymous",
    "AuthError",
    "BlobDone",
    "BlobProgress",
    "BlobStarted",
    "ChainedCredentials",
    "Credentials",
    "CredentialsProvider",
    "DigestMismatch",
    "DockerConfigCredentials",
    "ImageCopyResult",
    "InvalidDockerConfig",
    "InvalidReference",
    "ManifestHead",
    "ManifestPushed",
    "ManifestTooLarge",
    "NoMatchingPlatform",
    "NotFound",
    "Platform",
    "PlatformFilter",
    "ProgressCallback",
    "ProgressEvent",
    "Reference",
    "ReferrerCopy",
    "RegistryClient",
    "RegistryError",
    "RetryPolicy",
    "StaticCredentials",
    "TokenCache",
    "UnsupportedMediaType",
    "build_ssl_context",
    "copy_image",
    "create_session",
    "parse_reference",
]
