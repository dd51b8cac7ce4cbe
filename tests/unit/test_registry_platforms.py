"""Platform matching, the choice of index children a platform filter copies, and the filtered index."""

from __future__ import annotations

import json

import pytest

from ecr_operator.registry import mediatypes
from ecr_operator.registry.copy import filtered_index, select_children
from ecr_operator.registry.errors import InvalidReference
from ecr_operator.registry.manifest import Descriptor, parse_manifest
from ecr_operator.registry.platforms import Platform, PlatformFilter

pytestmark = pytest.mark.unit


def _digest(n: int) -> str:
    return f"sha256:{n:064x}"


def _child(n: int, platform: str | None, **annotations: str) -> Descriptor:
    parsed = None
    if platform is not None:
        os, arch, *variant = platform.split("/")
        parsed = Platform.of(os, arch, *variant)
    return Descriptor(mediatypes.OCI_MANIFEST, _digest(n), 500, platform=parsed, annotations=annotations)


def _attestation(n: int, of: int) -> Descriptor:
    return Descriptor(
        mediatypes.OCI_MANIFEST,
        _digest(n),
        500,
        platform=Platform("unknown", "unknown"),
        annotations={
            mediatypes.DOCKER_REFERENCE_TYPE: mediatypes.DOCKER_ATTESTATION_MANIFEST,
            mediatypes.DOCKER_REFERENCE_DIGEST: _digest(of),
        },
    )


@pytest.mark.parametrize(
    ("requested", "entry", "selected"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/arm64", False),
        ("linux/amd64", "windows/amd64", False),
        # arm64's default variant is v8: both spellings are the same platform, either way round.
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/arm64/8", "linux/arm64/v8", True),
        # Without a variant, every variant of the architecture is accepted.
        ("linux/arm", "linux/arm/v6", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm/v7", "linux/arm", True),
        ("linux/arm/v7", "linux/arm/v6", False),
        ("linux/amd64/v3", "linux/amd64", False),
        ("linux/amd64", "linux/amd64/v3", True),
        # What uname and distributions print.
        ("linux/x86_64", "linux/amd64", True),
        ("Linux/AARCH64", "linux/arm64/v8", True),
        ("linux/armhf", "linux/arm/v7", True),
        ("linux/armhf", "linux/arm/v6", False),
        ("macos/arm64", "darwin/arm64", True),
    ],
)
def test_platform_matching(requested: str, entry: str, selected: bool) -> None:
    os, arch, *variant = entry.split("/")
    assert Platform.parse(requested).selects(Platform.of(os, arch, *variant)) is selected


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/amd64/v8/extra", "linux amd64", ""])
def test_malformed_platforms_are_refused(text: str) -> None:
    with pytest.raises(InvalidReference, match="os/arch"):
        Platform.parse(text)


def test_a_filter_needs_a_platform() -> None:
    with pytest.raises(InvalidReference):
        PlatformFilter.parse([])


def test_platform_strings_are_normalised() -> None:
    assert str(Platform.parse("Linux/x86_64")) == "linux/amd64"
    assert str(Platform.parse("linux/armhf")) == "linux/arm/v7"
    assert str(Platform.parse("linux/arm64/8")) == "linux/arm64/v8"


def test_no_filter_selects_everything() -> None:
    children = [_child(1, "linux/amd64"), _child(2, "linux/arm64/v8"), _attestation(3, of=1)]
    selection = select_children(children, None)
    assert selection.selected == tuple(children)
    assert selection.dropped == ()
    assert selection.platforms_copied == ("linux/amd64", "linux/arm64/v8")
    assert selection.platforms_missing == ()


def test_filter_keeps_attestations_of_selected_images_only() -> None:
    amd64, arm64, s390x = _child(1, "linux/amd64"), _child(2, "linux/arm64/v8"), _child(3, "linux/s390x")
    children = [amd64, arm64, s390x, _attestation(11, of=1), _attestation(12, of=2), _attestation(13, of=3)]
    selection = select_children(children, PlatformFilter.parse(["linux/amd64", "linux/arm64"]))
    assert [child.digest for child in selection.selected] == [_digest(n) for n in (1, 2, 11, 12)]
    assert [child.digest for child in selection.dropped] == [_digest(3), _digest(13)]
    assert selection.platforms_copied == ("linux/amd64", "linux/arm64/v8")


def test_platforms_missing_upstream_are_reported() -> None:
    children = [_child(1, "linux/amd64"), _child(2, "linux/arm64/v8")]
    selection = select_children(
        children, PlatformFilter.parse(["linux/arm64", "linux/riscv64", "windows/amd64"])
    )
    assert selection.platforms_copied == ("linux/arm64/v8",)
    assert selection.platforms_missing == ("linux/riscv64", "windows/amd64")


def test_children_without_platform_are_always_copied() -> None:
    artifact = _child(5, None)
    selection = select_children([_child(1, "linux/amd64"), artifact], PlatformFilter.parse(["linux/arm64"]))
    assert selection.selected == (artifact,)
    assert selection.platforms_missing == ("linux/arm64",)


# --- the filtered index -------------------------------------------------------------------------

_SOURCE_INDEX = (
    b'{\n  "schemaVersion": 2,\n  "mediaType": "application/vnd.oci.image.index.v1+json",\n'
    b'  "manifests": [\n'
    b'    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "'
    + _digest(1).encode()
    + b'", "size": 500, "platform": {"os": "linux", "architecture": "amd64"}},\n'
    b'    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "'
    + _digest(2).encode()
    + b'", "size": 500, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},'
    b' "annotations": {"org.example/note": "caf\\u00e9 \xe2\x98\x95"}},\n'
    b'    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "'
    + _digest(3).encode()
    + b'", "size": 500, "platform": {"os": "linux", "architecture": "s390x"}}\n'
    b'  ],\n  "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"}\n}'
)


def test_filtered_index_keeps_the_chosen_entries_exactly_and_everything_else() -> None:
    index = parse_manifest(_SOURCE_INDEX, content_type=mediatypes.OCI_INDEX)
    selection = select_children(index.children, PlatformFilter.parse(["linux/s390x", "linux/arm64"]))

    filtered = filtered_index(index, selection.selected)

    document, source = json.loads(filtered.raw), json.loads(_SOURCE_INDEX)
    assert document == {**source, "manifests": [source["manifests"][1], source["manifests"][2]]}
    assert list(document) == list(source)  # key order as in the source
    assert list(document["manifests"][0]["platform"]) == ["architecture", "os", "variant"]
    assert filtered.media_type == index.media_type
    assert [child.digest for child in filtered.children] == [_digest(2), _digest(3)]
    assert filtered.digest != index.digest


def test_filtered_index_is_deterministic() -> None:
    index = parse_manifest(_SOURCE_INDEX, content_type=mediatypes.OCI_INDEX)
    keep = select_children(index.children, PlatformFilter.parse(["linux/amd64"])).selected
    again = parse_manifest(bytes(_SOURCE_INDEX), content_type=mediatypes.OCI_INDEX)
    assert filtered_index(index, keep).raw == filtered_index(again, keep).raw
