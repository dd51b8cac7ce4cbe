"""``ecr-operator``: run the operator, write the CRDs, or copy an image once."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("ecr_operator")

EXIT_FAILURE = 1
EXIT_BAD_SETTINGS = 2


def build_parser() -> argparse.ArgumentParser:
    from ecr_operator import __version__

    parser = argparse.ArgumentParser(
        prog="ecr-operator",
        description="Amazon ECR for Kubernetes: repositories, IAM access, pull secrets, image mirrors.",
    )
    parser.add_argument("--version", action="version", version=f"ecr-operator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "run",
        help="run the operator against the cluster in KUBECONFIG (or the pod's own)",
        description="Run the operator. Settings come from ECR_OPERATOR_* environment variables; "
        "AWS credentials and endpoints from the standard AWS_* variables.",
    )
    crds = commands.add_parser("crds", help="write the CustomResourceDefinition YAML files")
    crds.add_argument(
        "--out", type=Path, default=Path("crds"), help="directory to write into (default: crds)"
    )
    # Only listed here for --help: its arguments belong to its own parser (see main).
    commands.add_parser(
        "mirror", help="copy an image, or matching tags, once (see: ecr-operator mirror --help)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["mirror"]:
        from ecr_operator.mirror_cli.main import main as mirror_main

        return mirror_main(arguments[1:])
    options = build_parser().parse_args(arguments)
    if options.command == "crds":
        from ecr_operator.api.crd import write_crds

        for path in write_crds(options.out):
            print(path)
        return 0
    return run()


def run() -> int:
    # Imported here, not at the top: pydantic costs `ecr-operator mirror` a tenth of a second to start.
    from ecr_operator.config import InvalidSettingsError, load_settings, unknown_variables
    from ecr_operator.logs import configure_logging

    try:
        settings = load_settings()
    except InvalidSettingsError as error:
        print(f"ecr-operator: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(settings.log_format, settings.log_level)
    unknown = unknown_variables()
    if unknown:
        logger.warning("ignoring environment variables that match no setting", extra={"variables": unknown})
    import ecr_operator.handlers  # noqa: F401 -- registers every handler in kopf's default registry
    from ecr_operator.runtime import StartupError, serve

    try:
        asyncio.run(serve(settings))
    except StartupError as error:
        logger.error("operator cannot start: %s", error)
        return EXIT_FAILURE
    except Exception:
        logger.exception("operator stopped on an error")
        return EXIT_FAILURE
    return 0
