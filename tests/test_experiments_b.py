"""Smoke tests of five experiments (output heads, batch sizes, optimizers,
vanishing gradients, regularisation): each ``run`` completes on tiny settings
(``mode="smoke"``) and returns a well-formed, JSON-serialisable ``Outcome``;
plus the hand-written gradients of the optimizer experiment's 2-D surfaces,
refereed by ``jax.grad``."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import (
    _common,
    batch_sizes,
    optimizers,
    output_heads,
    regularization,
    vanishing_gradients,
)

MODULES = [output_heads, batch_sizes, optimizers, vanishing_gradients, regularization]


def _numbers_in(tree):
    """Every number in a ``to_json`` tree (non-finite floats become strings there)."""
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _numbers_in(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers_in(v)
    elif isinstance(tree, int | float) and not isinstance(tree, bool):
        yield tree


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_run_smoke(module, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    config = _common.Config(mode="smoke", seeds=2, out=tmp_path)
    outcome = module.run(config)

    assert isinstance(module.NAME, str) and module.NAME == module.__name__.rsplit(".", 1)[1]
    assert isinstance(module.CLAIM, str) and module.CLAIM
    assert isinstance(outcome, _common.Outcome)
    assert isinstance(outcome.verdict, str) and outcome.verdict.strip()
    assert "\n" not in outcome.verdict
    assert isinstance(outcome.supported, bool)
    assert isinstance(outcome.figure, Figure)
    for part in (outcome.numbers, outcome.settings, outcome.summary):
        assert isinstance(part, dict) and part
        tree = _common.to_json(part)
        json.dumps(tree, allow_nan=False)  # serialisable, no bare NaN / inf
        assert all(math.isfinite(v) for v in _numbers_in(tree))
    for key, value in outcome.summary.items():
        if isinstance(value, float):
            assert math.isfinite(value), key
    assert outcome.settings.get("seeds") == 2
    assert outcome.figure.axes  # drawn (saving it is the runner's job, tested with _common)


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
