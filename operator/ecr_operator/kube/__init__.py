"""The Kubernetes adapter: ``Kube`` (objects.py) over the process's one ApiClient (client.py)."""

from ecr_operator.kube.client import KubeApiError
from ecr_operator.kube.objects import Kube, ObjectReference, SecretView, status_field_manager

__all__ = ["Kube", "KubeApiError", "ObjectReference", "SecretView", "status_field_manager"]
