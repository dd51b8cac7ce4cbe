"""`make lint` fails on an import that breaks the layers: lint-imports run on a copy of the source.

Each case adds one forbidden import to a copy of operator/ and expects lint-imports to exit non-zero, naming
the contract (from pyproject.toml) and the import; the untouched copy keeps every contract.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def contract_name(contract_id: str) -> str:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = {contract["id"]: contract["name"] for contract in config["tool"]["importlinter"]["contracts"]}
    return str(names[contract_id])


def source_copy(root: Path) -> Path:
    shutil.copytree(REPO / "operator", root / "operator", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Only the copy on the path: the venv's editable install must not be what gets analysed.
    environment = {**os.environ, "PYTHONPATH": str(root / "operator")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(output: str) -> str:
    """lint-imports wraps long contract names at the terminal width; compare with spaces collapsed."""
    return re.sub(r"\s+", " ", output)


def test_the_untouched_source_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(source_copy(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "violation", "contract_id", "named_import"),
    [
        (
            "reconcile/backoff.py",
            "import boto3",
            "pure-core-libraries",
            "ecr_operator.reconcile.backoff -> boto3",
        ),
        (
            "reconcile/backoff.py",
            "import ecr_operator.registry.client",
            "pure-core-modules",
            "ecr_operator.reconcile.backoff -> ecr_operator.registry.client",
        ),
        (
            "aws/ecr.py",
            "import ecr_operator.handlers.repository",
            "layers",
            "ecr_operator.aws.ecr -> ecr_operator.handlers.repository",
        ),
    ],
    ids=["reconcile-imports-boto3", "reconcile-imports-registry-client", "adapter-imports-handler"],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, violation: str, contract_id: str, named_import: str
) -> None:
    root = source_copy(tmp_path)
    with (root / "operator" / "ecr_operator" / module).open("a") as source:
        source.write(f"\n{violation}\n")

    result = lint_imports(root)

    assert result.returncode != 0, result.stdout
    assert f"{contract_name(contract_id)} BROKEN" in one_line(result.stdout), result.stdout
    assert named_import in result.stdout
