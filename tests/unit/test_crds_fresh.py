"""crds/ is generated from the API models; a change to the models must come with regenerated CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr_operator.api.crd import render_crds, write_crds

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "crds"
# Helm installs a chart's crds/ before its templates; the chart must ship exactly the generated CRDs.
CHART_CRDS_DIR = REPO / "charts" / "ecr-operator" / "crds"
REGENERATE = "regenerate them with `make crds` (writes crds/ and the chart's crds/) and commit the result"


@pytest.mark.parametrize("directory", [CRDS_DIR, CHART_CRDS_DIR], ids=["crds", "chart"])
def test_crds_directory_holds_exactly_the_generated_crds(directory: Path) -> None:
    rendered = render_crds()
    on_disk = sorted(path.name for path in directory.glob("*.yaml"))

    assert on_disk == sorted(rendered), (
        f"{directory.relative_to(REPO)} has {on_disk}, the models define {sorted(rendered)}; {REGENERATE}"
    )


@pytest.mark.parametrize("directory", [CRDS_DIR, CHART_CRDS_DIR], ids=["crds", "chart"])
@pytest.mark.parametrize("file_name", sorted(render_crds()))
def test_crd_file_matches_the_models(directory: Path, file_name: str) -> None:
    path = directory / file_name
    where = path.relative_to(REPO)

    assert path.exists(), f"{where} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == render_crds()[file_name], f"{where} is stale; {REGENERATE}"


def test_rendering_is_deterministic() -> None:
    assert render_crds() == render_crds()


def test_write_crds_writes_every_rendered_file(tmp_path: Path) -> None:
    written = write_crds(tmp_path / "out")

    assert sorted(path.name for path in written) == sorted(render_crds())
    assert all(path.read_text(encoding="utf-8") == render_crds()[path.name] for path in written)
