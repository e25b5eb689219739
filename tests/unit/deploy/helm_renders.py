"""The Helm chart's renders for its tests: where the ci values are, and helm itself.

Helm comes from `make tools` (.tools/bin): in CI a missing helm fails a test that needs it,
elsewhere it skips loudly. conftest.py renders the chart once for the package's tests."""

from __future__ import annotations

import os

import pytest

from deploy.helm import chart
from deploy.helm.chart import CHART

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
FULL = CHART / "ci" / "full-values.yaml"
SPLIT = CHART / "ci" / "split-values.yaml"


def require_helm() -> None:
    """Fail (CI) or skip loudly (a user's machine) where the pinned helm is not installed."""
    if chart.HELM.exists():
        return
    message = f"helm is not installed: run `make tools` (it builds pinned helm into {chart.HELM})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(f"SKIPPED LOUDLY: {message}")
