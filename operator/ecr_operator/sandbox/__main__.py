from ecr_operator.sandbox.cli import main

raise SystemExit(main())
