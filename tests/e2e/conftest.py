"""Every operator this layer starts runs as the Helm chart's ServiceAccount (tests/operator_fixture.py)."""

from __future__ import annotations

import pytest

from operator_fixture import ChartIdentity


@pytest.fixture(scope="session", autouse=True)
def _operators_run_as_chart(operators_run_as_chart: ChartIdentity) -> ChartIdentity:
    return operators_run_as_chart
