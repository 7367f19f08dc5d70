"""Smoke test of the char_gpt experiment (runner, JSON, judge, figure, replot
without training), its corpus and its baselines."""

import math

import numpy as np

from experiments import char_gpt
from tests.test_experiments_a import check_smoke_and_replot


def test_char_gpt_smoke_run_and_replot(tmp_path, monkeypatch):
    record = check_smoke_and_replot("char_gpt", tmp_path, monkeypatch)
    numbers = record["numbers"]
    assert set(numbers["samples"]) == {"0.5", "0.8", "1.0"}
    assert all(text.startswith("def ") for text in numbers["samples"].values())
    assert len(numbers["twin_step_loss"]) == record["settings"]["twin_steps"]


def test_corpus_and_baselines():
    ids, info = char_gpt.corpus()
    assert ids.min() >= 0 and ids.max() < len(char_gpt.VOCAB) == 96
    assert info["characters"] == ids.size == sum(info["characters_per_file"]) > 100_000
    cut = int(0.9 * ids.size)
    base = char_gpt.baselines(ids[:cut], ids[cut:])
    # A bigram model knows more than a unigram one, which beats the uniform law.
    assert base["bigram"] < base["unigram"] < math.log(96)
    x, t = char_gpt.windows(ids, np.array([0, 5]), 4)
    assert (np.asarray(x[1]) == ids[5:9]).all() and (np.asarray(t[1, :3]) == ids[6:9]).all()
    assert int(t[0, 3]) == -1
