"""Property-based robustness: random shapes, dtypes and values thrown at the
public functions. Each call either raises ``ValueError`` whose message starts
with the name of the offending argument, or returns a finite, correct result."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from purenet import data, losses, optim
from purenet import layers as L

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64, jnp.int32]
NAMED = re.compile(r"^[A-Za-z_][\w\[\]\.]*: expected ")


def assert_names_an_argument(error: ValueError, allowed):
    message = str(error)
    assert NAMED.match(message), message
    assert message.split(":")[0] in allowed, message


def floats_array(draw, shape, dtype, scale):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.normal(size=shape) * scale
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.asarray(np.clip(values, -100, 100).round(), dtype)
    return jnp.asarray(values, dtype)


@st.composite
def loss_inputs(draw):
    loss_name = draw(st.sampled_from(sorted(losses.LOSSES)))
    m, k = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    y_shape = draw(st.sampled_from([(m, k), (m,), (m, 1), (m, k, 1)]))
    t_shape = draw(st.sampled_from([y_shape, (m,), (m, 1), (m, k + 1), (m + 1, k)]))
    y_dtype, t_dtype = draw(st.sampled_from(DTYPES)), draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1.0, 100.0, 1e4]))
    y = floats_array(draw, y_shape, y_dtype, scale)
    if loss_name == "softmax_cross_entropy" and draw(st.booleans()):
        t = jnp.asarray(
            draw(st.lists(st.integers(-2, k + 1), min_size=t_shape[0], max_size=t_shape[0])),
            jnp.int32,
        )
    else:
        t = jnp.abs(floats_array(draw, t_shape, t_dtype, 1.0)) > 0.5
        t = t.astype(t_dtype)
    return loss_name, y, t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loss_inputs())
def test_losses_raise_a_named_error_or_return_finite_correct_values(case):
    name, y, t = case
    loss = losses.LOSSES[name]
    try:
        J, dy = loss.value_and_grad(y, t)
    except ValueError as error:
        assert_names_an_argument(error, {"y", "t"})
        return
    assert y.dtype in (jnp.float32, jnp.float64) and y.ndim >= 2
    assert y.ndim == 2 or name in ("mse", "multilabel_sigmoid_cross_entropy")  # any rank
    assert J.dtype == y.dtype and dy.dtype == y.dtype and dy.shape == y.shape
    assert jnp.isfinite(J) and jnp.all(jnp.isfinite(dy))
    # correct: the hand-written gradient is the gradient of the value
    y64 = y.astype(jnp.float64)
    t64 = t if jnp.issubdtype(t.dtype, jnp.integer) and t.ndim == 1 else t.astype(jnp.float64)
    expected = jax.grad(loss.value)(y64, t64)
    np.testing.assert_allclose(dy, expected, rtol=1e-4, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from([(3,), (2, 3), (2, 4), (2, 3, 1), (0, 3)]),
    st.sampled_from(DTYPES),
)
def test_dense_forward_raises_a_named_error_or_computes_x_W_plus_b(n_in, n, x_shape, dtype):
    layer = L.dense(n)
    _, params, _ = layer.init(jax.random.key(0), (n_in,))
    x = jnp.ones(x_shape, dtype)
    try:
        y, _ = layer.forward(params, x)
    except ValueError as error:
        assert_names_an_argument(error, {"x"})
        assert not (len(x_shape) >= 2 and x_shape[-1] == n_in)
        return
    assert len(x_shape) >= 2 and x_shape[-1] == n_in  # dense acts on the last axis
    assert y.shape == (*x_shape[:-1], n)
    np.testing.assert_allclose(y, x.astype(jnp.float32) @ params["W"] + params["b"], rtol=1e-2)


HYPER = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(-3, 3),
    st.just(None),
    st.just("0.1"),
)


# An absurd hyperparameter (above float32's 3.4e38) overflows when cast to
# the params' float32: numpy warns, and this test expects it (see `sane`).
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]),
    st.lists(HYPER, min_size=1, max_size=4),
)
# Found by hypothesis: an eps that rounds to 0 in float32 made 0 / (sqrt(0) + eps) NaN.
@example("rmsprop", [0.0, 0.0, 2.4519002619065338e-49])
@example("adam", [0.1, 0.9, 0.999, 1e-49])
def test_optimizers_refuse_nonsense_hyperparameters_by_name_or_take_finite_steps(name, hyper):
    hyper = [h for h in hyper if h is not None]
    try:
        opt = getattr(optim, name)(*hyper)
    except ValueError as error:
        assert_names_an_argument(
            error, {"learning_rate", "mass", "eps", "decay", "b1", "b2", "weight_decay"}
        )
        return
    except TypeError:
        return  # too many positional arguments: Python's own message
    params = {"W": jnp.ones((2, 3), jnp.float32), "b": jnp.zeros(3, jnp.float32)}
    state = opt.init(params)
    # A legal but absurd learning rate (1e38) overflows float32 by itself;
    # finiteness is promised for hyperparameters of sane size.
    sane = all(abs(h) <= 1e6 for h in hyper if isinstance(h, float | int))
    for grads in (jax.tree.map(jnp.ones_like, params), jax.tree.map(jnp.zeros_like, params)):
        new, state = opt.step(params, grads, state)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new))
        if sane:
            assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(new))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-3, 12), min_size=0, max_size=8), st.integers(-1, 10))
def test_one_hot_raises_a_named_error_or_is_exact(labels, num_classes):
    try:
        encoded = data.one_hot(jnp.asarray(labels, jnp.int32), num_classes)
    except ValueError as error:
        assert_names_an_argument(error, {"labels", "num_classes"})
        assert (
            num_classes < 1 or any(not 0 <= label < num_classes for label in labels) or not labels
        )
        return
    assert encoded.shape == (len(labels), num_classes)
    np.testing.assert_array_equal(np.argmax(encoded, 1), labels)
    np.testing.assert_array_equal(encoded.sum(1), 1.0)


@pytest.mark.parametrize("value", [1e4, -1e4, 3e38, -3e38])
def test_extreme_float32_logits_give_finite_losses_and_gradients(value):
    y = jnp.array([[value, 0.0, -value], [value, value, value]], jnp.float32)
    for loss, t in [
        (losses.softmax_cross_entropy, jnp.array([2, 0])),
        (
            losses.multilabel_sigmoid_cross_entropy,
            jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], jnp.float32),
        ),
    ]:
        J, dy = loss.value_and_grad(y, t)
        assert jnp.all(jnp.isfinite(dy)), (loss, value)
        if abs(value) <= 1e4:
            assert jnp.isfinite(J)
