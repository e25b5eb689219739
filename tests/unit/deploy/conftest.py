"""The Helm chart rendered once for the package's tests: for its default values and for each
ci/*-values.yaml (tests/unit/deploy/helm_renders.py)."""

from __future__ import annotations

import pytest

from deploy.helm.chart import Manifest, render
from tests.unit.deploy.helm_renders import CI_VALUES, FULL, SPLIT, require_helm


@pytest.fixture(scope="package")
def renders() -> dict[str, list[Manifest]]:
    """The chart rendered for its default values and for each ci/*-values.yaml."""
    require_helm()
    return {"default": render(), **{path.name: render([path]) for path in CI_VALUES}}


@pytest.fixture(scope="package")
def default(renders: dict[str, list[Manifest]]) -> list[Manifest]:
    return renders["default"]


@pytest.fixture(scope="package")
def full(renders: dict[str, list[Manifest]]) -> list[Manifest]:
    return renders[FULL.name]


@pytest.fixture(scope="package")
def split(renders: dict[str, list[Manifest]]) -> list[Manifest]:
    return renders[SPLIT.name]
