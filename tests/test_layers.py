"""purenet.layers: each layer's forward against the plain formula and its
backward against jax.vjp and finite differences (float64), with a random
upstream gradient (cs231n's layer-level check)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import layers as L
from purenet.gradcheck import check_layer

KEY = jax.random.key(3)
X = jax.random.normal(jax.random.key(4), (7, 4), jnp.float64)

LAYERS = {
    "dense": L.dense(3),
    "identity": L.identity(),
    "sigmoid": L.sigmoid(),
    "tanh": L.tanh(),
    "relu": L.relu(),
    "leaky_relu": L.leaky_relu(0.2),
    "batchnorm": L.batchnorm(),
    "dropout": L.dropout(0.4),
    "serial": L.serial(L.dense(5), L.tanh(), L.dense(2), L.sigmoid()),
}
# Training-mode context: dropout with a fixed key is a fixed mask, hence checkable.
TRAIN = {"train": True, "key": jax.random.key(5)}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("ctx", [{}, TRAIN], ids=["eval", "train"])
def test_backward_matches_vjp_and_finite_differences(name, ctx):
    layer = LAYERS[name]
    _, params = layer.init(KEY, (4,), jnp.float64)
    report = check_layer(layer, params, X, dy_key=jax.random.key(6), **ctx)
    assert report.autodiff_rel_error < 1e-9, report
    if name == "batchnorm" and not ctx:
        # In evaluation the output depends on the running statistics, which are
        # not trained (zero gradient by contract); finite differences see that
        # dependence, so they referee only the trained leaves and dx.
        trained = [
            leaf for leaf in report.leaves if "mean" not in leaf.path and "var" not in leaf.path
        ]
        assert max(leaf.vs_numerical for leaf in trained) < 1e-7, report
    else:
        assert report.numerical_norm_ratio < 1e-8, report


def test_dense_forward_and_shapes():
    out_shape, p = L.dense(3).init(KEY, (4,))
    assert out_shape == (3,)
    assert p["W"].shape == (4, 3) and p["b"].shape == (3,) and p["W"].dtype == jnp.float32
    y, _ = L.dense(3).forward(p, X.astype(jnp.float32))
    np.testing.assert_allclose(
        y, np.asarray(X, np.float32) @ np.asarray(p["W"]) + np.asarray(p["b"]), rtol=1e-5
    )
    assert y.dtype == jnp.float32


def test_serial_params_are_a_tuple_one_entry_per_layer():
    model = L.serial(L.dense(5), L.relu(), L.dense(2))
    out_shape, params = model.init(KEY, (4,))
    assert out_shape == (2,)
    assert isinstance(params, tuple) and len(params) == 3 and params[1] == ()


def test_activation_layers_compute_their_function():
    for layer, f in [(L.sigmoid(), jax.nn.sigmoid), (L.tanh(), jnp.tanh), (L.relu(), jax.nn.relu)]:
        np.testing.assert_allclose(layer.forward((), X)[0], f(X), rtol=1e-12)


def test_dropout_is_identity_in_evaluation_and_inverted_in_training():
    layer = L.dropout(0.5)
    x = jnp.ones((200, 50))
    np.testing.assert_array_equal(layer.forward((), x)[0], x)
    y, _ = layer.forward((), x, train=True, key=KEY)
    kept = y != 0
    assert abs(float(kept.mean()) - 0.5) < 0.02  # rate is the DROP probability
    np.testing.assert_array_equal(y[kept], 2.0)  # survivors scaled by 1 / (1 - rate)
    y2, _ = layer.forward((), x, train=True, key=KEY)
    np.testing.assert_array_equal(y, y2)  # same key, same mask


def test_dropout_needs_a_key_in_training():
    with pytest.raises(ValueError, match="key: dropout in training mode needs a jax.random key"):
        L.dropout(0.5).forward((), X, train=True)


def test_batchnorm_training_normalises_and_updates_running_statistics():
    layer = L.batchnorm(momentum=0.1)
    _, p = layer.init(KEY, (4,), jnp.float64)
    x = 3.0 + 2.0 * X
    y, cache = layer.forward(p, x, train=True)
    np.testing.assert_allclose(jnp.mean(y, 0), 0, atol=1e-12)
    np.testing.assert_allclose(jnp.var(y, 0), 1, rtol=1e-4)
    new = layer.update_state(p, cache)
    np.testing.assert_allclose(new["mean"], 0.1 * jnp.mean(x, 0), rtol=1e-12)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * jnp.var(x, 0, ddof=1), rtol=1e-12)
    # evaluation mode uses the running statistics and leaves them alone
    y_eval, cache_eval = layer.forward(new, x)
    np.testing.assert_allclose(y_eval, (x - new["mean"]) / jnp.sqrt(new["var"] + 1e-5), rtol=1e-12)
    assert layer.update_state(new, cache_eval) is new
    # the state gets a zero gradient
    grads, _ = layer.backward(p, cache, jnp.ones_like(y))
    assert not jnp.any(grads["mean"]) and not jnp.any(grads["var"])


def test_serial_update_state_is_identity_without_batchnorm():
    model = L.serial(L.dense(3), L.relu())
    _, p = model.init(KEY, (4,))
    _, cache = model.forward(p, X.astype(jnp.float32), train=True)
    assert model.update_state(p, cache) is not None
    for a, b in zip(jax.tree.leaves(model.update_state(p, cache)), jax.tree.leaves(p), strict=True):
        assert a is b


# ------------------------------------------------------------------ validation


def test_wrong_feature_count_is_named():
    model = L.serial(L.dense(3), L.relu())
    _, p = model.init(KEY, (4,))
    with pytest.raises(
        ValueError, match=r"x: expected a batch of shape \(m, 4\).*got shape \(7, 5\)"
    ):
        model.forward(p, jnp.ones((7, 5)))
    with pytest.raises(ValueError, match="x: expected a batch of shape"):
        jax.jit(model.forward)(p, jnp.ones((7, 5)))  # static check, also under jit


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_layer_sizes_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        L.dense(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_dropout_rate_range(bad):
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0.0, 1.0\)"):
        L.dropout(bad)


def test_serial_rejects_non_layers_and_wrong_params():
    with pytest.raises(ValueError, match=r"layers\[1\]: expected a purenet Layer"):
        L.serial(L.dense(2), jnp.tanh)
    with pytest.raises(ValueError, match="layers: expected at least one layer"):
        L.serial()
    model = L.serial(L.dense(2), L.relu())
    with pytest.raises(
        ValueError, match=r"params: expected a tuple with one entry per layer \(2\)"
    ):
        model.forward(({"W": jnp.ones((4, 2)), "b": jnp.zeros(2)},), X)


def test_init_rejects_bad_in_shape():
    with pytest.raises(ValueError, match="in_shape"):
        L.dense(3).init(KEY, (4, 4))
    with pytest.raises(ValueError, match="in_shape"):
        L.dense(3).init(KEY, (0,))
