"""Losses: a value and its gradient with respect to the network output, by hand.

A :class:`Loss` holds three pure functions of the network output ``y`` (shape
``(m, k)``: a batch of ``m`` rows) and the target ``t``:

* ``value(y, t) -> J``: a scalar, the mean over the batch;
* ``grad(y, t) -> dJ/dy``: same shape as ``y``;
* ``value_and_grad(y, t) -> (J, dJ/dy)``: both, sharing the work (softmax or
  sigmoid is computed once). ``purenet.backprop`` uses this one.

Conventions (``DESIGN.md``):

* :data:`mse` is ``1/2 * sum_k (y - t)**2`` averaged over the batch; with one
  example it is the ``E = 1/2 * sum (t - o)**2`` of Rumelhart et al. (1986).
* :data:`softmax_cross_entropy`, :data:`sigmoid_binary_cross_entropy` and
  :data:`multilabel_sigmoid_cross_entropy` take *logits*: the last layer's
  activation is fused into the loss, which makes the backward the famous
  ``(p - t) / m`` (Saito, *Deep Learning from Scratch*, ch. 5.6.3) and keeps the
  value finite for logits of any size.
* Targets must have the output's shape (softmax cross-entropy also takes
  integer labels of shape ``(m,)``). A target of shape ``(m,)`` against an
  output of shape ``(m, 1)`` is refused rather than broadcast to ``(m, m)``.

Value checks on labels (integer labels in ``[0, k)``) run on concrete arrays
only; under ``jit`` only shapes and dtypes can be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from purenet import _checks
from purenet.activations import _sigmoid


class Loss(NamedTuple):
    """A loss: ``value(y, t)``, ``grad(y, t)`` and the fused ``value_and_grad(y, t)``."""

    value: Callable
    grad: Callable
    value_and_grad: Callable


def _make_loss(value_and_grad: Callable, name: str) -> Loss:
    def value(y, t):
        return value_and_grad(y, t)[0]

    def grad(y, t):
        return value_and_grad(y, t)[1]

    value.__name__, grad.__name__ = f"{name}_value", f"{name}_grad"
    value_and_grad.__name__ = f"{name}_value_and_grad"
    return Loss(value=value, grad=grad, value_and_grad=value_and_grad)


# ------------------------------------------------------------------- validation


def _check_output(y):
    _checks.float_array("y", y)
    _checks.ndim("y", y, 2)


def _check_same_shape(y, t):
    """Check ``t`` has the output's shape; return it in the output's dtype (the
    output decides the precision: a float64 target never promotes a float32
    network's loss)."""
    t_shape, y_shape = tuple(jnp.shape(t)), tuple(jnp.shape(y))
    if t_shape != y_shape:
        hint = ""
        if t_shape == y_shape[:1] and y_shape[1:] == (1,):
            hint = " (a target of shape (m,) against an output of shape (m, 1) would broadcast to"
            hint += " (m, m); reshape it with t[:, None])"
        _checks.fail("t", f"a target of the output's shape {y_shape}{hint}", f"shape {t_shape}")
    return jnp.asarray(t).astype(y.dtype)


def check_labels(labels, num_classes: int, name: str = "t"):
    """Refuse labels that are not integers, or (when concrete) lie outside
    ``[0, num_classes)``; the error names the argument ``name``."""
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        _checks.fail(
            name, "integer class labels or one-hot rows", f"dtype {jnp.result_type(labels)}"
        )
    if _checks.is_concrete(labels):
        arr = np.asarray(labels)
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = arr[(arr < 0) | (arr >= num_classes)][0]
            _checks.fail(name, f"labels in [0, {num_classes})", f"label {bad}")


# ------------------------------------------------------------------------ losses


def _mse(y, t):
    _check_output(y)
    t = _check_same_shape(y, t)
    m = y.shape[0]
    error = y - t
    return 0.5 * jnp.sum(error * error) / m, error / m


mse = _make_loss(_mse, "mse")


def _sigmoid_cross_entropy(y, t):
    # -[t log s(y) + (1 - t) log(1 - s(y))] rewritten for logits y as
    # softplus(y) - y t, with softplus(y) = log(1 + e^y) = logaddexp(0, y),
    # which never overflows. (The equal form max(y, 0) + log1p(exp(-|y|)) of
    # TensorFlow has two kinks that cancel; jax.grad, our referee, takes the
    # wrong subgradient of each at exactly y = 0.)
    _check_output(y)
    t = _check_same_shape(y, t)
    m = y.shape[0]
    per_unit = jnp.logaddexp(0.0, y) - y * t
    return jnp.sum(per_unit) / m, (_sigmoid(y) - t) / m


def _binary_cross_entropy(y, t):
    if jnp.ndim(y) == 2 and y.shape[1] != 1:
        _checks.fail(
            "y",
            "one output unit, shape (m, 1), for binary cross-entropy "
            "(use multilabel_sigmoid_cross_entropy for several independent labels)",
            f"shape {y.shape}",
        )
    return _sigmoid_cross_entropy(y, t)


sigmoid_binary_cross_entropy = _make_loss(_binary_cross_entropy, "sigmoid_binary_cross_entropy")
multilabel_sigmoid_cross_entropy = _make_loss(
    _sigmoid_cross_entropy, "multilabel_sigmoid_cross_entropy"
)


def _softmax_cross_entropy(y, t):
    _check_output(y)
    m, k = y.shape
    if jnp.ndim(t) == 1:
        if t.shape[0] != m:
            _checks.fail("t", f"{m} integer labels, one per row of y", f"shape {t.shape}")
        check_labels(t, k)
        t = (t[:, None] == jnp.arange(k)).astype(y.dtype)
    else:
        t = _check_same_shape(y, t)
    shifted = y - jnp.max(y, axis=1, keepdims=True)
    e = jnp.exp(shifted)
    s = jnp.sum(e, axis=1, keepdims=True)
    log_p = shifted - jnp.log(s)
    p = e / s
    # d/dy of -sum_k t_k log p_k is p * sum_k t_k - t, which is p - t for rows
    # that sum to 1 (one-hot or probability targets).
    t_total = jnp.sum(t, axis=1, keepdims=True)
    return -jnp.sum(t * log_p) / m, (p * t_total - t) / m


softmax_cross_entropy = _make_loss(_softmax_cross_entropy, "softmax_cross_entropy")

LOSSES = {
    "mse": mse,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
    "multilabel_sigmoid_cross_entropy": multilabel_sigmoid_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}


def get(name) -> Loss:
    """A loss by name (or a :class:`Loss`, returned as is)."""
    if isinstance(name, Loss):
        return name
    _checks.one_of("loss", name, LOSSES)
    return LOSSES[name]
