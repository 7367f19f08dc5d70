"""Smoke tests of five experiments (output heads, batch sizes, optimizers,
vanishing gradients, regularisation): each runs in ``Mode.SMOKE`` through the
runner and is redrawn from its JSON without training (see
``test_experiments_a``); plus the hand-written gradients of the optimizer
experiment's 2-D surfaces, refereed by ``jax.grad``, and the regularization
experiment's single vmap over penalty strengths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import optimizers, regularization
from tests.test_experiments_a import check_smoke_and_replot

NAMES = ["output_heads", "batch_sizes", "optimizers", "vanishing_gradients"]


@pytest.mark.parametrize("name", NAMES)
def test_experiment_smoke_run_and_replot(name, tmp_path, monkeypatch):
    # Non-finite numbers are data here (the exploding runs): only the summary
    # must be finite.
    check_smoke_and_replot(name, tmp_path, monkeypatch, finite=False)


def test_regularization_smoke_sweeps_penalties_in_one_program(tmp_path, monkeypatch):
    """The smoke run, replotted; and every penalized configuration (no
    penalty, L2, clean labels) trained in ONE compiled program: the
    strengths are traced values of one ``purenet.penalty``."""
    compiled = []
    real_jit = regularization.jit
    monkeypatch.setattr(regularization, "jit", lambda fn: compiled.append(fn) or real_jit(fn))
    record = check_smoke_and_replot("regularization", tmp_path, monkeypatch, finite=False)
    # penalized configurations, dropout, batch norm without and with
    assert len(compiled) == 4
    final = record["numbers"]["final"]
    assert {"none", "L2 1e-2", "dropout 0.5", "none (clean labels)"} <= set(final)
    # Same seeds, splits and inits: the penalty alone makes these two differ.
    assert final["none"]["test_loss"] != final["L2 1e-2"]["test_loss"]


@pytest.mark.parametrize("name", list(optimizers.SURFACES))
def test_surface_gradients_match_autodiff(name):
    f, grad, *_ = optimizers.SURFACES[name]
    points = jax.random.uniform(jax.random.key(0), (20, 2), jnp.float64, -2.0, 2.0)
    for p in points:
        np.testing.assert_allclose(grad(p), jax.grad(f)(p), rtol=1e-10, atol=1e-10)


def test_local_minimum_surface_has_a_shallow_local_minimum():
    f, grad, start, *_ = optimizers.SURFACES["local_minimum"]
    # The x-derivative changes sign from - to + around x = -0.795 on y = 0.
    assert grad(jnp.array([-0.85, 0.0], jnp.float64))[0] < 0 < grad(jnp.array([-0.75, 0.0]))[0]
    local = jnp.array([-0.795, 0.0], jnp.float64)
    barrier = jnp.array([-0.04, 0.0], jnp.float64)
    assert f(local) < f(barrier) < f(jnp.asarray(start, jnp.float64))
    assert f(jnp.array([3.0, 0.0], jnp.float64)) < f(local) - 0.5  # the deeper, global one
