"""Locate the binaries the test world runs.

Kubernetes, etcd and helm are built from their Go modules by ``hack/build-tools.sh`` into a cache keyed by
version (``$ECR_OPERATOR_CACHE/bin/<name>-<version>/<name>``); the Debian tools come from ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BUILT_TOOL_VERSIONS: dict[str, str] = {
    "kube-apiserver": "v1.37.2",
    "kube-controller-manager": "v1.37.2",
    "kubectl": "v1.37.2",
    "etcd": "v3.6.16",
    "helm": "v3.21.4",
}

# Debian package that provides each system tool, for the error message.
SYSTEM_TOOL_PACKAGES: dict[str, str] = {
    "docker-registry": "docker-registry",
    "htpasswd": "apache2-utils",
    "skopeo": "skopeo",
}

# sandbox/ecr_sandbox/tools.py -> repository root (absent when installed as a package).
_REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = _REPO_ROOT / "hack" / "build-tools.sh"


class ToolMissingError(RuntimeError):
    """A binary the test world needs is not available and cannot be built here."""


def cache_dir() -> Path:
    return Path(os.environ.get("ECR_OPERATOR_CACHE", Path.home() / ".cache" / "ecr-operator"))


def cached_tool_path(name: str) -> Path:
    """Where ``hack/build-tools.sh`` puts ``name`` (whether or not it is there yet)."""
    version = BUILT_TOOL_VERSIONS[name]
    return cache_dir() / "bin" / f"{name}-{version}" / name


def tool_path(name: str) -> Path:
    """Return an executable for ``name``, building it first when it is one of ours and not cached.

    ``ECR_OPERATOR_TOOLS_DIR`` may point at a flat directory of prebuilt binaries, searched first.
    """
    override_dir = os.environ.get("ECR_OPERATOR_TOOLS_DIR")
    if override_dir and _is_executable(Path(override_dir) / name):
        return Path(override_dir) / name
    if name in SYSTEM_TOOL_PACKAGES:
        return _system_tool(name)
    if name not in BUILT_TOOL_VERSIONS:
        raise ToolMissingError(
            f"unknown tool {name!r}; known: {sorted(BUILT_TOOL_VERSIONS | SYSTEM_TOOL_PACKAGES)}"
        )
    cached = cached_tool_path(name)
    if _is_executable(cached):
        return cached
    _build(name, cached)
    return cached


def _system_tool(name: str) -> Path:
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(
            f"{name} not found on PATH; install the Debian package {SYSTEM_TOOL_PACKAGES[name]!r}"
        )
    return Path(found)


def _build(name: str, expected: Path) -> None:
    if not BUILD_SCRIPT.is_file():
        raise ToolMissingError(
            f"{name} {BUILT_TOOL_VERSIONS[name]} is not at {expected} and this installation has no "
            f"hack/build-tools.sh to build it; run the script from an ecr-operator checkout "
            f"(same ECR_OPERATOR_CACHE) or set ECR_OPERATOR_TOOLS_DIR"
        )
    print(f"sandbox: {name} missing from {expected.parent}; running {BUILD_SCRIPT} {name}", file=sys.stderr)
    result = subprocess.run(["bash", str(BUILD_SCRIPT), name], stdout=sys.stderr, check=False)
    if result.returncode != 0 or not _is_executable(expected):
        raise ToolMissingError(
            f"{BUILD_SCRIPT} {name} failed (exit {result.returncode}); see its output above"
        )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)
