"""crds/ is generated from the API models; a change to the models must come with regenerated CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr_operator.api.crd import render_crds, write_crds

pytestmark = pytest.mark.unit

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"
REGENERATE = "regenerate them with `ecr-operator crds` (or `make crds`) and commit the result"


def test_crds_directory_holds_exactly_the_generated_crds() -> None:
    rendered = render_crds()
    on_disk = sorted(path.name for path in CRDS_DIR.glob("*.yaml"))

    assert on_disk == sorted(rendered), (
        f"crds/ has {on_disk}, the models define {sorted(rendered)}; {REGENERATE}"
    )


@pytest.mark.parametrize("file_name", sorted(render_crds()))
def test_crd_file_matches_the_models(file_name: str) -> None:
    path = CRDS_DIR / file_name

    assert path.exists(), f"crds/{file_name} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == render_crds()[file_name], (
        f"crds/{file_name} is stale; {REGENERATE}"
    )


def test_rendering_is_deterministic() -> None:
    assert render_crds() == render_crds()


def test_write_crds_writes_every_rendered_file(tmp_path: Path) -> None:
    written = write_crds(tmp_path / "out")

    assert sorted(path.name for path in written) == sorted(render_crds())
    assert all(path.read_text(encoding="utf-8") == render_crds()[path.name] for path in written)
