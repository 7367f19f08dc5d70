"""purenet.metrics: accuracy on hand-made outputs."""

import jax.numpy as jnp
import pytest

from purenet import losses, metrics


def test_multiclass_accuracy_labels_and_one_hot():
    y = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 0, 0])
    assert float(metrics.multiclass_accuracy(y, labels)) == 0.75
    assert float(metrics.multiclass_accuracy(y, jnp.eye(3)[labels])) == 0.75


def test_binary_accuracy_logits_and_probabilities():
    y = jnp.array([[-1.0], [2.0], [0.3]])
    t = jnp.array([[0.0], [1.0], [0.0]])
    assert float(metrics.binary_accuracy(y, t)) == pytest.approx(2 / 3)
    assert float(metrics.binary_accuracy(y, t, threshold=0.5)) == 1.0


def test_multilabel_hamming_and_exact_match():
    y = jnp.array([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    t = jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(metrics.multilabel_accuracy(y, t)) == pytest.approx(5 / 6)
    assert float(metrics.multilabel_accuracy(y, t, exact_match=True)) == 0.5


def test_for_loss():
    assert metrics.for_loss(losses.softmax_cross_entropy) is metrics.multiclass_accuracy
    assert metrics.for_loss(losses.mse) is None


def test_shape_errors():
    with pytest.raises(ValueError, match="t: expected 2 rows"):
        metrics.multiclass_accuracy(jnp.zeros((2, 3)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="t: expected a target of the output's shape"):
        metrics.binary_accuracy(jnp.zeros((2, 1)), jnp.zeros(2))
