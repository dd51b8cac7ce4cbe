"""Media types of the manifests this client copies, and of the ones it refuses."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFESTS = IMAGE_MANIFESTS | INDEXES
SCHEMA1 = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# Sent on every manifest request. Schema 1 is deliberately absent: Docker Hub would otherwise convert
# old images on the fly, and a converted manifest has a different digest on every pull.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST))

# Layers that the image's author forbade redistributing (Windows base layers); registries serve them
# from the URLs in the descriptor, so there is no blob to copy.
NON_DISTRIBUTABLE_LAYERS = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

# Docker buildx stores provenance/SBOM attestations as index children with platform unknown/unknown;
# these annotations tie each one to the image it describes.
DOCKER_REFERENCE_TYPE = "vnd.docker.reference.type"
DOCKER_REFERENCE_DIGEST = "vnd.docker.reference.digest"
DOCKER_ATTESTATION_MANIFEST = "attestation-manifest"


def bare_media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    if content_type is None:
        return None
    bare = content_type.split(";", 1)[0].strip().lower()
    return bare or None
