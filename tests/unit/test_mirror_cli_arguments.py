"""``ecr-operator mirror``: the command line, credential discovery, settings, and what it prints."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from pathlib import Path

import pytest

from ecr_operator.mirror_cli import (
    EXIT_USAGE,
    EcrTokenCredentials,
    MirrorOutcome,
    ProgressLine,
    TagFailure,
    UsageError,
    auth_file_candidates,
    connections_for,
    decode_ecr_token,
    ecr_region,
    load_auth_files,
    main,
    parse_request,
    read_auth_file,
    registry_endpoints,
    registry_settings,
    select_tags,
    summary,
)
from ecr_operator.registry.auth import ChainedCredentials, Credentials, InvalidDockerConfig
from ecr_operator.registry.errors import AuthError
from ecr_operator.registry.reference import parse_reference
from ecr_operator.registry.results import BlobDone, BlobProgress, BlobStarted, ImageCopyResult, ReferrerCopy
from ecr_operator.tag_patterns import compile_tag_pattern

pytestmark = pytest.mark.unit

ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "a" * 64


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --- the command line ---------------------------------------------------------------------------


def test_a_bare_source_means_latest_and_the_tag_is_kept() -> None:
    request = parse_request(["nginx", f"{ECR}/mirror/nginx"])
    assert str(request.source) == "docker.io/library/nginx:latest"
    assert request.destination.tag is None
    assert request.tag_pattern is None
    assert request.jobs == 4
    assert not request.progress  # never without a terminal


def test_tags_and_platforms_are_parsed() -> None:
    request = parse_request(
        ["ghcr.io/org/app", "reg.example/app", "--tags", r"v\d+", "--platform", "linux/arm64", "--json"]
    )
    assert request.tag_pattern is not None
    assert request.tag_pattern.pattern == r"v\d+"
    assert request.platforms is not None
    assert [str(platform) for platform in request.platforms.requested] == ["linux/arm64"]
    assert request.json_output
    all_tags = parse_request(["a/b", "c/d", "--all-tags"]).tag_pattern
    assert all_tags is not None
    assert all_tags.pattern == ".*"


def test_progress_is_drawn_only_on_a_terminal_and_not_when_refused() -> None:
    assert parse_request(["a/b:1", "c/d"], stderr_is_terminal=True).progress
    assert not parse_request(["a/b:1", "c/d", "--no-progress"], stderr_is_terminal=True).progress


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["a/b:v1", "c/d", "--tags", "v.*"], "SRC names a repository"),
        (["a/b", "c/d:v1", "--all-tags"], "DST names a repository"),
        (["a/b", "c/d", "--tags", "("], "not a regular expression"),
        (["a/b", "c/d", "--tags", "(?!rc)"], "no lookahead/lookbehind"),
        (["a/b", "c/d", "--jobs", "0"], "--jobs"),
        (["a/b", "c/d", "--jobs", "9"], "--jobs"),
        (["a/b", "c/d", "--platform", "linux"], "invalid platform"),
        (["Not A Reference", "c/d"], "invalid"),
    ],
)
def test_impossible_requests_are_usage_errors(argv: list[str], complaint: str) -> None:
    with pytest.raises(UsageError, match=re.escape(complaint)):
        parse_request(argv)


def test_usage_errors_exit_2_before_any_network_or_file_access(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["a/b:v1", "c/d", "--tags", "v.*"]) == EXIT_USAGE
    assert "SRC names a repository" in capsys.readouterr().err
    assert main(["only-one-argument"]) == EXIT_USAGE  # argparse
    assert main(["a/b", "c/d", "--tags", "x", "--all-tags"]) == EXIT_USAGE  # mutually exclusive


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "REGISTRY_AUTH_FILE" in capsys.readouterr().out


@pytest.mark.parametrize("jobs", [1, 4, 8])
def test_there_are_connections_for_every_blob_in_flight_to_hold_two(jobs: int) -> None:
    tags_at_once = 2 * jobs
    blobs_in_flight = tags_at_once * jobs
    assert connections_for(jobs) > 2 * blobs_in_flight + 2 * tags_at_once
    assert connections_for(jobs) < 512  # well inside the usual limit of 1024 open files


def test_tags_are_matched_whole_sorted_and_invalid_names_dropped() -> None:
    pattern = compile_tag_pattern(r"v\d+")
    assert select_tags(["v2", "v10", "v1-rc", "xv1", "v1", "-v3"], pattern) == ["v1", "v10", "v2"]
    assert select_tags(["v1", ".v2", "v3"], compile_tag_pattern(r".*v\d")) == ["v1", "v3"]


def test_a_catastrophic_pattern_is_linear_on_re2() -> None:
    # Python's re backtracks 2**30 times here; RE2 answers at once.
    started = time.monotonic()
    assert select_tags(["a" * 30 + "-", "aaa"], compile_tag_pattern("(a+)+")) == ["aaa"]
    assert time.monotonic() - started < 1.0


# --- credentials --------------------------------------------------------------------------------


def test_auth_files_are_looked_up_like_skopeo_and_docker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    environ = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert auth_file_candidates(environ, home) == [
        Path("/run/user/1000/containers/auth.json"),
        home / ".config/containers/auth.json",
        home / ".docker/config.json",
        home / ".dockercfg",
    ]
    environ = {"XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dc"}
    assert auth_file_candidates(environ, home) == [
        Path("/cfg/containers/auth.json"),
        Path("/dc/config.json"),
        home / ".dockercfg",
    ]


def test_an_explicit_auth_file_is_the_only_one_read(tmp_path: Path) -> None:
    environ = {"REGISTRY_AUTH_FILE": "/env/auth.json", "XDG_RUNTIME_DIR": "/run/user/0"}
    assert auth_file_candidates(environ, tmp_path) == [Path("/env/auth.json")]
    assert auth_file_candidates(environ, tmp_path, Path("/flag.json")) == [Path("/flag.json")]


async def test_the_first_file_with_an_entry_for_a_registry_wins(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime.json"
    docker = tmp_path / "config.json"
    runtime.write_text(json.dumps({"auths": {"ghcr.io": {"auth": _auth("first", "one")}}}))
    # Docker leaves empty entries when a credential store holds the secret: they say nothing.
    docker.write_text(
        json.dumps(
            {
                "auths": {"ghcr.io": {"auth": _auth("second", "two")}, "quay.io": {}},
                "credsStore": "desktop",
                "HttpHeaders": {"User-Agent": "x"},
            }
        )
    )
    configs = load_auth_files([tmp_path / "missing.json", runtime, docker], required=False)
    chain = ChainedCredentials(*configs)
    assert await chain.credentials_for("ghcr.io", "org/app") == Credentials("first", "one")
    assert await chain.credentials_for("quay.io", "org/app") is None


async def test_legacy_dockercfg_has_no_auths_wrapper(tmp_path: Path) -> None:
    legacy = tmp_path / ".dockercfg"
    legacy.write_text(json.dumps({"https://index.docker.io/v1/": {"auth": _auth("me", "pw")}}))
    config = read_auth_file(legacy)
    assert await config.credentials_for("docker.io", "library/nginx") == Credentials("me", "pw")


def test_a_named_auth_file_must_exist_and_a_broken_one_is_named_without_secrets(tmp_path: Path) -> None:
    with pytest.raises(InvalidDockerConfig, match="cannot read"):
        load_auth_files([tmp_path / "absent.json"], required=True)
    broken = tmp_path / "auth.json"
    broken.write_text(json.dumps({"auths": {"ghcr.io": {"auth": "not base64 secret!"}}}))
    with pytest.raises(InvalidDockerConfig) as raised:
        read_auth_file(broken)
    assert str(broken) in str(raised.value)
    assert "secret" not in str(raised.value)


def test_ecr_hosts_and_their_regions() -> None:
    assert ecr_region(ECR) == "eu-west-1"
    assert ecr_region("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert ecr_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn") == "cn-north-1"
    assert ecr_region("ghcr.io") is None
    assert ecr_region("12345.dkr.ecr.eu-west-1.amazonaws.com") is None


async def test_ecr_tokens_are_fetched_once_per_region_and_only_for_ecr_hosts() -> None:
    fetched: list[str] = []

    def fetch(region: str) -> Credentials:
        fetched.append(region)
        return Credentials("AWS", f"token-{region}")

    provider = EcrTokenCredentials(fetch)
    assert await provider.credentials_for("ghcr.io", "org/app") is None
    first = await provider.credentials_for(ECR, "team/app")
    again = await provider.credentials_for(ECR, "team/other")
    assert first == again == Credentials("AWS", "token-eu-west-1")
    await provider.credentials_for("123456789012.dkr.ecr.us-east-1.amazonaws.com", "x")
    assert fetched == ["eu-west-1", "us-east-1"]


def test_ecr_tokens_decode_to_the_aws_user() -> None:
    assert decode_ecr_token(_auth("AWS", "pass:word")) == Credentials("AWS", "pass:word")
    with pytest.raises(AuthError):
        decode_ecr_token("%%%")
    with pytest.raises(AuthError):
        decode_ecr_token(base64.b64encode(b"no-colon").decode())


# --- operator settings --------------------------------------------------------------------------


def test_host_overrides_apply_to_ecr_hosts_only() -> None:
    overrides = {ECR: "127.0.0.1:5000", "*": "127.0.0.1:6000"}
    other_ecr = "210987654321.dkr.ecr.us-east-1.amazonaws.com"
    assert registry_endpoints(overrides, [ECR, other_ecr, "ghcr.io"]) == {
        ECR: "127.0.0.1:5000",
        other_ecr: "127.0.0.1:6000",
    }


def test_settings_come_from_the_operator_environment(tmp_path: Path) -> None:
    assert registry_settings({"PATH": "/bin"}).host_overrides == {}
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    environ = {
        "ECR_OPERATOR_REGISTRY_HOST_OVERRIDES": json.dumps({ECR: "127.0.0.1:5000"}),
        "ECR_OPERATOR_CA_BUNDLE": str(bundle),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        settings = registry_settings(environ)
    assert settings.host_overrides == {ECR: "127.0.0.1:5000"}
    assert settings.ca_bundle == bundle


def test_bad_settings_are_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ECR_OPERATOR_REGISTRY_HOST_OVERRIDES", '{"ghcr.io": "x"}')
    assert main(["a.io/b:v1", "c.io/d"]) == EXIT_USAGE
    assert "ECR_OPERATOR_REGISTRY_HOST_OVERRIDES" in capsys.readouterr().err


# --- output -------------------------------------------------------------------------------------


def _copied(tag: str, *, up_to_date: bool = False) -> ImageCopyResult:
    source = parse_reference(f"src.io/app:{tag}").with_digest(DIGEST)
    return ImageCopyResult(
        source=source,
        destination=parse_reference(f"{ECR}/app:{tag}").with_digest(DIGEST),
        source_digest=DIGEST,
        destination_digest=DIGEST,
        media_type="application/vnd.oci.image.index.v1+json",
        up_to_date=up_to_date,
        bytes_copied=0 if up_to_date else 1000,
        blobs_copied=0 if up_to_date else 3,
        blobs_skipped=1,
        manifests_pushed=0 if up_to_date else 2,
        platforms_copied=() if up_to_date else ("linux/amd64",),
        platforms_missing=() if up_to_date else ("linux/ppc64le",),
        referrers=(ReferrerCopy(DIGEST, "sha256:" + "b" * 64, "application/spdx+json", "m"),),
    )


def test_the_json_summary_adds_up() -> None:
    request = parse_request(["src.io/app", f"{ECR}/app", "--all-tags", "--json"])
    outcome = MirrorOutcome(
        copies=[_copied("v1"), _copied("v2", up_to_date=True)],
        failures=[TagFailure(parse_reference("src.io/app:v3"), "HTTP 500")],
        seconds=1.23456,
    )
    document = json.loads(json.dumps(summary(request, outcome)))
    assert document["ok"] is False
    assert document["seconds"] == 1.235
    first = document["images"][0]
    assert first["tag"] == "v1"
    assert first["digest"] == first["source_digest"] == DIGEST
    assert first["platforms_copied"] == ["linux/amd64"]
    assert first["platforms_missing"] == ["linux/ppc64le"]
    assert first["referrers"][0]["artifact_type"] == "application/spdx+json"
    assert document["failures"] == [{"source": "src.io/app:v3", "error": "HTTP 500"}]
    assert document["totals"] == {
        "images": 2,
        "up_to_date": 1,
        "failed": 1,
        "bytes_copied": 1000,
        "blobs_copied": 3,
        "blobs_skipped": 2,
        "blobs_mounted": 0,
        "manifests_pushed": 2,
        "referrers": 2,
    }


def test_the_progress_line_redraws_at_most_ten_times_a_second() -> None:
    now = [100.0]
    stream = io.StringIO()
    line = ProgressLine(stream, clock=lambda: now[0])
    line(BlobStarted("sha256:1", 4 * 2**20))
    line(BlobProgress("sha256:1", 2**20, 4 * 2**20))  # same instant: not drawn again
    assert stream.getvalue().count("\r") == 1
    now[0] += 1.0
    line(BlobProgress("sha256:1", 2 * 2**20, 4 * 2**20))
    assert stream.getvalue().rsplit("\r", 1)[1].startswith("[############------------] 2.0/4.0 MiB")
    line(BlobDone("sha256:1", 4 * 2**20, "copied"))
    now[0] += 1.0
    line.image_done()
    assert "4.0/4.0 MiB" in stream.getvalue().rsplit("\r", 1)[1]
    line.clear()
    assert stream.getvalue().endswith("\r\x1b[K")
