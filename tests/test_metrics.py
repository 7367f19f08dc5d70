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


def test_each_loss_names_its_metric():
    assert losses.softmax_cross_entropy.metric is metrics.multiclass_accuracy
    assert losses.sigmoid_binary_cross_entropy.metric is metrics.binary_accuracy
    assert losses.multilabel_sigmoid_cross_entropy.metric is metrics.multilabel_accuracy
    assert losses.sequence_softmax_cross_entropy.metric is metrics.sequence_accuracy
    assert losses.mse.metric is None
    for loss in losses.LOSSES.values():
        assert metrics.for_loss(loss) is loss.metric
    # a loss of one's own names its metric the same way (none by default)
    own = losses.Loss(losses.mse.value, losses.mse.grad, losses.mse.value_and_grad)
    assert metrics.for_loss(own) is None
    assert metrics.for_loss(own._replace(metric=metrics.binary_accuracy)) is metrics.binary_accuracy
    with pytest.raises(TypeError, match=r"^loss: expected a purenet Loss"):
        metrics.for_loss("mse")


def test_sequence_accuracy_counts_only_the_steps_that_count():
    # argmax per step: [0, 1, 0] and [1, 1, 0]
    y = jnp.array([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]], [[0.0, 1.0], [0.0, 2.0], [3.0, 0.0]]])
    labels = jnp.array([[0, 0, -1], [1, -1, 1]])
    # counted steps: (0,0) right, (0,1) wrong, (1,0) right, (1,2) wrong
    assert float(metrics.sequence_accuracy(y, labels)) == 0.5
    mask = jnp.array([[True, False, True], [True, True, True]])
    assert float(metrics.sequence_accuracy(y, (labels, mask))) == pytest.approx(2 / 3)
    assert jnp.isnan(metrics.sequence_accuracy(y, jnp.full((2, 3), -1)))
    assert float(jax.jit(metrics.sequence_accuracy)(y, labels)) == 0.5
    assert metrics._IGNORE_LABEL == losses.IGNORE_LABEL
    with pytest.raises(ValueError, match=r"^y: expected scores of shape \(m, T, C\)"):
        metrics.sequence_accuracy(y[0], labels)
    with pytest.raises(ValueError, match=r"^t: expected integer labels of shape \(2, 3\)"):
        metrics.sequence_accuracy(y, labels[:, :2])
    with pytest.raises(ValueError, match=r"^mask: expected a mask of the targets' shape \(2, 3\)"):
        metrics.sequence_accuracy(y, (labels, mask[:, :2]))


def test_docstring_examples_run():
    failures, _ = doctest.testmod(metrics, extraglobs={"jnp": jnp})
    assert failures == 0
