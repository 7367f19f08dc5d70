"""Smoke tests of the convolutional experiments (LeNet on the 8x8 digits,
the MNIST-1D table): each runs in ``Mode.SMOKE`` through the runner and is
redrawn from its JSON without training (see ``test_experiments_a``)."""

import pytest

from tests.test_experiments_a import check_smoke_and_replot


@pytest.mark.parametrize("name", ["lenet_digits", "mnist1d"])
def test_experiment_smoke_run_and_replot(name, tmp_path, monkeypatch):
    if name == "mnist1d":
        pytest.importorskip("mnist1d")  # in the experiments extra, which CI installs
    check_smoke_and_replot(name, tmp_path, monkeypatch)
