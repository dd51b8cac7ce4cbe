"""ecr-operator: declarative Amazon ECR for Kubernetes."""

from importlib import metadata

try:
    __version__ = metadata.version("ecr-operator")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
