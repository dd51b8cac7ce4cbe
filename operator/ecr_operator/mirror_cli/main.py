"""The entry point of ``ecr-operator mirror``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ecr_operator.mirror_cli.arguments import EXIT_USAGE, UsageError, fail, parse_request


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        request = parse_request(arguments, stderr_is_terminal=sys.stderr.isatty())
    except SystemExit as exit_:  # argparse: --help (0) or a malformed command line (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except UsageError as error:
        return fail(EXIT_USAGE, str(error))
    # Imported for a valid command line only: --help and usage errors load 145 fewer modules (aiohttp).
    from ecr_operator.mirror_cli.running import run

    return run(request)
