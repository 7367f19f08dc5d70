"""purenet.metrics: accuracy on hand-made outputs; shapes checked exactly, never broadcast."""

import doctest

import jax
import jax.numpy as jnp
import pytest

from purenet import losses, metrics

Y = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
LABELS = jnp.array([0, 1, 0, 0])


def test_multiclass_accuracy_labels_and_one_hot():
    assert float(metrics.multiclass_accuracy(Y, LABELS)) == 0.75
    assert float(metrics.multiclass_accuracy(Y, jnp.eye(3)[LABELS])) == 0.75
    assert float(metrics.multiclass_accuracy(Y, jnp.eye(3, dtype=jnp.int32)[LABELS])) == 0.75


def test_multiclass_accuracy_refuses_a_column_of_integer_labels():
    # Before: argmax of the (m, 1) column is always 0, so this reported 0.33
    # where every prediction is right.
    y = jnp.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    t = jnp.array([[0], [1], [2]])
    with pytest.raises(ValueError, match=r"^t: expected integer labels of shape \(3,\).*t\[:, 0\]"):
        metrics.multiclass_accuracy(y, t)
    assert float(metrics.multiclass_accuracy(y, t[:, 0])) == 1.0


def test_multiclass_accuracy_refuses_float_labels():
    with pytest.raises(ValueError, match=r"^t: expected integer labels of shape \(4,\)"):
        metrics.multiclass_accuracy(Y, LABELS.astype(jnp.float32))


def test_multiclass_accuracy_on_sequences_uses_the_last_axis():
    # (m, T, C) = (2, 3, 4); labels (m, T): accuracy over all m * T time steps.
    labels = jnp.array([[0, 1, 2], [3, 3, 0]])
    y = jax.nn.one_hot(labels, 4) * 5.0
    y = y.at[1, 2].set(jnp.array([0.0, 9.0, 0.0, 0.0]))  # one of six steps wrong
    assert float(metrics.multiclass_accuracy(y, labels)) == pytest.approx(5 / 6)
    assert float(metrics.multiclass_accuracy(y, jax.nn.one_hot(labels, 4))) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match=r"t\[\.\.\., 0\]"):
        metrics.multiclass_accuracy(y, labels[..., None])


def test_binary_accuracy_logits_and_probabilities():
    y = jnp.array([[-1.0], [2.0], [0.3]])
    t = jnp.array([[0.0], [1.0], [0.0]])
    assert float(metrics.binary_accuracy(y, t)) == pytest.approx(2 / 3)
    assert float(metrics.binary_accuracy(y, t, threshold=0.5)) == 1.0


def test_binary_accuracy_on_sequences():
    y = jnp.array([[[1.0], [-1.0]], [[2.0], [3.0]]])  # (m, T, 1)
    t = jnp.array([[[1.0], [0.0]], [[1.0], [0.0]]])
    assert float(metrics.binary_accuracy(y, t)) == 0.75


def test_binary_accuracy_refuses_shapes_that_would_broadcast():
    with pytest.raises(ValueError, match=r"^t: expected a target of the output's shape \(2, 1\)"):
        metrics.binary_accuracy(jnp.zeros((2, 1)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"^t: expected a target of the output's shape \(2, 1\)"):
        metrics.binary_accuracy(jnp.zeros((2, 1)), jnp.zeros(2))


def test_multilabel_hamming_and_exact_match():
    y = jnp.array([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    t = jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(metrics.multilabel_accuracy(y, t)) == pytest.approx(5 / 6)
    assert float(metrics.multilabel_accuracy(y, t, exact_match=True)) == 0.5


def test_multilabel_refuses_a_target_that_would_broadcast():
    # Before: t of shape (2, 1) was compared with every column and gave 0.5.
    y = jnp.array([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    t = jnp.array([[1.0], [0.0]])
    with pytest.raises(ValueError, match=r"^t: expected a target of the output's shape \(2, 3\)"):
        metrics.multilabel_accuracy(y, t)


def test_multilabel_exact_match_per_position_of_a_sequence():
    y = jnp.ones((2, 3, 2))  # every label predicted on
    t = jnp.ones((2, 3, 2)).at[0, 1, 0].set(0.0)  # one label of one step off
    assert float(metrics.multilabel_accuracy(y, t, exact_match=True)) == pytest.approx(5 / 6)
    assert float(metrics.multilabel_accuracy(y, t)) == pytest.approx(11 / 12)


@pytest.mark.parametrize(
    "accuracy", [metrics.multiclass_accuracy, metrics.binary_accuracy, metrics.multilabel_accuracy]
)
def test_row_count_and_rank_errors(accuracy):
    with pytest.raises(ValueError, match=r"^t: expected 4 rows, like y"):
        accuracy(jnp.zeros((4, 3)), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"^y: expected an output of shape \(m, \.\.\., C\)"):
        accuracy(jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(TypeError, match=r"^t: expected an array"):
        accuracy(jnp.zeros((2, 1)), [[0.0], [1.0]])


def test_metrics_are_jittable():
    assert float(jax.jit(metrics.multiclass_accuracy)(Y, LABELS)) == 0.75
    with pytest.raises(ValueError, match=r"^t: expected"):
        jax.jit(metrics.multilabel_accuracy)(jnp.zeros((2, 3)), jnp.zeros((2, 1)))


def test_for_loss():
    assert metrics.for_loss(losses.softmax_cross_entropy) is metrics.multiclass_accuracy
    assert metrics.for_loss(losses.sigmoid_binary_cross_entropy) is metrics.binary_accuracy
    assert metrics.for_loss(losses.multilabel_sigmoid_cross_entropy) is metrics.multilabel_accuracy
    assert metrics.for_loss(losses.mse) is None


def test_docstring_examples_run():
    failures, _ = doctest.testmod(metrics, extraglobs={"jnp": jnp})
    assert failures == 0
