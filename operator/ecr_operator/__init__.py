"""ecr-operator: declarative Amazon ECR for Kubernetes."""

from __future__ import annotations

# Looked up on first use: importlib.metadata adds 40 ms to the start of every command, and
# `ecr-operator mirror` is measured against peers that start in 20 ms (see docs/benchmarks.md).
__version__: str


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("ecr-operator")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        version = "0+unknown"
    globals()["__version__"] = version
    return version
