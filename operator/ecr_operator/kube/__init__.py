"""The Kubernetes adapter: ``Kube`` (objects.py) over the process's one ApiClient (client.py), connected
with the credentials connection.py loads for it and for kopf."""

from ecr_operator.kube.client import KubeApiError
from ecr_operator.kube.connection import BearerToken, KubeConfigError, KubeConnection, load_connection
from ecr_operator.kube.objects import Kube, ObjectReference, SecretView, status_field_manager

__all__ = [
    "BearerToken",
    "Kube",
    "KubeApiError",
    "KubeConfigError",
    "KubeConnection",
    "ObjectReference",
    "SecretView",
    "load_connection",
    "status_field_manager",
]
