"""purenet.losses: values against plain formulas and known answers, gradients
against jax.grad and finite differences, numerical safety, input validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import losses
from purenet.gradcheck import numerical_gradient, rel_error

k1, k2 = jax.random.split(jax.random.key(2))
Y = jax.random.normal(k1, (6, 3), jnp.float64) * 2
T_REAL = jax.random.uniform(k2, (6, 3), jnp.float64)
LABELS = jnp.array([0, 2, 1, 1, 0, 2])
ONE_HOT = jax.nn.one_hot(LABELS, 3, dtype=jnp.float64)


# (loss, y, t, plain NumPy formula of the value)
def _np_sig(y):
    return 1 / (1 + np.exp(-y))


CASES = {
    "mse": (losses.mse, Y, T_REAL, lambda y, t: 0.5 * np.sum((y - t) ** 2) / len(y)),
    "bce": (
        losses.sigmoid_binary_cross_entropy,
        Y[:, :1],
        (T_REAL[:, :1] > 0.5).astype(jnp.float64),
        lambda y, t: -np.sum(t * np.log(_np_sig(y)) + (1 - t) * np.log(1 - _np_sig(y))) / len(y),
    ),
    "multilabel": (
        losses.multilabel_sigmoid_cross_entropy,
        Y,
        (T_REAL > 0.5).astype(jnp.float64),
        lambda y, t: -np.sum(t * np.log(_np_sig(y)) + (1 - t) * np.log(1 - _np_sig(y))) / len(y),
    ),
    "softmax_labels": (
        losses.softmax_cross_entropy,
        Y,
        LABELS,
        lambda y, t: (
            -np.mean(np.log(np.exp(y) / np.exp(y).sum(1, keepdims=True))[np.arange(len(y)), t])
        ),
    ),
    "softmax_one_hot": (
        losses.softmax_cross_entropy,
        Y,
        ONE_HOT,
        lambda y, t: -np.sum(t * np.log(np.exp(y) / np.exp(y).sum(1, keepdims=True))) / len(y),
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_value_matches_plain_formula(name):
    loss, y, t, formula = CASES[name]
    np.testing.assert_allclose(loss.value(y, t), formula(np.asarray(y), np.asarray(t)), rtol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_grad_matches_jax_grad_and_finite_differences(name):
    loss, y, t, _ = CASES[name]
    manual = loss.grad(y, t)
    assert manual.shape == y.shape
    assert rel_error(manual, jax.grad(loss.value)(y, t)) < 1e-9
    assert rel_error(manual, numerical_gradient(loss.value, y, t)) < 1e-7


@pytest.mark.parametrize("name", CASES)
def test_value_and_grad_is_value_and_grad(name):
    loss, y, t, _ = CASES[name]
    J, dy = loss.value_and_grad(y, t)
    assert J == loss.value(y, t)
    np.testing.assert_array_equal(dy, loss.grad(y, t))


def test_fused_softmax_backward_is_p_minus_t_over_m():
    p = jax.nn.softmax(Y)
    np.testing.assert_allclose(losses.softmax_cross_entropy.grad(Y, ONE_HOT), (p - ONE_HOT) / 6)


def test_known_answers():
    # With all-zero logits, softmax is uniform: cross-entropy is log K.
    z = jnp.zeros((4, 10))
    assert math.isclose(
        float(losses.softmax_cross_entropy.value(z, jnp.arange(4))), math.log(10), rel_tol=1e-6
    )
    # A zero logit is p = 1/2: binary cross-entropy log 2 whatever the label.
    assert math.isclose(
        float(
            losses.sigmoid_binary_cross_entropy.value(
                jnp.zeros((3, 1)), jnp.array([[0.0], [1.0], [1.0]])
            )
        ),
        math.log(2),
        rel_tol=1e-6,
    )
    # Rumelhart et al. (1986): E = 1/2 sum (y - d)^2 for one case.
    assert float(
        losses.mse.value(jnp.array([[0.2, 0.9]]), jnp.array([[0.0, 1.0]]))
    ) == pytest.approx(0.5 * (0.04 + 0.01))


def test_referee_agrees_at_a_logit_of_exactly_zero():
    # Binary cross-entropy is smooth at 0; its gradient there is 1/2 - t.
    y, t = jnp.zeros((1, 1)), jnp.zeros((1, 1))
    loss = losses.sigmoid_binary_cross_entropy
    assert float(loss.grad(y, t)[0, 0]) == 0.5
    assert float(jax.grad(loss.value)(y, t)[0, 0]) == 0.5


def test_sigmoid_output_with_mse_gradient_vanishes_where_cross_entropy_does_not():
    # Output near 0 for target 1 (the experiments' claim, checked here as algebra):
    # d(MSE)/dlogit = (o - t) o (1 - o) -> 0, d(BCE)/dlogit = o - t -> -1.
    logit = jnp.array([[-10.0]])
    o = jax.nn.sigmoid(logit)
    d_mse = losses.mse.grad(o, jnp.ones((1, 1))) * o * (1 - o)
    d_bce = losses.sigmoid_binary_cross_entropy.grad(logit, jnp.ones((1, 1)))
    assert abs(float(d_mse[0, 0])) < 1e-4
    assert float(d_bce[0, 0]) == pytest.approx(-1.0, abs=1e-4)


@pytest.mark.parametrize("value", [1e4, -1e4, 0.0])
def test_no_nan_or_inf_at_extreme_or_equal_logits_float32(value):
    y = jnp.array([[value, -value, 0.0], [value, value, value]], jnp.float32)
    cases = [
        (losses.softmax_cross_entropy, jnp.array([1, 2])),
        (
            losses.multilabel_sigmoid_cross_entropy,
            jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], jnp.float32),
        ),
        (losses.sigmoid_binary_cross_entropy, jnp.array([[0.0], [1.0]], jnp.float32)),
        (losses.mse, jnp.ones((2, 3), jnp.float32)),
    ]
    for loss, t in cases:
        yy = y[:, :1] if t.ndim == 2 and t.shape[1] == 1 else y
        J, dy = loss.value_and_grad(yy, t)
        assert jnp.isfinite(J) and jnp.all(jnp.isfinite(dy)), loss
        assert J.dtype == jnp.float32 and dy.dtype == jnp.float32


def test_cross_entropy_of_a_confidently_wrong_logit_is_the_margin():
    # -log softmax at 1e4 margin is 1e4 exactly (no overflow to inf).
    J = losses.softmax_cross_entropy.value(jnp.array([[1e4, 0.0]], jnp.float32), jnp.array([1]))
    assert float(J) == pytest.approx(1e4)


# ------------------------------------------------------------------ validation


def test_column_target_trap_is_refused():
    y = jnp.zeros((5, 1))
    with pytest.raises(
        ValueError, match=r"t: expected a target of the output's shape \(5, 1\).*t\[:, None\]"
    ):
        losses.mse.value(y, jnp.zeros(5))
    with pytest.raises(ValueError, match="t: expected"):
        losses.sigmoid_binary_cross_entropy.value(y, jnp.zeros(5))


def test_labels_out_of_range_and_wrong_type():
    with pytest.raises(ValueError, match=r"t: expected labels in \[0, 3\), got label 3"):
        losses.softmax_cross_entropy.value(Y, jnp.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="t: expected labels in"):
        losses.softmax_cross_entropy.value(Y, jnp.array([0, 1, 2, -1, 0, 1]))
    with pytest.raises(ValueError, match="t: expected integer class labels"):
        losses.softmax_cross_entropy.value(Y, jnp.zeros(6))
    with pytest.raises(ValueError, match="t: expected 6 integer labels"):
        losses.softmax_cross_entropy.value(Y, jnp.zeros(5, jnp.int32))


def test_one_hot_of_wrong_width():
    with pytest.raises(ValueError, match=r"t: expected a target of the output's shape \(6, 3\)"):
        losses.softmax_cross_entropy.value(Y, jnp.zeros((6, 4)))


def test_binary_cross_entropy_needs_one_unit():
    with pytest.raises(ValueError, match="y: expected one output unit"):
        losses.sigmoid_binary_cross_entropy.value(Y, T_REAL)


def test_half_precision_is_refused():
    with pytest.raises(ValueError, match="y: expected float32 or float64"):
        losses.mse.value(Y.astype(jnp.float16), T_REAL.astype(jnp.float16))


def test_output_must_be_a_batch_of_rows():
    with pytest.raises(
        ValueError, match=r"y: expected a batch of shape \(m, ...\) with at least 2 axes"
    ):
        losses.mse.value(jnp.zeros(3), jnp.zeros(3))


def test_get_by_name():
    assert losses.get("mse") is losses.mse
    with pytest.raises(ValueError, match="loss: expected one of"):
        losses.get("hinge")


def test_under_jit_shape_checks_still_run():
    with pytest.raises(ValueError, match="t: expected"):
        jax.jit(losses.mse.value)(jnp.zeros((5, 1)), jnp.zeros(5))


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_a_loss_is_callable_and_its_call_is_its_value(name):
    loss = losses.LOSSES[name]
    if name == "sequence_softmax_cross_entropy":
        y, t = jnp.stack([Y, -Y], axis=1), jnp.stack([LABELS, LABELS[::-1]], axis=1)
    elif name == "sigmoid_binary_cross_entropy":
        y, t = Y[:, :1], T_REAL[:, :1].round()
    elif name == "softmax_cross_entropy":
        y, t = Y, LABELS
    else:
        y, t = Y, T_REAL
    assert float(loss(y, t)) == float(loss.value(y, t)) == float(loss.value_and_grad(y, t)[0])
    assert callable(loss.metric) or (name == "mse" and loss.metric is None)
