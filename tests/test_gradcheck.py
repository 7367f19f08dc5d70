"""purenet.gradcheck: the referee itself must catch wrong gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import gradcheck as G
from purenet import layers as L
from purenet import losses


def test_rel_error_and_norm_ratio_known_values():
    assert G.rel_error(jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0])) == 0.0
    assert G.rel_error(jnp.array([1.0]), jnp.array([3.0])) == pytest.approx(0.5)
    assert G.rel_error(jnp.zeros(3), jnp.zeros(3)) == 0.0
    assert G.norm_ratio(jnp.array([3.0, 0.0]), jnp.array([1.0, 0.0])) == pytest.approx(0.5)
    assert G.norm_ratio({"a": jnp.zeros(2)}, {"a": jnp.zeros(2)}) == 0.0


def test_numerical_gradient_of_a_known_function():
    def f(p, c):
        return jnp.sum(c * p["x"] ** 3) + jnp.sin(p["y"])

    p = {"x": jnp.array([1.0, -2.0, 0.5]), "y": jnp.array(0.3)}
    g = G.numerical_gradient(f, p, 2.0, chunk_size=2)
    np.testing.assert_allclose(g["x"], 6.0 * p["x"] ** 2, rtol=1e-9)
    np.testing.assert_allclose(g["y"], np.cos(0.3), rtol=1e-9)


@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_chunk_size_does_not_change_the_result(chunk_size):
    def f(p):
        return jnp.sum(jnp.tanh(p) ** 2)

    p = jnp.linspace(-1, 1, 10)
    np.testing.assert_allclose(
        G.numerical_gradient(f, p, chunk_size=chunk_size),
        G.numerical_gradient(f, p, chunk_size=1),
        rtol=1e-12,
    )


def test_a_wrong_backward_is_caught():
    good = L.sigmoid()
    wrong = L.Layer(
        good.init, good.forward, lambda p, cache, dy: ((), dy * cache[1])
    )  # forgot (1 - y)
    model_wrong = L.serial(L.dense(3), wrong, L.dense(2))
    model_good = L.serial(L.dense(3), good, L.dense(2))
    _, params, _ = model_good.init(jax.random.key(0), (2,), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (4, 2), jnp.float64)
    t = jnp.array([0, 1, 1, 0])
    assert G.check_gradients(model_good, losses.softmax_cross_entropy, params, x, t).passed
    report = G.check_gradients(model_wrong, losses.softmax_cross_entropy, params, x, t)
    assert not report.passed
    assert "FAILED" in str(report)
    worst = max(report.leaves, key=lambda leaf: leaf.vs_autodiff)
    assert worst.path.startswith("[0]")  # the error shows in the layer below the bug


def test_report_is_readable():
    model = L.serial(L.dense(2), L.tanh(), L.dense(1))
    _, params, _ = model.init(jax.random.key(0), (2,), jnp.float64)
    x, t = jnp.ones((3, 2)), jnp.ones((3, 1))
    text = str(G.check_gradients(model, losses.mse, params, x, t))
    assert "PASSED" in text and "[0]['W']" in text and "vs jax.grad" in text


def test_directional_check_large_network():
    model = L.serial(L.dense(64), L.relu(), L.dense(10))
    _, params, _ = model.init(jax.random.key(0), (100,), jnp.float64)
    x = jax.random.normal(jax.random.key(1), (16, 100), jnp.float64)
    t = jax.random.randint(jax.random.key(2), (16,), 0, 10)
    import purenet

    J = purenet.objective(model, losses.softmax_cross_entropy)
    _, grads = purenet.backprop(model, losses.softmax_cross_entropy)(params, x, t)
    analytic, numeric = G.directional_check(
        J, grads, params, x, t, key=jax.random.key(3), num_directions=6
    )
    assert analytic.shape == (6,)
    assert G.rel_error(analytic, numeric) < 1e-7
    # a scaled gradient is caught
    analytic_bad, numeric_bad = G.directional_check(
        J, jax.tree.map(lambda g: 1.01 * g, grads), params, x, t, key=jax.random.key(3)
    )
    assert G.rel_error(analytic_bad, numeric_bad) > 1e-3


def test_float32_check_uses_float32_tolerances():
    model = L.serial(L.dense(4), L.sigmoid(), L.dense(3))
    _, params, _ = model.init(jax.random.key(0), (3,), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (5, 3), jnp.float32)
    report = G.check_gradients(
        model, losses.softmax_cross_entropy, params, x, jnp.array([0, 1, 2, 0, 1])
    )
    assert report.dtype == "float32"
    assert report.tolerance == G.TOLERANCES[jnp.dtype("float32")]
    assert report.passed, report


def test_default_eps():
    assert 5e-6 < G.default_eps(jnp.float64) < 7e-6
    assert 4e-3 < G.default_eps(jnp.float32) < 6e-3


def test_bad_arguments():
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer"):
        G.numerical_gradient(lambda p: jnp.sum(p), jnp.ones(3), chunk_size=0)
    with pytest.raises(ValueError, match="eps"):
        G.numerical_gradient(lambda p: jnp.sum(p), jnp.ones(3), eps=-1.0)
