"""ImageMirror against hostile tenants and upstreams, end to end (issue 8: F2, F6, F7, F10).

- F2: a tenant forges ``status.repositoryUri`` (and ``Ready``) of an EcrRepository; the operator must send
  nothing to the forged host and push only where spec, settings and AWS say.
- F6: a catastrophic ``tags.include`` against bait tags must not stall the event loop (``/healthz``).
- F7: mirrors stuck on an upstream that never answers hold only their share of the sync slots: a
  well-behaved mirror in another namespace still syncs within seconds; a pass ends at its deadline.
- F10: an upstream answering nonsense is a reported failure (condition, Event), never a dead loop.

The scripted upstream and the forged destination are small TLS servers of this file, with certificates of
the world's CA, so the operator would really complete a handshake with them: any request it sends is seen.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from mirror_support import (
    ALLOW_LOOPBACK,
    ecr_digest,
    ecr_repository,
    get,
    image_mirror,
    pass_ended,
    request_sync,
    synced,
)
from repository_support import apply, condition

from ecr_sandbox.pki import CertificateAuthority
from ecr_sandbox.world import World
from operator_fixture import StartOperator
from waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

GOOD_SYNC_LIMIT = 10.0
HEALTHZ_LIMIT = 1.0


# --- a scripted TLS server -------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class ScriptedServer:
    """HTTPS on 127.0.0.1 with a certificate of the world's CA. ``routes`` maps a path prefix to a
    behaviour: ``hang`` (never answer), ``forward`` (to ``upstream``), or ``(status, headers, body)``.
    Records connections and requests."""

    port: int
    routes: dict[str, Any] = field(default_factory=dict)
    upstream: str | None = None
    """Base URL that ``forward`` routes are passed to (a world registry)."""
    upstream_context: ssl.SSLContext | None = None
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def forward(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        assert self.upstream is not None
        wanted = {key: value for key, value in headers.items() if key.lower() == "accept"}
        url = f"{self.upstream}{path}"  # a world registry's https URL
        request = urllib.request.Request(url, method=method, headers=wanted)  # noqa: S310
        try:
            opened = urllib.request.urlopen(request, context=self.upstream_context, timeout=30)  # noqa: S310
            with opened as response:
                status, answer, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer, body = error.code, error.headers, error.read()
        kept = ("Content-Type", "Docker-Content-Digest", "Content-Length")
        out = {name: answer[name] for name in kept if answer.get(name) is not None}
        if method != "HEAD":
            out["Content-Length"] = str(len(body))
        return status, out, body

    def answer(self, path: str) -> Any:
        matches = [prefix for prefix in self.routes if path.startswith(prefix)]
        return self.routes[max(matches, key=len)] if matches else (404, {}, b'{"errors":[]}')


@pytest.fixture
def scripted(world: World, tmp_path: Path) -> Iterator[ScriptedServer]:
    authority = CertificateAuthority.load(world.ca_bundle, world.state_dir / "pki" / "ca.key")
    cert, key = authority.issue_server_cert("127.0.0.1", ["127.0.0.1"]).write(tmp_path, "scripted")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    state = ScriptedServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def _serve(self) -> None:
            state.requests.append(Seen(self.command, self.path, dict(self.headers.items())))
            behaviour = state.answer(self.path)
            if behaviour == "hang":
                state.stopping.wait(120)
                return
            if behaviour == "forward":
                behaviour = state.forward(self.command, self.path, dict(self.headers.items()))
            status, headers, body = behaviour
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _serve

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            raw, address = self.socket.accept()
            state.connections += 1
            raw.settimeout(130)
            return context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False), address

    server = Server(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.stopping.set()
    server.shutdown()
    server.server_close()


# --- helpers ---------------------------------------------------------------------------------------


def repository_ready(world: World, namespace: str, name: str) -> dict[str, Any]:
    return eventually(
        f"EcrRepository {namespace}/{name} to be Ready",
        lambda: (
            (doc := get(world, "ecrrepository", namespace, name))
            and condition(doc, "Ready").get("status") == "True"
            and doc
        ),
        timeout=60,
    )


def patch_status(world: World, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """What a tenant allowed to patch ``<kind>/status`` can do."""
    world.kubectl(
        "patch", kind, name, "--namespace", namespace, "--subresource=status", "--type=merge",
        "--patch", json.dumps({"status": status}),
    )  # fmt: skip


def failed_with(world: World, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
    return pass_ended(world, namespace, name, "False", "to report a failure", timeout)


def events(world: World, namespace: str, name: str) -> list[dict[str, Any]]:
    result = world.kubectl(
        "get",
        "events",
        "--namespace",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def healthz_seconds(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 -- loopback URL
        response.read()
    return time.monotonic() - started


class HealthWatch:
    """Polls ``/healthz`` in a thread while the test runs; the slowest answer is what counts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(healthz_seconds(self.url))
            except OSError:
                self.samples.append(float("inf"))
            self._stop.wait(0.2)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


# --- F2: status is output, never input ---------------------------------------------------------------


def test_f2_a_forged_repository_uri_gets_no_request_and_the_mirror_pushes_where_aws_says(
    world: World, operator: StartOperator, namespace: str, scripted: ScriptedServer
) -> None:
    operator(**ALLOW_LOOPBACK)  # loopback is allowed for sources: the forged host must be refused anyway
    repository = ecr_repository(world, namespace, "app")
    real_uri = repository_ready(world, namespace, "app")["status"]["repositoryUri"]
    forged = f"{scripted.host}/loot"
    patch_status(world, "ecrrepository", namespace, "app", {"repositoryUri": forged})
    source = world.registry_client("anonymous")
    digest = source.push_image(f"{namespace}/src", "v1")

    apply(
        world,
        image_mirror(
            namespace, "app", f"{world.registries['anonymous'].host}/{namespace}/src", tags={"list": ["v1"]}
        ),
    )

    mirror = synced(world, namespace, "app")
    assert mirror["status"]["repositoryUri"] == real_uri == f"{world.ecr_registry_host()}/{repository}"
    assert ecr_digest(world, repository, "v1") == digest
    # The forgery was in place the whole time, and the forged host saw nothing at all.
    stored = get(world, "ecrrepository", namespace, "app")
    assert stored is not None
    assert stored["status"]["repositoryUri"] == forged
    assert (scripted.connections, scripted.requests) == (0, [])


def test_f2_a_forged_ready_on_a_repository_another_namespace_owns_pushes_nothing_there(
    world: World, operator: StartOperator, namespace: str
) -> None:
    operator(**ALLOW_LOOPBACK)
    shared = ecr_repository(world, namespace, "victim", f"{namespace}/shared")
    repository_ready(world, namespace, "victim")
    before = ecr_digest(world, shared, "v1")
    attacker = world.create_namespace()
    try:
        ecr_repository(world, attacker, "grab", shared)
        eventually(
            "the second claim to be refused",
            lambda: (
                condition(get(world, "ecrrepository", attacker, "grab"), "Ready").get("status") == "False"
            ),
            timeout=60,
        )
        patch_status(
            world,
            "ecrrepository",
            attacker,
            "grab",
            {
                "repositoryUri": f"{world.ecr_registry_host()}/{shared}",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "RepositoryReady",
                        "message": "forged",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            },
        )
        world.registry_client("anonymous").push_image(f"{attacker}/src", "v1")
        apply(
            world,
            image_mirror(
                attacker,
                "grab",
                f"{world.registries['anonymous'].host}/{attacker}/src",
                tags={"list": ["v1"]},
            ),
        )

        def refused() -> dict[str, Any] | None:
            document = get(world, "imagemirror", attacker, "grab")
            return document if condition(document, "Ready").get("reason") == "DestinationConflict" else None

        mirror = eventually("the forged destination to be refused", refused, timeout=60)
        assert "ecr-operator.io/owner" in condition(mirror, "Ready")["message"]
        time.sleep(2)  # a push, had one started, would have landed by now
        assert ecr_digest(world, shared, "v1") == before is None
    finally:
        world.delete_namespace(attacker)


# --- F6: linear-time tag patterns ---------------------------------------------------------------------


def test_f6_a_catastrophic_pattern_against_bait_tags_keeps_healthz_fast_and_the_mirror_sane(
    world: World, operator: StartOperator, namespace: str
) -> None:
    running = operator(**ALLOW_LOOPBACK)
    source = world.registry_client("anonymous")
    repository = f"{namespace}/bait"
    for tag in ("a" * 30 + "-", "a" * 31 + "-", "aaaa"):
        source.push_image(repository, tag)
    wanted = source.manifest_digest(repository, "aaaa")
    destination = ecr_repository(world, namespace, "bait")
    ecr_repository(world, namespace, "bystander")
    source.push_image(f"{namespace}/plain", "v1")
    for name in ("bait", "bystander"):
        repository_ready(world, namespace, name)  # the operator's start-up work is done: measure the mirror

    with HealthWatch(running.health_url) as health:
        apply(
            world,
            image_mirror(
                namespace,
                "bait",
                f"{world.registries['anonymous'].host}/{repository}",
                tags={"include": "^(a+)+$"},
            ),
        )
        mirror = synced(world, namespace, "bait")
        apply(
            world,
            image_mirror(
                namespace,
                "bystander",
                f"{world.registries['anonymous'].host}/{namespace}/plain",
                tags={"list": ["v1"]},
            ),
        )
        synced(world, namespace, "bystander", timeout=GOOD_SYNC_LIMIT + 30)

    assert [entry["tag"] for entry in mirror["status"]["tags"]] == ["aaaa"]
    assert ecr_digest(world, destination, "aaaa") == wanted
    assert health.samples, "healthz was never polled"
    print(f"{len(health.samples)} /healthz answers, slowest {max(health.samples):.3f}s")
    assert max(health.samples) < HEALTHZ_LIMIT, f"slowest /healthz: {max(health.samples):.2f}s"


def test_f6_a_pattern_re2_cannot_run_is_refused_naming_the_field(world: World, namespace: str) -> None:
    document = image_mirror(
        namespace,
        "lookahead",
        "registry.example/team/app",
        tags={"include": "^(?!.*-rc).*$"},
        destination={"repositoryRef": {"name": "x"}},
    )
    result = world.kubectl("apply", "--filename", "-", input=json.dumps(document), check=False)
    assert result.returncode != 0
    assert "spec.tags.include" in result.stderr
    assert "RE2" in result.stderr


# --- F7: deadlines and fair slots ------------------------------------------------------------------


def test_f7_mirrors_stuck_on_a_silent_upstream_never_delay_another_namespace(
    world: World, operator: StartOperator, namespace: str, scripted: ScriptedServer
) -> None:
    scripted.routes["/"] = "hang"
    running = operator(
        **ALLOW_LOOPBACK,
        ECR_OPERATOR_MIRROR_CONCURRENCY="2",
        ECR_OPERATOR_MIRROR_NAMESPACE_CONCURRENCY="1",
        ECR_OPERATOR_MIRROR_SOURCE_CONCURRENCY="2",
        ECR_OPERATOR_MIRROR_PASS_TIMEOUT="120",  # the share, not the deadline, is what is tested here
    )
    for index in range(3):
        ecr_repository(world, namespace, f"stuck-{index}")
    for index in range(3):
        apply(
            world,
            image_mirror(
                namespace, f"stuck-{index}", f"{scripted.host}/hostile/app{index}", tags={"include": ".*"}
            ),
        )
    eventually("a stuck pass to reach the silent upstream", lambda: scripted.requests or None, timeout=60)

    quiet = world.create_namespace()
    try:
        world.registry_client("anonymous").push_image(f"{quiet}/app", "v1")
        ecr_repository(world, quiet, "app")
        repository_ready(world, quiet, "app")
        with HealthWatch(running.health_url) as health:
            started = time.monotonic()
            apply(
                world,
                image_mirror(
                    quiet, "app", f"{world.registries['anonymous'].host}/{quiet}/app", tags={"list": ["v1"]}
                ),
            )
            synced(world, quiet, "app", timeout=30)
            took = time.monotonic() - started
        print(f"quiet namespace synced in {took:.1f}s; slowest /healthz {max(health.samples):.3f}s")
        assert took < GOOD_SYNC_LIMIT, f"the quiet namespace waited {took:.1f}s"
        assert max(health.samples) < HEALTHZ_LIMIT
        # The hostile namespace held one slot: only one of its passes ever reached the upstream.
        assert len({seen.path.split("/")[3] for seen in scripted.requests if seen.path.count("/") > 3}) <= 1
    finally:
        world.delete_namespace(quiet)


def test_f7_a_pass_against_a_silent_upstream_ends_at_its_deadline_and_says_so(
    world: World, operator: StartOperator, namespace: str, scripted: ScriptedServer
) -> None:
    scripted.routes["/"] = "hang"
    operator(**ALLOW_LOOPBACK, ECR_OPERATOR_MIRROR_PASS_TIMEOUT="3")
    ecr_repository(world, namespace, "slow")
    repository_ready(world, namespace, "slow")
    apply(world, image_mirror(namespace, "slow", f"{scripted.host}/hostile/app", tags={"list": ["v1", "v2"]}))

    mirror = failed_with(world, namespace, "slow", timeout=30)

    synced_condition = condition(mirror, "Synced")
    assert synced_condition["reason"] == "PassTimedOut", synced_condition
    assert "ECR_OPERATOR_MIRROR_PASS_TIMEOUT" in synced_condition["message"]
    assert "0 of 2 images done; not done: v2, v1" in synced_condition["message"]  # newest first
    eventually(
        "a PassTimedOut Warning Event",
        lambda: (
            [
                e
                for e in events(world, namespace, "slow")
                if e["reason"] == "PassTimedOut" and e["type"] == "Warning"
            ]
            or None
        ),
        timeout=30,
    )


def test_f7_a_pass_cut_short_by_its_deadline_records_the_tags_it_copied(
    world: World, operator: StartOperator, namespace: str, scripted: ScriptedServer
) -> None:
    source = world.registry_client("anonymous")
    repository = f"{namespace}/app"
    source.push_image(repository, "v1")
    copied = source.push_image(repository, "v2")
    scripted.upstream = world.registries["anonymous"].url
    scripted.upstream_context = ssl.create_default_context(cafile=str(world.ca_bundle))
    scripted.routes["/"] = "forward"
    scripted.routes[f"/v2/{repository}/manifests/v1"] = "hang"  # v2 (newest) is copied first, then v1 hangs
    operator(**ALLOW_LOOPBACK, ECR_OPERATOR_MIRROR_PASS_TIMEOUT="5")
    destination = ecr_repository(world, namespace, "app")
    repository_ready(world, namespace, "app")
    apply(world, image_mirror(namespace, "app", f"{scripted.host}/{repository}", tags={"list": ["v1", "v2"]}))

    mirror = failed_with(world, namespace, "app", timeout=40)

    message = condition(mirror, "Synced")["message"]
    assert condition(mirror, "Synced")["reason"] == "PassTimedOut"
    assert "1 of 2 images done; not done: v1." in message
    assert [(entry["tag"], entry["destinationDigest"]) for entry in mirror["status"]["tags"]] == [
        ("v2", copied)
    ]
    assert ecr_digest(world, destination, "v2") == copied
    assert ecr_digest(world, destination, "v1") is None
    reasons = {event["reason"] for event in events(world, namespace, "app")}
    assert {"ImageCopied", "PassTimedOut"} <= reasons


# --- F10: nonsense upstream answers are reported failures, never a dead loop ------------------------------


def test_f10_an_upstream_answering_nonsense_is_a_reported_failure_and_the_loop_lives_on(
    world: World, operator: StartOperator, namespace: str, scripted: ScriptedServer
) -> None:
    json_type = {"Content-Type": "application/json"}
    manifest_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    scripted.routes["/v2/"] = (200, json_type, b"{}")
    # 4,400 digits (int() refuses more than 4,300) and a name no client could pull, beside a version.
    tags = {"name": "odd/app", "tags": ["9" * 4400, "-bad", "1.0.0"]}
    scripted.routes["/v2/odd/app/tags/list"] = (200, json_type, json.dumps(tags).encode())
    scripted.routes["/v2/odd/app/manifests/"] = (
        200,
        {**manifest_type, "Docker-Content-Digest": "x:y"},
        b'{"schemaVersion": 2, "layers": "nonsense"}',
    )
    running = operator(**ALLOW_LOOPBACK)
    ecr_repository(world, namespace, "odd")
    repository_ready(world, namespace, "odd")
    apply(world, image_mirror(namespace, "odd", f"{scripted.host}/odd/app", tags={"include": ".*"}))

    mirror = failed_with(world, namespace, "odd", timeout=60)
    synced_condition = condition(mirror, "Synced")
    assert "1.0.0" in synced_condition["message"]
    assert "9999" not in synced_condition["message"]  # the bogus tags were never selected
    eventually(
        "a Warning Event about the failure",
        lambda: [e for e in events(world, namespace, "odd") if e["type"] == "Warning"] or None,
        timeout=30,
    )

    # The loop lives on: once the upstream makes sense, the next requested pass succeeds at once.
    scripted.routes["/v2/odd/app/tags/list"] = (
        200,
        json_type,
        json.dumps({"name": "odd/app", "tags": ["-bad"]}).encode(),
    )
    request_sync(world, namespace, "odd")
    recovered = synced(world, namespace, "odd", timeout=30)
    assert recovered["status"].get("tags", []) == []
    assert running.alive()
    assert "Daemon 'keep_mirrored' failed" not in running.log_text()
