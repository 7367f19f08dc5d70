"""Smoke tests of five experiments: gradient_check, zero_init_symmetry,
sigmoid_mse_vs_cross_entropy, linear_hidden_collapse, rumelhart_1986.

Each ``run`` is called with ``mode="smoke"`` (tiny sizes: few epochs or
sweeps, two seeds), which exercises the whole pipeline, figure included, in
seconds; the claims themselves are checked by ``python -m experiments``.
"""

import importlib
import json
import math

import matplotlib
import pytest

from experiments import _common

matplotlib.use("Agg")

NAMES = [
    "gradient_check",
    "zero_init_symmetry",
    "sigmoid_mse_vs_cross_entropy",
    "linear_hidden_collapse",
    "rumelhart_1986",
]


def _finite_numbers(value, path="numbers"):
    """Every number in a JSON tree is finite (``to_json`` writes non-finite
    floats as the strings "nan", "inf", "-inf", so those are refused too)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{path}[{i}]")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        assert math.isfinite(value), f"{path} = {value}"
    else:
        assert isinstance(value, str), f"{path}: unexpected {type(value).__name__}"
        assert value not in ("nan", "inf", "-inf"), f"{path} = {value}"


@pytest.mark.parametrize("name", NAMES)
def test_experiment_runs(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    assert module.NAME == name
    assert isinstance(module.CLAIM, str) and module.CLAIM
    config = _common.Config(mode="smoke", seeds=2, out=tmp_path)
    outcome = module.run(config)

    assert isinstance(outcome, _common.Outcome)
    assert isinstance(outcome.verdict, str) and outcome.verdict.strip()
    assert "\n" not in outcome.verdict
    assert isinstance(outcome.supported, bool)
    for field in ("numbers", "settings", "summary"):
        tree = _common.to_json(getattr(outcome, field))
        json.dumps(tree)  # serialisable
        if field != "settings":
            _finite_numbers(tree, field)
    assert outcome.summary
    assert outcome.figure is not None

    record = _common.save(name, module.CLAIM, outcome, config, seconds=0.0)
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert json.loads((tmp_path / f"{name}.json").read_text())["verdict"] == record["verdict"]
