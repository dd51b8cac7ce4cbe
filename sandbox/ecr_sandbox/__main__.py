from ecr_sandbox.cli import main

raise SystemExit(main())
