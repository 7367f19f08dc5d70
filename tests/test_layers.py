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
    _, params, state = layer.init(KEY, (4,), jnp.float64)
    report = check_layer(layer, params, X, dy_key=jax.random.key(6), state=state, **ctx)
    assert report.autodiff_rel_error < 1e-9, report
    assert report.numerical_norm_ratio < 1e-8, report


def test_dense_forward_and_shapes():
    out_shape, p, state = L.dense(3).init(KEY, (4,))
    assert out_shape == (3,) and state == ()
    assert p["W"].shape == (4, 3) and p["b"].shape == (3,) and p["W"].dtype == jnp.float32
    y, _ = L.dense(3).forward(p, X.astype(jnp.float32))
    np.testing.assert_allclose(
        y, np.asarray(X, np.float32) @ np.asarray(p["W"]) + np.asarray(p["b"]), rtol=1e-5
    )
    assert y.dtype == jnp.float32


def test_serial_params_are_a_tuple_one_entry_per_layer():
    model = L.serial(L.dense(5), L.relu(), L.dense(2))
    out_shape, params, _ = model.init(KEY, (4,))
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
    with pytest.raises(
        ValueError, match="key: expected a jax.random key for dropout in training mode"
    ):
        L.dropout(0.5).forward((), X, train=True)


def test_batchnorm_training_normalises_and_updates_running_statistics():
    layer = L.batchnorm(momentum=0.1)
    _, p, state = layer.init(KEY, (4,), jnp.float64)
    assert set(p) == {"gamma", "beta"} and set(state) == {"mean", "var"}
    x = 3.0 + 2.0 * X
    y, cache = layer.forward(p, x, state=state, train=True)
    np.testing.assert_allclose(jnp.mean(y, 0), 0, atol=1e-12)
    np.testing.assert_allclose(jnp.var(y, 0), 1, rtol=1e-4)
    new = layer.update_state(state, cache)
    np.testing.assert_allclose(new["mean"], 0.1 * jnp.mean(x, 0), rtol=1e-12)
    np.testing.assert_allclose(new["var"], 0.9 + 0.1 * jnp.var(x, 0, ddof=1), rtol=1e-12)
    # evaluation mode uses the running statistics and leaves them alone
    y_eval, cache_eval = layer.forward(p, x, state=new)
    np.testing.assert_allclose(y_eval, (x - new["mean"]) / jnp.sqrt(new["var"] + 1e-5), rtol=1e-12)
    assert layer.update_state(new, cache_eval) is new
    # the gradient has exactly the structure of params: no slot for the state
    grads, _ = layer.backward(p, cache, jnp.ones_like(y))
    assert set(grads) == {"gamma", "beta"}


def test_batchnorm_on_feature_maps_is_per_channel():
    """Ioffe & Szegedy (2015) sec. 3.2: for convolutional maps, one mean and
    variance per channel, over the batch and every location."""
    layer = L.batchnorm()
    x = 1.0 + 3.0 * jax.random.normal(KEY, (3, 4, 5, 2), jnp.float64)
    _, p, state = layer.init(KEY, (4, 5, 2), jnp.float64)
    assert p["gamma"].shape == (2,) and state["mean"].shape == (2,)
    y, cache = layer.forward(p, x, state=state, train=True)
    np.testing.assert_allclose(jnp.mean(y, (0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(jnp.var(y, (0, 1, 2)), 1, rtol=1e-4)
    n = 3 * 4 * 5
    unbiased = jnp.var(x, (0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(layer.update_state(state, cache)["var"], 0.9 + 0.1 * unbiased)
    for ctx in ({"state": state}, {"state": state, "train": True}):
        assert check_layer(layer, p, x, dy_key=KEY, **ctx).passed


def test_batchnorm_evaluation_needs_its_state():
    layer = L.batchnorm()
    _, p, _ = layer.init(KEY, (4,))
    with pytest.raises(ValueError, match="state: expected batchnorm's running statistics"):
        layer.forward(p, X.astype(jnp.float32))


def test_serial_update_state_is_identity_without_batchnorm():
    model = L.serial(L.dense(3), L.relu())
    _, p, state = model.init(KEY, (4,))
    assert state == ()  # a stateless model is used with state=() everywhere
    _, cache = model.forward(p, X.astype(jnp.float32), train=True)
    assert model.update_state(state, cache) == ()


# --------------------------------------------------------------- any-rank shapes


def test_dense_acts_on_the_last_axis_of_a_sequence():
    layer = L.dense(3)
    out_shape, p, _ = layer.init(KEY, (5, 4), jnp.float64)
    assert out_shape == (5, 3)
    x = jax.random.normal(KEY, (2, 5, 4), jnp.float64)
    y, _ = layer.forward(p, x)
    for step in range(5):  # the same W at every step
        np.testing.assert_allclose(y[:, step], x[:, step] @ p["W"] + p["b"], rtol=1e-12)
    assert check_layer(layer, p, x, dy_key=KEY).passed


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu", "leaky_relu", "dropout"])
def test_elementwise_layers_and_dropout_take_any_shape(name):
    layer = LAYERS[name]
    x = jax.random.normal(KEY, (2, 3, 4, 2), jnp.float64)
    out_shape, p, state = layer.init(KEY, (3, 4, 2), jnp.float64)
    assert out_shape == (3, 4, 2)
    assert check_layer(layer, p, x, dy_key=KEY, state=state, **TRAIN).passed


def test_flatten_is_row_major_and_its_backward_reshapes():
    layer = L.flatten()
    assert layer.init(KEY, (3, 4, 2))[0] == (24,)
    x = jnp.arange(2 * 3 * 4 * 2, dtype=jnp.float64).reshape(2, 3, 4, 2)
    y, cache = layer.forward((), x)
    np.testing.assert_array_equal(y, np.asarray(x).reshape(2, 24))
    assert layer.backward((), cache, y)[1].shape == x.shape
    assert check_layer(layer, (), x, dy_key=KEY).passed


# ------------------------------------------------------------------- combinators

X2 = jax.random.normal(jax.random.key(7), (7, 3), jnp.float64)
COMBINATORS = {
    "parallel": (L.parallel(L.dense(2), L.serial(L.dense(3), L.tanh())), ((4,), (3,)), (X, X2)),
    "fan_out": (L.fan_out(3), (4,), X),
    "fan_in_sum": (L.fan_in_sum(), ((4,), (4,)), (X, 2.0 * X)),
    "fan_in_concat": (L.fan_in_concat(), ((4,), (3,)), (X, X2)),
    "residual": (L.residual(L.serial(L.dense(4), L.tanh())), (4,), X),
    "residual_mlp": (
        L.serial(
            L.dense(5),
            L.residual(L.serial(L.dense(5), L.relu(), L.dense(5))),
            L.fan_out(2),
            # tanh between dense and batchnorm: a bias feeding batchnorm directly
            # has a gradient of exactly zero in training mode, and its rounding
            # noise (1e-15) over the report's floor (1e-6) is a "relative error"
            # of 1e-9, which moves with the compiler's optimisation level.
            L.parallel(L.sigmoid(), L.serial(L.dense(5), L.tanh(), L.batchnorm())),
            L.fan_in_sum(),
            L.dense(2),
        ),
        (4,),
        X,
    ),
}


@pytest.mark.parametrize("name", COMBINATORS)
@pytest.mark.parametrize("ctx", [{}, {"train": True}], ids=["eval", "train"])
def test_combinators_match_vjp_and_finite_differences(name, ctx):
    layer, in_shape, x = COMBINATORS[name]
    _, params, state = layer.init(KEY, in_shape, jnp.float64)
    report = check_layer(layer, params, x, dy_key=jax.random.key(8), state=state, **ctx)
    assert report.autodiff_rel_error < 1e-9, report
    assert report.numerical_norm_ratio < 1e-8, report


def test_combinators_under_jit_and_vmap():
    layer = L.serial(
        L.fan_out(2),
        L.parallel(L.dense(3), L.residual(L.dense(4))),
        L.fan_in_concat(),
        L.batchnorm(),
    )
    in_shape, x = (4,), X
    _, params, state = layer.init(KEY, in_shape, jnp.float64)
    y, cache = layer.forward(params, x, state=state, train=True)
    dy = jax.random.normal(jax.random.key(9), y.shape, y.dtype)
    grads, dx = layer.backward(params, cache, dy)

    def run(params, x):
        y, cache = layer.forward(params, x, state=state, train=True)
        return layer.backward(params, cache, dy)

    grads_jit, dx_jit = jax.jit(run)(params, x)
    np.testing.assert_allclose(dx_jit, dx, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(grads_jit), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    # vmap over a stack of parameter sets, each checked against its own run
    keys = jax.random.split(KEY, 3)
    stacked = jax.vmap(lambda k: layer.init(k, in_shape, jnp.float64)[1])(keys)
    _, dxs = jax.vmap(run, in_axes=(0, None))(stacked, x)
    for i in range(3):
        p_i = jax.tree.map(lambda a, i=i: a[i], stacked)
        np.testing.assert_allclose(dxs[i], run(p_i, x)[1], rtol=1e-10)


def test_combinator_shapes_and_structure():
    layer = L.serial(L.fan_out(2), L.parallel(L.dense(3), L.dense(5)), L.fan_in_concat())
    out_shape, params, state = layer.init(KEY, (4,))
    assert out_shape == (8,)
    assert params[0] == () and len(params[1]) == 2 and state == ()
    _, _, state = L.serial(L.dense(2), L.batchnorm()).init(KEY, (4,))
    assert state[0] == () and set(state[1]) == {"mean", "var"}
    assert L.fan_in_concat(axis=-2).init(KEY, ((2, 3), (4, 3)))[0] == (6, 3)
    assert L.fan_in_sum().init(KEY, ((2, 3), (2, 3)))[0] == (2, 3)
    y, _ = L.fan_out(2).forward((), X)
    assert isinstance(y, tuple) and len(y) == 2


def test_combinator_bad_input_is_named():
    with pytest.raises(ValueError, match="in_shape: expected input shapes that are all equal"):
        L.fan_in_sum().init(KEY, ((2,), (3,)))
    with pytest.raises(ValueError, match="in_shape: expected input shapes equal except along"):
        L.fan_in_concat().init(KEY, ((2, 3), (4, 5)))
    with pytest.raises(ValueError, match="axis: expected a non-zero int"):
        L.fan_in_concat(axis=0)
    with pytest.raises(ValueError, match="in_shape: expected 2 input shapes for parallel"):
        L.parallel(L.dense(2), L.dense(2)).init(KEY, ((3,),))
    with pytest.raises(ValueError, match="x: expected a tuple of 2 arrays for parallel"):
        layer = L.parallel(L.dense(2), L.dense(2))
        _, p, _ = layer.init(KEY, ((4,), (4,)))
        layer.forward(p, X)
    with pytest.raises(ValueError, match="layer: expected a layer that keeps the shape"):
        L.residual(L.dense(3)).init(KEY, (4,))
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        L.fan_out(0)


# ------------------------------------------------------------------ validation


def test_wrong_feature_count_is_named():
    model = L.serial(L.dense(3), L.relu())
    _, p, _ = model.init(KEY, (4,))
    with pytest.raises(
        ValueError, match=r"x: expected a batch of shape \(m, ..., 4\).*got shape \(7, 5\)"
    ):
        model.forward(p, jnp.ones((7, 5)))
    with pytest.raises(ValueError, match="x: expected a batch of shape"):
        jax.jit(model.forward)(p, jnp.ones((7, 5)))  # static check, also under jit


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_layer_sizes_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        L.dense(bad)


@pytest.mark.parametrize("bad", ["10", True, None])
def test_layer_sizes_of_the_wrong_kind_are_type_errors(bad):
    with pytest.raises(TypeError, match="n: expected a positive integer"):
        L.dense(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_dropout_rate_range(bad):
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0.0, 1.0\)"):
        L.dropout(bad)


def test_serial_rejects_non_layers_and_wrong_params():
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a purenet Layer"):
        L.serial(L.dense(2), jnp.tanh)
    with pytest.raises(ValueError, match="layers: expected at least one layer"):
        L.serial()
    model = L.serial(L.dense(2), L.relu())
    with pytest.raises(
        ValueError,
        match=r"params \(serial\): expected a tuple of length 2, got a tuple of length 1",
    ):
        model.forward(({"W": jnp.ones((4, 2)), "b": jnp.zeros(2)},), X)


def test_init_rejects_bad_in_shape():
    with pytest.raises(ValueError, match="in_shape"):
        L.dense(3).init(KEY, ())
    with pytest.raises(ValueError, match="in_shape"):
        L.dense(3).init(KEY, (0,))


@pytest.mark.parametrize("name", ["flatten", "fan_in_sum", "fan_in_concat"])
def test_caches_cross_a_jit_boundary(name):
    """A cache returned by a jitted forward feeds a jitted backward: shapes
    and counts must travel as structure, not as Python ints."""
    layer, in_shape, x = {
        "flatten": (L.flatten(), (4,), X),
        "fan_in_sum": COMBINATORS["fan_in_sum"],
        "fan_in_concat": COMBINATORS["fan_in_concat"],
    }[name]
    y, cache = jax.jit(layer.forward)((), x)
    _, dx = jax.jit(layer.backward)((), cache, y)
    _, dx_eager = layer.backward((), layer.forward((), x)[1], y)
    for a, b in zip(jax.tree.leaves(dx), jax.tree.leaves(dx_eager), strict=True):
        np.testing.assert_array_equal(a, b)
