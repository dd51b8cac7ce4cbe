"""``python -m ecr_operator`` is ``ecr-operator``."""

from ecr_operator.cli import main

raise SystemExit(main())
