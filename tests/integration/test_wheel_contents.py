"""The built wheels: the product holds only ``ecr_operator``, the test world only ``ecr_sandbox``.

Built with the venv's pip from a copy of the tree, so a build never writes into the checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What a checkout may hold that no build reads: caches, virtualenvs, earlier build output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis", ".sandbox"
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tree") / "ecr-operator"
    shutil.copytree(ROOT, copy, ignore=NOT_SOURCE)
    return copy


def wheel_files(project: Path, out: Path) -> list[str]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            ".",
        ],
        cwd=project,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_product_wheel_holds_the_operator_package_only(tree: Path, tmp_path: Path) -> None:
    files = wheel_files(tree, tmp_path)
    packages = {name.split("/", 1)[0] for name in files}
    assert packages == {"ecr_operator", "ecr_operator-0.1.0.dist-info"}
    sources = {
        path.relative_to(tree / "operator").as_posix()
        for path in (tree / "operator/ecr_operator").rglob("*.py")
    }
    assert sources <= set(files), "every module of the package is in the wheel"
    assert "ecr_operator/py.typed" in files
    assert not [name for name in files if "sandbox" in name or "tests/" in name or "bench/" in name]


def test_the_sandbox_wheel_holds_the_test_world_only(tree: Path, tmp_path: Path) -> None:
    files = wheel_files(tree / "sandbox", tmp_path)
    packages = {name.split("/", 1)[0] for name in files}
    assert packages == {"ecr_sandbox", "ecr_sandbox-0.1.0.dist-info"}
    assert "ecr_sandbox/world.py" in files


def test_the_image_installs_the_product_from_its_own_sources_only() -> None:
    copied = [
        line.split()[1:-1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY") and "--from=" not in line
    ]
    assert copied == [["pyproject.toml", "README.md"], ["operator"]]
