"""Accuracy for the kinds of classification output.

All functions are pure and jittable. `y` is the network output for a batch,
of any rank: `(m, C)` for one prediction per example, `(m, T, C)` for a
sequence (one prediction per time step), `(m, H, W, C)` for a per-pixel
output. As everywhere in purenet the class (or label, or unit) axis is the
**last** one; accuracy is the mean over every other position, so for a
sequence it is the fraction of the `m * T` time steps predicted right.

* [`multiclass_accuracy`][purenet.metrics.multiclass_accuracy]: softmax heads; the predicted class
  is the `argmax` over the last axis (the same for logits and probabilities).
  Targets are integer labels of shape `y.shape[:-1]` (`(m,)`, or
  `(m, T)` for sequences) or one-hot rows of `y`'s shape.
* [`binary_accuracy`][purenet.metrics.binary_accuracy]: one output unit, `y` of shape `(m, 1)` (or
  `(m, T, 1)`, ...), 0/1 targets of the same shape; predicted positive
  when `y > threshold`. Use `threshold=0` for logits (sigmoid
  cross-entropy heads, the default) and `0.5` for probabilities (a sigmoid
  layer followed by MSE).
* [`multilabel_accuracy`][purenet.metrics.multilabel_accuracy]: `k` independent binary labels on the
  last axis, targets of `y`'s shape; the fraction of all label decisions that
  are right (Hamming accuracy). `exact_match=True` instead counts the
  positions (rows, for `(m, k)`) with all `k` labels right.
* [`sequence_accuracy`][purenet.metrics.sequence_accuracy]: the targets of
  `purenet.losses.sequence_softmax_cross_entropy`, integer labels
  `(m, T)` with `-1` at padded steps (or a pair `(labels, mask)`); the
  fraction of the steps that count whose `argmax` is the label.

Each loss of `purenet.losses` names its metric in its `metric` field
([`for_loss`][purenet.metrics.for_loss] reads it), so this module imports no loss.

Shapes are checked exactly, never broadcast: a target of shape `(m, 1)`
next to an output of shape `(m, 3)` would otherwise be compared with every
column and give a plausible, wrong number. In particular, integer labels of
shape `(m, 1)` are refused by [`multiclass_accuracy`][purenet.metrics.multiclass_accuracy] (pass
`t[:, 0]`): guessing that the column holds labels would accept the same
shape for a one-hot target of a one-class output, so the stricter rule keeps
one meaning per shape. Shapes are static, so the checks also run under
`jit`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from purenet import _checks

# purenet.losses.IGNORE_LABEL, the label of a padded step (losses imports this
# module, not the reverse).
_IGNORE_LABEL = -1


def _check_output(y):
    _checks.array("y", y)
    if jnp.ndim(y) < 2:
        _checks.fail("y", "an output of shape (m, ..., C), at least 2 dimensions", _shape(y))


def _shape(x) -> str:
    return f"shape {tuple(jnp.shape(x))}"


def _check_rows(y, t):
    """Same number of examples first: the most common mistake gets the plainest message."""
    _checks.array("t", t)
    if jnp.shape(t)[:1] != jnp.shape(y)[:1]:
        _checks.fail("t", f"{y.shape[0]} rows, like y", _shape(t))


def _check_same_shape(y, t):
    if jnp.shape(t) != jnp.shape(y):
        _checks.fail("t", f"a target of the output's shape {tuple(y.shape)}", _shape(t))


def multiclass_accuracy(y: jax.Array, t: jax.Array) -> jax.Array:
    """Fraction of positions whose `argmax` over the last axis is the target class.

    Args:
      y: scores (logits or probabilities) of shape `(m, ..., C)`.
      t: integer labels in `[0, C)` of shape `y.shape[:-1]`, or one-hot
        (or any per-class scores, whose argmax is taken) of shape `y.shape`.

    Returns:
      A scalar in `[0, 1]`: the mean over all `m * ...` positions.

    Raises:
      TypeError: `y` or `t` is not an array.
      ValueError: `t` has another number of rows, or a shape that is
        neither `y.shape[:-1]` nor `y.shape` (including integer labels of
        shape `(m, 1)` for a `(m, C)` output: pass `t[:, 0]`), or float
        labels of shape `y.shape[:-1]`.

    Example:
      >>> y = jnp.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
      >>> float(multiclass_accuracy(y, jnp.array([0, 2])))
      0.5
    """
    _check_output(y)
    _check_rows(y, t)
    labels_shape = tuple(y.shape[:-1])
    if jnp.shape(t) == tuple(y.shape):
        labels = jnp.argmax(t, axis=-1)
    elif jnp.shape(t) == labels_shape:
        if not jnp.issubdtype(t.dtype, jnp.integer):
            _checks.fail("t", f"integer labels of shape {labels_shape}", f"dtype {t.dtype}")
        labels = t
    else:
        hint = ""
        if jnp.shape(t) == (*labels_shape, 1) and jnp.issubdtype(t.dtype, jnp.integer):
            column = "t[:, 0]" if jnp.ndim(t) == 2 else "t[..., 0]"
            hint = f" (a column of labels? pass {column})"
        _checks.fail(
            "t",
            f"integer labels of shape {labels_shape} or one-hot targets of shape {tuple(y.shape)}",
            _shape(t) + hint,
        )
    return jnp.mean(jnp.argmax(y, axis=-1) == labels)


def binary_accuracy(y: jax.Array, t: jax.Array, threshold: float = 0.0) -> jax.Array:
    """Fraction of entries with `(y > threshold) == (t > 0.5)`.

    Args:
      y: one output unit per position, shape `(m, ..., 1)` (any shape with
        at least 2 dimensions is compared entry by entry).
      t: 0/1 targets of exactly `y`'s shape.
      threshold: `0` for logits, `0.5` for probabilities.

    Returns:
      A scalar in `[0, 1]`.

    Raises:
      TypeError: `y` or `t` is not an array.
      ValueError: `t`'s shape differs from `y`'s (no broadcasting).

    Example:
      >>> float(binary_accuracy(jnp.array([[-1.0], [2.0]]), jnp.array([[0.0], [0.0]])))
      0.5
    """
    _check_output(y)
    _check_rows(y, t)
    _check_same_shape(y, t)
    return jnp.mean((y > threshold) == (t > 0.5))


def multilabel_accuracy(
    y: jax.Array, t: jax.Array, threshold: float = 0.0, exact_match: bool = False
) -> jax.Array:
    """Hamming accuracy over all label decisions (or exact-match accuracy).

    Args:
      y: `k` label scores on the last axis, shape `(m, ..., k)`.
      t: 0/1 targets of exactly `y`'s shape.
      threshold: `0` for logits, `0.5` for probabilities.
      exact_match: count a position as right only when all its `k` labels
        are (the "subset accuracy" of scikit-learn's `accuracy_score` for
        multi-label input).

    Returns:
      A scalar in `[0, 1]`.

    Raises:
      TypeError: `y` or `t` is not an array.
      ValueError: `t`'s shape differs from `y`'s (no broadcasting).

    Example:
      >>> y = jnp.array([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
      >>> t = jnp.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
      >>> round(float(multilabel_accuracy(y, t)), 4)
      0.8333
      >>> float(multilabel_accuracy(y, t, exact_match=True))
      0.5
    """
    _check_output(y)
    _check_rows(y, t)
    _check_same_shape(y, t)
    right = (y > threshold) == (t > 0.5)
    return jnp.mean(jnp.all(right, axis=-1)) if exact_match else jnp.mean(right)


def _sequence_labels(t, m: int, T: int) -> tuple[jax.Array, jax.Array | None]:
    """`(labels, mask)` from a sequence target, checked: integer labels of
    shape `(m, T)` (`-1` at steps that do not count), or a pair
    `(labels, mask)` with a mask of the same shape (`mask` is `None` when
    none is given). Shared by the sequence loss and
    [`sequence_accuracy`][purenet.metrics.sequence_accuracy]; label values
    are the loss's to check (this needs only shapes and dtypes, so it works
    under `jit`).

    Raises:
      TypeError: the labels or the mask are not arrays.
      ValueError: a pair of the wrong length, labels or a mask not of shape
        `(m, T)`, or labels that are not integers.
    """
    mask = None
    if isinstance(t, tuple | list):
        if len(t) != 2:
            _checks.fail(
                "t",
                "integer labels (m, T) or a pair (labels, mask)",
                f"a {type(t).__name__} of length {len(t)}",
            )
        t, mask = t
    _checks.array("t", t)
    if tuple(jnp.shape(t)) != (m, T):
        _checks.fail("t", f"integer labels of shape ({m}, {T}), one per step of y", _shape(t))
    if not jnp.issubdtype(jnp.result_type(t), jnp.integer):
        _checks.fail(
            "t",
            "integer class labels (sequence targets are never one-hot)",
            f"dtype {jnp.result_type(t)}",
        )
    if mask is not None:
        _checks.array("mask", mask)
        if tuple(jnp.shape(mask)) != (m, T):
            _checks.fail("mask", f"a mask of the targets' shape ({m}, {T})", _shape(mask))
    return t, mask


def sequence_accuracy(y: jax.Array, t) -> jax.Array:
    """Fraction of the steps that count whose `argmax` over the last axis is the label.

    The metric of `purenet.losses.sequence_softmax_cross_entropy`, with its
    targets: a step counts when its label is not `-1` (`IGNORE_LABEL`, a
    padded step) and, for a pair `(labels, mask)`, its mask is true.

    Args:
      y: scores of shape `(m, T, C)`.
      t: integer labels of shape `(m, T)` in `[0, C)` or `-1`, or a pair
        `(labels, mask)` with `mask` of shape `(m, T)`.

    Returns:
      A scalar in `[0, 1]`; `nan` when no step counts (nothing to measure).

    Raises:
      TypeError: `y` or the labels are not arrays.
      ValueError: `y` is not `(m, T, C)`, or the labels or mask are not of
        shape `(m, T)`, or the labels are not integers.

    Example:
      >>> y = jnp.array([[[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]])
      >>> float(sequence_accuracy(y, jnp.array([[0, 0, -1]])))
      0.5
    """
    _checks.array("y", y)
    if jnp.ndim(y) != 3:
        _checks.fail("y", "scores of shape (m, T, C)", _shape(y))
    t, mask = _sequence_labels(t, *y.shape[:2])
    counts = t != _IGNORE_LABEL
    if mask is not None:
        counts = counts & jnp.asarray(mask, bool)
    right = (jnp.argmax(y, axis=-1) == t) & counts
    total = jnp.sum(counts)
    return jnp.where(total > 0, jnp.sum(right) / jnp.maximum(total, 1), jnp.nan)


def for_loss(loss) -> Callable[[jax.Array, jax.Array], jax.Array] | None:
    """The metric a loss names in its `metric` field: the natural accuracy for
    its head, or `None` for regression (MSE).

    A sigmoid layer followed by MSE is a classifier too; pass
    `lambda y, t: binary_accuracy(y, t, 0.5)` explicitly for it.

    Raises:
      TypeError: `loss` has no `metric` field (it is not a `purenet.losses.Loss`).
    """
    if not hasattr(loss, "metric") or not (loss.metric is None or callable(loss.metric)):
        _checks.fail_type("loss", "a purenet Loss (with a metric field)", type(loss).__name__)
    return loss.metric
