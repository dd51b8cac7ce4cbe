"""The peers we measure against: Debian's skopeo, and crane / regctl / regsync built from Go modules.

Go tools are installed with ``go install <module>@<version>`` from the Go module proxy into the project
cache (``$ECR_OPERATOR_CACHE/bin/<name>-<version>/<name>``), once; a peer that cannot be installed (no Go,
no proxy) is skipped with a note, and the comparisons it would have made are left out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ecr_sandbox.tools import cache_dir


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str
    version: str
    binary: str = ""
    """What ``go install`` names the executable (the package's last path element), if not ``name``."""

    @property
    def path(self) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version}" / (self.binary or self.name)


GO_TOOLS = (
    GoTool("crane", "github.com/google/go-containerregistry/cmd/crane", "v0.22.1"),
    GoTool("regctl", "github.com/regclient/regclient/cmd/regctl", "v0.11.7"),
    GoTool("regsync", "github.com/regclient/regclient/cmd/regsync", "v0.11.7"),
)
# The scale group's peers (issue 10): ACK's ECR controller for repositories, and a pull-secret renewer.
ACK_ECR_CONTROLLER = GoTool(
    "ack-ecr-controller",
    "github.com/aws-controllers-k8s/ecr-controller/cmd/controller",
    "v1.8.1",
    "controller",
)
ECR_LOGIN_RENEW = GoTool("k8s-ecr-login-renew", "github.com/nabsul/k8s-ecr-login-renew", "v1.7.2")


@dataclass(frozen=True)
class Peers:
    """Paths of the peers available in this run; None where one could not be had."""

    skopeo: Path | None
    crane: Path | None
    regctl: Path | None
    regsync: Path | None
    versions: dict[str, str]
    notes: tuple[str, ...]


def install_go_tool(tool: GoTool) -> Path:
    """The cached binary, ``go install``-ed first if absent; raises RuntimeError when that fails."""
    if tool.path.is_file() and os.access(tool.path, os.X_OK):
        return tool.path
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("no Go toolchain on PATH")
    print(f"bench: installing {tool.name} {tool.version} (go install {tool.package})", file=sys.stderr)
    tool.path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(tool.path.parent), "GOFLAGS": "-buildvcs=false"}
    result = subprocess.run(
        [go, "install", f"{tool.package}@{tool.version}"],
        env=env,
        cwd=tool.path.parent,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0 or not tool.path.is_file():
        raise RuntimeError(f"go install {tool.package}@{tool.version} failed: {result.stderr.strip()[-500:]}")
    return tool.path


def skopeo_version(path: Path) -> str:
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    return result.stdout.strip().removeprefix("skopeo version ")


def find_peers() -> Peers:
    notes: list[str] = []
    versions: dict[str, str] = {}
    found_skopeo = shutil.which("skopeo")
    skopeo = Path(found_skopeo) if found_skopeo else None
    if skopeo is None:
        notes.append("skopeo not installed (Debian package 'skopeo'): every skopeo comparison is left out")
    else:
        versions["skopeo"] = skopeo_version(skopeo)
    installed: dict[str, Path | None] = {}
    for tool in GO_TOOLS:
        try:
            installed[tool.name] = install_go_tool(tool)
            versions[tool.name] = tool.version
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            installed[tool.name] = None
            notes.append(f"{tool.name} unavailable: {error}")
    return Peers(
        skopeo=skopeo,
        crane=installed["crane"],
        regctl=installed["regctl"],
        regsync=installed["regsync"],
        versions=versions,
        notes=tuple(notes),
    )
