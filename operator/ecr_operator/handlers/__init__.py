"""kopf handlers. Importing this package registers every handler the operator runs, and nothing else does.

``cli run`` imports it before starting kopf; each module below registers its handlers on import.
"""

from ecr_operator.handlers import mirror, pullsecrets, repository, startup

__all__ = ["mirror", "pullsecrets", "repository", "startup"]
