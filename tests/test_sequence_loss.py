"""purenet.losses.sequence_softmax_cross_entropy: the value against a NumPy
formula, the hand-written gradient against jax.grad and central differences
(float64), masking by padding label and by an explicit mask, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import losses
from purenet.gradcheck import norm_ratio, numerical_gradient, rel_error

LOSS = losses.sequence_softmax_cross_entropy
M, T, C = 3, 5, 4


def _data(dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.key(0))
    y = 3.0 * jax.random.normal(k1, (M, T, C), dtype)
    t = jax.random.randint(k2, (M, T), 0, C)
    return y, t.at[1, 3:].set(losses.IGNORE_LABEL).at[2, 0].set(losses.IGNORE_LABEL)


def numpy_value(y, t):
    y, t = np.asarray(y, np.float64), np.asarray(t)
    log_p = y - y.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    keep = t != -1
    return -np.take_along_axis(log_p, np.where(keep, t, 0)[..., None], -1)[..., 0][keep].mean()


def test_value_is_the_mean_over_unmasked_steps():
    y, t = _data()
    J, dy = LOSS.value_and_grad(y, t)
    np.testing.assert_allclose(J, numpy_value(y, t), rtol=1e-13)
    np.testing.assert_allclose(LOSS.value(y, t), J, rtol=0)
    np.testing.assert_allclose(LOSS.grad(y, t), dy, rtol=0)
    # Masked steps get no gradient; each unmasked row of dy sums to zero.
    masked = np.asarray(t) == -1
    assert float(jnp.max(jnp.abs(dy[masked]))) == 0.0
    np.testing.assert_allclose(jnp.sum(dy, -1), 0.0, atol=1e-15)


def test_gradient_matches_autodiff_and_finite_differences():
    y, t = _data()
    dy = LOSS.grad(y, t)
    assert rel_error(dy, jax.grad(LOSS.value)(y, t)) < 1e-12
    numeric = numerical_gradient(lambda y: LOSS.value(y, t), y)
    assert norm_ratio(dy, numeric) < 1e-8


def test_pair_with_a_mask_equals_the_padding_label():
    y, t = _data()
    mask = (t != losses.IGNORE_LABEL).astype(jnp.int32)
    labels = jnp.where(mask == 1, t, 0)
    J1, g1 = LOSS.value_and_grad(y, t)
    J2, g2 = LOSS.value_and_grad(y, (labels, mask))
    np.testing.assert_allclose(J2, J1, rtol=1e-15)
    np.testing.assert_allclose(g2, g1, rtol=1e-15)


def test_without_padding_it_is_softmax_cross_entropy_over_all_steps():
    y, _ = _data()
    t = jax.random.randint(jax.random.key(1), (M, T), 0, C)
    J, dy = LOSS.value_and_grad(y, t)
    J_flat, dy_flat = losses.softmax_cross_entropy.value_and_grad(y.reshape(-1, C), t.reshape(-1))
    np.testing.assert_allclose(J, J_flat, rtol=1e-14)
    np.testing.assert_allclose(dy, dy_flat.reshape(M, T, C), rtol=1e-14)


def test_all_masked_gives_zero_not_nan_and_large_logits_stay_finite():
    y, t = _data(dtype=jnp.float32)
    J, dy = LOSS.value_and_grad(y, jnp.full((M, T), losses.IGNORE_LABEL))
    assert float(J) == 0.0 and float(jnp.max(jnp.abs(dy))) == 0.0
    J, dy = jax.jit(LOSS.value_and_grad)(1e4 * jnp.sign(y), t)
    assert J.dtype == jnp.float32 and bool(jnp.isfinite(J)) and bool(jnp.all(jnp.isfinite(dy)))


@pytest.mark.parametrize(
    "t, pattern",
    [
        (jnp.zeros((M, T + 1), jnp.int32), r"t: expected integer labels of shape \(3, 5\)"),
        (jnp.zeros((M, T)), r"t: expected integer class labels"),
        (jnp.full((M, T), C), r"t: expected labels in \[0, 4\) or -1 \(masked\), got label 4"),
        (jnp.full((M, T), -2), r"t: expected labels in \[0, 4\) or -1 \(masked\), got label -2"),
        (
            (jnp.zeros((M, T), jnp.int32), jnp.ones((M, T - 1))),
            r"mask: expected a mask of the targets' shape \(3, 5\)",
        ),
    ],
    ids=["shape", "float", "too_large", "negative", "mask_shape"],
)
def test_bad_targets_name_the_argument(t, pattern):
    y, _ = _data()
    with pytest.raises(ValueError, match=pattern):
        LOSS.value_and_grad(y, t)


def test_logits_must_be_a_sequence():
    with pytest.raises(ValueError, match=r"y: expected an array with 3 dimensions"):
        LOSS.value(jnp.zeros((M, C)), jnp.zeros((M,), jnp.int32))
