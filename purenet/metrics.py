"""Accuracy for the three kinds of classification output.

All functions are pure and jittable; ``y`` is the network output, a batch of
rows ``(m, k)``.

* :func:`multiclass_accuracy`: softmax heads; the predicted class is the
  row's ``argmax`` (the same for logits and probabilities). Targets are integer
  labels ``(m,)`` or one-hot rows ``(m, k)``.
* :func:`binary_accuracy`: one output unit ``(m, 1)``, targets 0/1 of shape
  ``(m, 1)``; predicted positive when ``y > threshold``. Use ``threshold=0``
  for logits (sigmoid cross-entropy heads, the default) and ``0.5`` for
  probabilities (a sigmoid layer followed by MSE).
* :func:`multilabel_accuracy`: ``k`` independent binary labels ``(m, k)``;
  the fraction of all ``m * k`` label decisions that are right (Hamming
  accuracy). ``exact_match=True`` instead counts rows with every label right.
"""

from __future__ import annotations

import jax.numpy as jnp

from purenet import _checks, losses


def _check_rows(y, t):
    _checks.ndim("y", y, 2)
    if jnp.shape(t)[:1] != jnp.shape(y)[:1]:
        _checks.fail("t", f"{y.shape[0]} rows, like y", f"shape {jnp.shape(t)}")


def multiclass_accuracy(y, t):
    """Fraction of rows whose ``argmax`` is the target class."""
    _check_rows(y, t)
    labels = t if jnp.ndim(t) == 1 else jnp.argmax(t, axis=1)
    return jnp.mean(jnp.argmax(y, axis=1) == labels)


def binary_accuracy(y, t, threshold: float = 0.0):
    """Fraction of rows with ``(y > threshold) == (t > 0.5)``; ``y`` of shape ``(m, 1)``."""
    _check_rows(y, t)
    if jnp.shape(t) != jnp.shape(y):
        _checks.fail("t", f"a target of the output's shape {y.shape}", f"shape {jnp.shape(t)}")
    return jnp.mean((y > threshold) == (t > 0.5))


def multilabel_accuracy(y, t, threshold: float = 0.0, exact_match: bool = False):
    """Hamming accuracy over all label decisions (or exact-match accuracy over rows)."""
    _check_rows(y, t)
    right = (y > threshold) == (t > 0.5)
    return jnp.mean(jnp.all(right, axis=1)) if exact_match else jnp.mean(right)


def for_loss(loss):
    """The natural accuracy for a loss's head, or ``None`` for regression (MSE).

    A sigmoid layer followed by MSE is a classifier too; pass
    ``lambda y, t: binary_accuracy(y, t, 0.5)`` explicitly for it.
    """
    if loss is losses.softmax_cross_entropy:
        return multiclass_accuracy
    if loss is losses.sigmoid_binary_cross_entropy:
        return binary_accuracy
    if loss is losses.multilabel_sigmoid_cross_entropy:
        return multilabel_accuracy
    return None
