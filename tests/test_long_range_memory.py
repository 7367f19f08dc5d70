"""Smoke test of the long_range_memory experiment (runner, JSON, judge, figure,
replot without training), and the recall data it trains on."""

import numpy as np

from experiments import long_range_memory
from tests.test_experiments_a import check_smoke_and_replot


def test_long_range_memory_smoke_run_and_replot(tmp_path, monkeypatch):
    record = check_smoke_and_replot("long_range_memory", tmp_path, monkeypatch)
    numbers = record["numbers"]
    assert set(numbers) == {"recall", "gradient_flow", "exploding"}
    assert {"RNN", "LSTM (forget bias 1)"} <= set(numbers["gradient_flow"])
    assert "c" in numbers["gradient_flow"]["LSTM (forget bias 1)"]


def test_recall_data_marks_the_answer_lag_steps_back():
    x, t = long_range_memory.recall_data(np.random.default_rng(0), 50, 9, 3)
    assert x.shape == (50, 9, 5) and t.shape == (50,)
    assert (x[:, :, 4].sum(axis=1) == 1).all() and (x[:, 9 - 1 - 3, 4] == 1).all()
    assert (x[:, :, :4].sum(axis=2) == 1).all()
    assert (x[np.arange(50), 5, t] == 1).all()
