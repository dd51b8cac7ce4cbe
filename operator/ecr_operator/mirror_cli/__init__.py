"""``ecr-operator mirror SRC DST``: copy an image, or the matching tags of a repository, once.

The same engine as the ImageMirror controller (``registry.copy_image``), for someone without a cluster.
Credentials come from the docker/containers auth files skopeo and docker read, and, for an ECR host
without an entry there, from an ECR authorization token (GetAuthorizationToken with the standard AWS
credential chain). Registry host overrides and the CA bundle are the operator's own settings
(``ECR_OPERATOR_REGISTRY_HOST_OVERRIDES``, ``ECR_OPERATOR_CA_BUNDLE``).

``main`` (the entry point) parses the command line (``arguments``); ``running`` then finds credentials
and settings (``credentials``), runs the copies (``copying``) and prints them (``output``, ``progress``).
"""
