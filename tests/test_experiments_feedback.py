"""Smoke tests of the feedback-rule experiments (Lillicrap et al.'s FA and
Noekland's DFA; Liao et al.'s sign symmetry and the biotorch-style table on
MNIST-1D): each runs in ``Mode.SMOKE`` through the runner and is redrawn from
its JSON without training (see ``test_experiments_a``); their judges are
checked on numbers made up to pass and to fail."""

import copy

import numpy as np
import pytest

from experiments import feedback_alignment, feedback_rules
from tests.test_experiments_a import _finite_numbers, check_smoke_and_replot


@pytest.mark.parametrize("name", ["feedback_alignment", "feedback_rules"])
def test_experiment_smoke_run_and_replot(name, tmp_path, monkeypatch):
    if name == "feedback_rules":
        pytest.importorskip("mnist1d")  # in the experiments extra, which CI installs
    record = check_smoke_and_replot(name, tmp_path, monkeypatch)
    _finite_numbers(record["numbers"])


def _stats(values):
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "std": float(values.std())}


def _fa_data(angles, fa_accuracy=0.95, dfa_error=0.0, rows=1257):
    arm = {"final_loss": _stats([0.1]), "loss_per_epoch": [[1.0, 0.1]]}
    return {
        "settings": {"seeds": 2, "deep_model": "m", "deep_epochs": 3, "deep_train_rows": rows},
        "numbers": {
            "backprop": {**arm, "test_accuracy": _stats([0.96, 0.96])},
            "feedback_alignment": {
                **arm,
                "test_accuracy": _stats([fa_accuracy, fa_accuracy]),
                "hidden_angle_per_epoch": [angles, angles],
            },
            "dfa_deep": {"train_error_per_epoch": [[0.9, 0.1, dfa_error]] * 2},
        },
    }


def test_feedback_alignment_judge():
    falling = [89.0, 60.0, 50.0, 45.0, 40.0]
    assert feedback_alignment.judge(_fa_data(falling)).supported
    assert not feedback_alignment.judge(_fa_data([89.0, 60.0, 40.0, 45.0, 50.0])).supported
    assert not feedback_alignment.judge(_fa_data([95.0, 96.0, 97.0, 98.0, 99.0])).supported
    assert not feedback_alignment.judge(_fa_data(falling, fa_accuracy=0.8)).supported
    assert not feedback_alignment.judge(_fa_data(falling, dfa_error=0.002)).supported
    assert feedback_alignment.judge(_fa_data(falling, dfa_error=0.002, rows=128)).supported


def _rules_data(acc, deep=None):
    table = {
        r: {"test_accuracy": [a, a], "loss_per_epoch": [[1.0, 0.5]] * 2} for r, a in acc.items()
    }
    deep_numbers = {
        arm: {"test_accuracy": [a, a], "loss_per_epoch": [[1.0, loss]] * 2}
        for arm, (a, loss) in (deep or {}).items()
    }
    return {"settings": {"seeds": 2}, "numbers": {"table": {"MLP": table}, "deep": deep_numbers}}


def test_feedback_rules_judge():
    good = {"backprop": 0.70, "FA": 0.60, "uSF": 0.69, "frSF": 0.68, "DFA": 0.62}
    assert feedback_rules.judge(_rules_data(good)).supported
    for rule, value in (("FA", 0.695), ("frSF", 0.60), ("DFA", 0.695), ("uSF", 0.61)):
        bad = copy.deepcopy(good)
        bad[rule] = value
        assert not feedback_rules.judge(_rules_data(bad)).supported, rule
    needs_bn = {
        "uSF": (0.10, -1.0),
        "uSF + batchnorm": (0.40, 1.2),
        "backprop + batchnorm": (0.7, 0.5),
    }
    verdict = feedback_rules.judge(_rules_data(good, needs_bn))
    assert verdict.supported and "uSF diverged" in verdict.text
    no_need = {**needs_bn, "uSF": (0.40, 1.2)}
    assert not feedback_rules.judge(_rules_data(good, no_need)).supported
    no_rescue = {**needs_bn, "uSF + batchnorm": (0.11, -1.0)}
    assert not feedback_rules.judge(_rules_data(good, no_rescue)).supported
