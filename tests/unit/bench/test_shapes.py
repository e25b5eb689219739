"""`make bench-shapes`: the production shape's figures over the default's, against targets."""

from __future__ import annotations

import pytest

from bench.shapes import main, ratios

pytestmark = pytest.mark.unit


def test_each_ratio_is_production_over_default_and_judged_by_its_target() -> None:
    default = {"orders_per_s": 600.0, "light_p50_ms": 16.0, "p99_ms": 100.0}
    production = {"orders_per_s": 420.0, "light_p50_ms": 25.6, "p99_ms": None}
    found = {r["name"]: r for r in ratios(default, production)}
    assert (found["max_ratio"]["ratio"], found["max_ratio"]["met"]) == (0.7, False)
    assert found["max_ratio"]["target"] == ">= 0.75"
    assert (found["light_p50_ratio"]["ratio"], found["light_p50_ratio"]["met"]) == (1.6, False)
    assert (found["half_max_p99_ratio"]["ratio"], found["half_max_p99_ratio"]["met"]) == (
        None,
        None,
    )
    better = ratios(default, {"orders_per_s": 480.0, "light_p50_ms": 20.0, "p99_ms": 150.0})
    assert [r["met"] for r in better] == [True, True, True]


def test_the_shapes_choose_the_stack(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "light", "--replicas=3"])
    assert "--replicas=3: the shapes set the stack" in capsys.readouterr().err
