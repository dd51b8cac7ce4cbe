"""Which upstream tags a mirror copies: explicit lists, include/exclude, semver ranges, keepLatest."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecr_operator.api.mirror import TagSelection
from ecr_operator.reconcile.mirror import needs_tag_listing, newest_first, select_tags
from ecr_operator.reconcile.semver import InvalidRange, Version, parse_range, parse_tag_version, tag_order_key

pytestmark = pytest.mark.unit

PRERELEASES = ("rc.1", "rc.2", "alpha", "beta.11", "alpine", "0")
versions = st.builds(
    Version,
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 12),
    st.sampled_from([(), *(tuple(text.split(".")) for text in PRERELEASES)]),
)
release_versions = st.builds(Version, st.integers(0, 12), st.integers(0, 12), st.integers(0, 12))


@st.composite
def version_tags(draw: st.DrawFn) -> str:
    version = draw(versions)
    parts = [str(version.major), str(version.minor), str(version.patch)][: draw(st.integers(1, 3))]
    text = ("v" if draw(st.booleans()) else "") + ".".join(parts)
    return text + (f"-{'.'.join(version.prerelease)}" if version.prerelease else "")


other_tags = st.one_of(
    st.sampled_from(["latest", "stable", "edge", "mainline", "nightly", "main"]),
    st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True),
)
tags = st.one_of(version_tags(), other_tags)
tag_lists = st.lists(tags, max_size=30)
RANGES = [">=1.2.0", "<3", "~1.4", "^2", "1.2 - 4.5", ">=0.3.0 <7.0.0 || ^10", "*", "!=5.5.5", ">=1.0.0-0"]
PATTERNS = [r"^v", r"^[0-9]", r"rc", r"\.", r"^1\.", r"alpine$", r"a"]


@st.composite
def selections(draw: st.DrawFn) -> TagSelection:
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["list"] = draw(
            st.lists(st.sampled_from(["latest", "v1", "1.2.3", "stable"]), min_size=1, unique=True)
        )
    filtered = draw(st.booleans())
    if filtered:
        if draw(st.booleans()):
            fields["include"] = draw(st.sampled_from(PATTERNS))
        if "include" not in fields or draw(st.booleans()):
            fields["semver"] = draw(st.sampled_from(RANGES))
        if draw(st.booleans()):
            fields["exclude"] = draw(st.sampled_from(PATTERNS))
        if draw(st.booleans()):
            fields["keepLatest"] = draw(st.integers(1, 5))
    if not fields:
        fields["list"] = ["latest"]
    return TagSelection.model_validate(fields)


def _matches(selection: TagSelection, tag: str) -> bool:
    return (
        (selection.include is None or re.search(selection.include, tag) is not None)
        and (selection.semver is None or parse_range(selection.semver).matches_tag(tag))
        and (selection.exclude is None or re.search(selection.exclude, tag) is None)
    )


@given(selections(), tag_lists)
def test_explicit_tags_are_always_chosen_and_nothing_else_is_invented(
    selection: TagSelection, upstream: list[str]
) -> None:
    chosen = select_tags(selection, upstream)
    explicit = set(selection.names or ())
    assert explicit <= set(chosen)
    assert set(chosen) <= explicit | set(upstream)
    assert len(chosen) == len(set(chosen))


@given(selections(), tag_lists)
def test_filtered_tags_pass_every_filter(selection: TagSelection, upstream: list[str]) -> None:
    explicit = set(selection.names or ())
    for tag in select_tags(selection, upstream):
        assert tag in explicit or _matches(selection, tag)


@given(selections(), tag_lists)
def test_keep_latest_keeps_the_highest_matching_tags(selection: TagSelection, upstream: list[str]) -> None:
    chosen = set(select_tags(selection, upstream))
    matching = [
        tag for tag in dict.fromkeys(upstream) if needs_tag_listing(selection) and _matches(selection, tag)
    ]
    if selection.keep_latest is None:
        assert set(matching) <= chosen
        return
    kept = newest_first(matching)[: selection.keep_latest]
    assert set(kept) <= chosen
    dropped = set(matching) - set(kept) - set(selection.names or ())
    assert not dropped & chosen
    if kept and dropped:
        assert max(tag_order_key(tag) for tag in dropped) < min(tag_order_key(tag) for tag in kept)


@given(selections(), tag_lists, st.randoms())
def test_the_choice_does_not_depend_on_listing_order_or_repeats(
    selection: TagSelection, upstream: list[str], random: Any
) -> None:
    shuffled = upstream + upstream[: len(upstream) // 2]
    random.shuffle(shuffled)
    assert select_tags(selection, shuffled) == select_tags(selection, upstream)


@given(selections(), tag_lists)
def test_tags_come_newest_first(selection: TagSelection, upstream: list[str]) -> None:
    chosen = select_tags(selection, upstream)
    keys = [tag_order_key(tag) for tag in chosen]
    assert keys == sorted(keys, reverse=True)


@given(tag_lists)
def test_an_explicit_list_needs_no_listing_and_ignores_it(upstream: list[str]) -> None:
    selection = TagSelection.model_validate({"list": ["v2", "latest", "v10"]})
    assert not needs_tag_listing(selection)
    assert select_tags(selection, upstream) == ("v10", "v2", "latest")


def test_a_typical_selection() -> None:
    upstream = ["1.25.5", "1.26.0", "1.26.3", "1.27.0-rc.1", "1.27.2", "1.27.2-alpine", "latest", "mainline"]
    selection = TagSelection.model_validate(
        {"list": ["stable"], "semver": ">=1.26", "exclude": "alpine", "keepLatest": 2}
    )
    assert select_tags(selection, upstream) == ("1.27.2", "1.26.3", "stable")
    with_prereleases = TagSelection.model_validate({"semver": ">=1.26.0-0", "exclude": "alpine$"})
    assert select_tags(with_prereleases, upstream) == ("1.27.2", "1.27.0-rc.1", "1.26.3", "1.26.0")
    regex = TagSelection.model_validate({"include": r"^1\.2[67]\.", "keepLatest": 3})
    assert select_tags(regex, upstream) == ("1.27.2", "1.27.2-alpine", "1.27.0-rc.1")


# --- semantic versions ------------------------------------------------------------------------------


@given(versions)
def test_a_version_reads_back_from_its_text(version: Version) -> None:
    assert parse_tag_version(str(version)) == version
    assert parse_tag_version(f"v{version}") == version


@given(versions, versions)
def test_precedence_is_a_total_order_with_pre_releases_first(a: Version, b: Version) -> None:
    assert (a < b) + (a == b) + (a > b) == 1
    if (a.major, a.minor, a.patch) != (b.major, b.minor, b.patch):
        assert (a < b) == ((a.major, a.minor, a.patch) < (b.major, b.minor, b.patch))
    elif a.prerelease and not b.prerelease:
        assert a < b


def test_precedence_follows_the_semver_example() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"]  # fmt: skip
    parsed = [parse_tag_version(text) for text in ordered]
    assert all(version is not None for version in parsed)
    assert [str(version) for version in sorted(v for v in parsed if v is not None)] == ordered


@pytest.mark.parametrize("tag", ["latest", "1.2.3.4", "v", "1.x", "1..2", "01a", "1.2.3-", "1.2-beta..1", ""])
def test_other_tags_are_not_versions(tag: str) -> None:
    assert parse_tag_version(tag) is None


@pytest.mark.parametrize(
    ("sugar", "plain"),
    [
        ("^{M}.{m}.{p}", "{caret}"),
        ("~{M}.{m}.{p}", ">={M}.{m}.{p} <{M}.{m1}.0"),
        ("~{M}.{m}", ">={M}.{m}.0 <{M}.{m1}.0"),
        ("~{M}", ">={M}.0.0 <{M1}.0.0"),
        ("{M}.{m}.x", ">={M}.{m}.0 <{M}.{m1}.0"),
        ("{M}.x", ">={M}.0.0 <{M1}.0.0"),
        ("{M}.{m}", ">={M}.{m}.0 <{M}.{m1}.0"),
        ("{M}.{m} - {M1}", ">={M}.{m}.0 <{M2}.0.0"),
        ("{M}.{m}.{p} - {M1}.{m}.{p}", ">={M}.{m}.{p} <={M1}.{m}.{p}"),
        (">{M}.{m}", ">={M}.{m1}.0"),
        ("<={M}.{m}", "<{M}.{m1}.0"),
        ("=>{M}.{m}.{p}, =<{M1}", ">={M}.{m}.{p} <{M2}.0.0"),
    ],
)
@given(major=st.integers(0, 5), minor=st.integers(0, 5), patch=st.integers(0, 5), version=release_versions)
def test_range_shorthands_mean_their_plain_comparators(
    sugar: str, plain: str, major: int, minor: int, patch: int, version: Version
) -> None:
    if major:
        caret = f">={major}.{minor}.{patch} <{major + 1}.0.0"
    elif minor:
        caret = f">=0.{minor}.{patch} <0.{minor + 1}.0"
    else:
        caret = f">=0.0.{patch} <0.0.{patch + 1}"
    names = {"M": major, "m": minor, "p": patch, "M1": major + 1, "M2": major + 2, "m1": minor + 1}
    short, long = sugar.format(**names), plain.format(**names, caret=caret)
    assert parse_range(short).contains(version) == parse_range(long).contains(version), (short, long)


@given(release_versions, st.sampled_from(RANGES), st.sampled_from(RANGES))
def test_or_is_either_and_and_is_both(version: Version, first: str, second: str) -> None:
    either = parse_range(f"{first} || {second}").contains(version)
    assert either == (parse_range(first).contains(version) or parse_range(second).contains(version))
    if "||" not in first and "||" not in second:
        both = parse_range(f"{first} {second}").contains(version)
        assert both == (parse_range(first).contains(version) and parse_range(second).contains(version))


@given(release_versions, release_versions)
def test_comparators_agree_with_precedence(version: Version, bound: Version) -> None:
    assert parse_range(f">={bound}").contains(version) == (version >= bound)
    assert parse_range(f">{bound}").contains(version) == (version > bound)
    assert parse_range(f"<{bound}").contains(version) == (version < bound)
    assert parse_range(f"!={bound}").contains(version) == (version != bound)
    assert parse_range(f"={bound}").contains(version) == (version == bound)


@given(versions.filter(lambda v: bool(v.prerelease)), st.sampled_from([">=0.0.0", "*", "<100", "~1", "^0"]))
def test_pre_releases_match_only_ranges_that_ask_for_them(version: Version, plain: str) -> None:
    assert not parse_range(plain).contains(version)
    assert parse_range(">=0.0.0-0").contains(version)


@pytest.mark.parametrize("text", [">=", "1.2.3 -", "=> =>1", "~", "1.2.3.4", "latest"])
def test_malformed_ranges_say_what_they_could_not_read(text: str) -> None:
    with pytest.raises(InvalidRange):
        parse_range(text)
