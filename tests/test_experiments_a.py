"""Smoke tests of every registered experiment that has no test file of its own.

Each experiment runs through the runner in ``Mode.SMOKE`` (tiny sizes: few
epochs or sweeps, two seeds), which exercises the whole pipeline (measure,
JSON, judge, draw) in seconds; the claims themselves are checked by
``python -m experiments``. Then its figure and verdict are redrawn from the
JSON alone, with every way to train replaced by one that raises: replotting
trains nothing and gives the same verdict.

The experiments are those of the runner's registry (``EXPERIMENTS`` in
``experiments/__main__.py``), so adding an experiment needs no edit here: a
new one is smoke-tested in this file until a test file of its own claims it
in :data:`ELSEWHERE`.
"""

import json
import math
from pathlib import Path

import pytest

import purenet.train
from experiments import __main__ as runner
from experiments import _common

# Experiments smoke-tested (with checks of their own) in another test file.
ELSEWHERE = {
    "output_heads": "test_experiments_b",
    "batch_sizes": "test_experiments_b",
    "optimizers": "test_experiments_b",
    "vanishing_gradients": "test_experiments_b",
    "regularization": "test_experiments_b",
    "family_trees": "test_family_trees",
    "lenet_digits": "test_experiments_cnn",
    "mnist1d": "test_experiments_cnn",
    "feedback_alignment": "test_experiments_feedback",
    "feedback_rules": "test_experiments_feedback",
    "attention_vs_recurrence": "test_attention",
    "long_range_memory": "test_long_range_memory",
    "char_gpt": "test_char_gpt",
}
NAMES = [name for name in runner.EXPERIMENTS if name not in ELSEWHERE]


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


def check_smoke_and_replot(name, out, monkeypatch, *, finite=True):
    """Run ``name`` in smoke mode into ``out``, check its record, then replot
    it from the JSON with training forbidden. Returns the record."""
    module = runner.load(name)
    assert module.NAME == name
    assert isinstance(module.CLAIM, str) and module.CLAIM
    record = runner.run_one(name, _common.Mode.SMOKE, 2, out)

    stored = json.loads((out / f"{name}.json").read_text())
    assert stored == record
    assert stored["generator"] == _common.GENERATOR and stored["mode"] == "smoke"
    assert isinstance(stored["verdict"], str) and stored["verdict"].strip()
    assert "\n" not in stored["verdict"]
    assert isinstance(stored["supported"], bool)
    assert stored["settings"] and stored["numbers"] and stored["summary"]
    assert stored["settings"].get("seeds", 2) == 2
    if finite:
        _finite_numbers(stored["summary"], "summary")
    png = out / f"{name}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"

    def no_training(*args, **kwargs):
        raise AssertionError("--replot must not train")

    for attr in ("make_train", "make_epoch", "make_step", "fit", "lbfgs"):
        monkeypatch.setattr(purenet.train, attr, no_training)
    monkeypatch.setattr(module, "measure", no_training)
    png.unlink()
    replotted = runner.replot_one(name, out)
    assert replotted["verdict"] == record["verdict"]
    assert replotted["supported"] == record["supported"]
    assert replotted["numbers"] == record["numbers"]
    assert replotted["seconds"] == record["seconds"] and replotted["mode"] == "smoke"
    assert png.read_bytes()[:4] == b"\x89PNG"
    return record


@pytest.mark.parametrize("name", NAMES)
def test_experiment_smoke_run_and_replot(name, tmp_path, monkeypatch):
    record = check_smoke_and_replot(name, tmp_path, monkeypatch)
    _finite_numbers(record["numbers"])


def test_every_registered_experiment_is_smoke_tested_once():
    """Each registered experiment is smoke-tested here or in the file that
    :data:`ELSEWHERE` names (which must mention it), and nothing unregistered is."""
    assert set(ELSEWHERE) <= set(runner.EXPERIMENTS)
    here = Path(__file__).parent
    for name, test_file in ELSEWHERE.items():
        text = (here / f"{test_file}.py").read_text()
        assert f'"{name}"' in text and "check_smoke_and_replot" in text, (name, test_file)
