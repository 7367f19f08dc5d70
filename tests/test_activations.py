"""purenet.activations: forward against the plain formula, derivative against jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import activations as A

X = jnp.linspace(-6.0, 6.0, 101, dtype=jnp.float64)
X = X[jnp.abs(X) > 1e-3]  # ReLU and leaky ReLU have a kink at 0

CASES = {
    "identity": (A.identity, lambda x: x),
    "sigmoid": (A.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (A.tanh, np.tanh),
    "relu": (A.relu, lambda x: np.maximum(x, 0)),
    "leaky_relu": (A.leaky_relu_activation(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
}


@pytest.mark.parametrize("name", CASES)
def test_forward_matches_plain_formula(name):
    activation, formula = CASES[name]
    np.testing.assert_allclose(activation.f(X), formula(np.asarray(X)), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", CASES)
def test_derivative_matches_jax_grad(name):
    activation, _ = CASES[name]
    expected = jax.vmap(jax.grad(activation.f))(X)
    got = activation.df(X, activation.f(X))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", CASES)
def test_float32_stays_float32(name):
    activation, _ = CASES[name]
    x = X.astype(jnp.float32)
    assert activation.f(x).dtype == jnp.float32
    assert activation.df(x, activation.f(x)).dtype == jnp.float32


def test_sigmoid_is_stable_at_extremes():
    x = jnp.array([-1e4, -50.0, 0.0, 50.0, 1e4], jnp.float32)
    y = A.sigmoid.f(x)
    assert jnp.all(jnp.isfinite(y))
    # sigmoid(-50) = 1.9e-22 keeps full relative precision (no 1 - 1 cancellation);
    # XLA on CPU flushes float32 subnormals, so much smaller outputs round to 0.
    np.testing.assert_allclose(y, [0, np.exp(-50.0), 0.5, 1, 1], rtol=1e-6)
    # jax.grad through it (the referee in every test) must not see inf * 0.
    assert jnp.all(jnp.isfinite(jax.vmap(jax.grad(A.sigmoid.f))(x)))


def test_softmax_is_stable_and_normalised():
    z = jnp.array([[1e4, 0.0, -1e4], [3.0, 3.0, 3.0]], jnp.float32)
    p = A.softmax(z)
    assert jnp.all(jnp.isfinite(p))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(A.log_softmax(z)), p, rtol=1e-6)


def test_softmax_matches_definition():
    z = jax.random.normal(jax.random.key(1), (4, 5), jnp.float64)
    e = np.exp(np.asarray(z))
    np.testing.assert_allclose(A.softmax(z), e / e.sum(1, keepdims=True), rtol=1e-14)


def test_leaky_relu_rejects_bad_slope():
    with pytest.raises(ValueError, match="slope"):
        A.leaky_relu_activation(-0.1)
