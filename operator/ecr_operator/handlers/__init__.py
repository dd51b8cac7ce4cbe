"""kopf handlers. Importing this package registers every handler the operator runs, and nothing else does.

``cli run`` imports it before starting kopf; each module below registers its handlers on import, ``startup``
first, so kopf is configured by the first startup handler it runs; kopf's toggle sets are swapped for
counted ones (``toggles``) before kopf makes any.
"""

from ecr_operator.handlers import startup  # isort: skip
from ecr_operator.handlers import mirror, pullsecrets, repository
from ecr_operator.handlers.toggles import use_counted_toggle_sets

use_counted_toggle_sets()

__all__ = ["mirror", "pullsecrets", "repository", "startup"]
