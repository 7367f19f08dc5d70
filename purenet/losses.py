"""Losses: a value and its gradient with respect to the network output, by hand.

A [`Loss`][purenet.losses.Loss] holds three pure functions of the network output `y` (shape
`(m, k)`: a batch of `m` rows) and the target `t`:

* `value(y, t) -> J`: a scalar, the mean over the batch;
* `grad(y, t) -> dJ/dy`: same shape as `y`;
* `value_and_grad(y, t) -> (J, dJ/dy)`: both, sharing the work (softmax or
  sigmoid is computed once). `purenet.backprop` uses this one.

and one field, `metric`: the accuracy of `purenet.metrics` that fits the
loss's head (`None` for regression), which `purenet.train.fit` reports.
A loss is also callable: `losses.mse(y, t)` is `losses.mse.value(y, t)`.

Conventions (`DESIGN.md`):

* [`mse`][purenet.losses.mse] is `1/2 * sum_k (y - t)**2` averaged over the batch; with one
  example it is the `E = 1/2 * sum (t - o)**2` of Rumelhart et al. (1986).
* [`softmax_cross_entropy`][purenet.losses.softmax_cross_entropy],
  [`sigmoid_binary_cross_entropy`][purenet.losses.sigmoid_binary_cross_entropy] and
  [`multilabel_sigmoid_cross_entropy`][purenet.losses.multilabel_sigmoid_cross_entropy] take
  *logits*: the last layer's activation is fused into the loss, which makes the backward the famous
  `(p - t) / m` (Saito, *Deep Learning from Scratch*, ch. 5.6.3) and keeps the value finite for
  logits of any size.
* [`sequence_softmax_cross_entropy`][purenet.losses.sequence_softmax_cross_entropy] takes logits
  `(m, T, C)` and integer labels `(m, T)`, `-1` ([`IGNORE_LABEL`][purenet.losses.IGNORE_LABEL])
  marking masked steps, and averages over the unmasked steps.
* Targets must have the output's shape (softmax cross-entropy also takes
  integer labels of shape `(m,)`). A target of shape `(m,)` against an
  output of shape `(m, 1)` is refused rather than broadcast to `(m, m)`.

Value checks on labels (integer labels in `[0, k)`) run on concrete arrays
only; under `jit` only shapes and dtypes can be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks, metrics
from purenet.activations import _sigmoid


class Loss(NamedTuple):
    """A loss: `value(y, t)`, `grad(y, t)`, the fused `value_and_grad(y, t)`,
    and the metric that fits its head.

    Attributes:
      value: `value(y, t) -> J`, a scalar: the mean over the batch.
      grad: `grad(y, t) -> dJ/dy`, of `y`'s shape.
      value_and_grad: both at once.
      metric: `metric(y, t) -> scalar`, the accuracy of
        [`purenet.metrics`][purenet.metrics] for this loss's head (what
        `purenet.train.fit` reports with `metric="auto"`), or `None` for a
        regression loss.

    A loss is callable: `loss(y, t)` is `loss.value(y, t)`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from purenet import losses, metrics
      >>> y, t = jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 0.0]])
      >>> float(losses.mse(y, t))
      2.5
      >>> losses.softmax_cross_entropy.metric is metrics.multiclass_accuracy, losses.mse.metric
      (True, None)
    """

    value: Callable
    grad: Callable
    value_and_grad: Callable
    metric: Callable | None = None

    def __call__(self, y, t):
        """The loss's value, `self.value(y, t)`."""
        return self.value(y, t)


def _make_loss(value_and_grad: Callable, name: str, metric: Callable | None) -> Loss:
    def value(y, t):
        return value_and_grad(y, t)[0]

    def grad(y, t):
        return value_and_grad(y, t)[1]

    value.__name__, grad.__name__ = f"{name}_value", f"{name}_grad"
    value_and_grad.__name__ = f"{name}_value_and_grad"
    return Loss(value=value, grad=grad, value_and_grad=value_and_grad, metric=metric)


# ------------------------------------------------------------------- validation


def _check_output(y):
    """`y` is a float batch `(m, ...)`: rows `(m, k)`, sequences `(m, T, k)`."""
    _checks.float_array("y", y)
    if jnp.ndim(y) < 2:
        _checks.fail("y", "a batch of shape (m, ...) with at least 2 axes", f"shape {jnp.shape(y)}")


def _check_same_shape(y, t):
    """Check `t` has the output's shape; return it in the output's dtype (the
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


def check_labels(labels: jax.Array, num_classes: int, name: str = "t") -> None:
    """Refuse labels that are not integers, or (when concrete) lie outside
    `[0, num_classes)`; the error names the argument `name`."""
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


mse = _make_loss(_mse, "mse", None)
"""Mean squared error, $J = \\frac{1}{m} \\sum_i \\frac{1}{2} \\sum_k (y_{ik} - t_{ik})^2$, with
$dJ/dy = (y - t) / m$; `t` of the output's shape. With one example it is the
$E = \\frac{1}{2} \\sum (t - o)^2$ of Rumelhart et al. (1986)."""


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
    if jnp.ndim(y) != 2 or y.shape[1] != 1:
        _checks.fail(
            "y",
            "one output unit, shape (m, 1), for binary cross-entropy "
            "(use multilabel_sigmoid_cross_entropy for several independent labels)",
            f"shape {y.shape}",
        )
    return _sigmoid_cross_entropy(y, t)


sigmoid_binary_cross_entropy = _make_loss(
    _binary_cross_entropy, "sigmoid_binary_cross_entropy", metrics.binary_accuracy
)
"""Binary cross-entropy on one logit per example, `y` of shape `(m, 1)` and `t` of 0 / 1
(or probabilities) of the same shape: $J = \\frac{1}{m} \\sum_i
[\\operatorname{softplus}(y_i) - y_i t_i]$, the sigmoid fused in, so
$dJ/dy = (\\sigma(y) - t) / m$ and the value stays finite for logits of any size."""
multilabel_sigmoid_cross_entropy = _make_loss(
    _sigmoid_cross_entropy, "multilabel_sigmoid_cross_entropy", metrics.multilabel_accuracy
)
"""Binary cross-entropy of `k` independent labels, logits `y` and 0 / 1 targets `t` of
shape `(m, k)`: the per-unit losses of
[`sigmoid_binary_cross_entropy`][purenet.losses.sigmoid_binary_cross_entropy] summed over
the labels and averaged over the batch, $dJ/dy = (\\sigma(y) - t) / m$."""


def _softmax_cross_entropy(y, t):
    _check_output(y)
    if jnp.ndim(y) != 2:
        _checks.fail(
            "y",
            "logits of shape (m, k) for softmax_cross_entropy "
            "(sequences (m, T, k): sequence_softmax_cross_entropy)",
            f"shape {y.shape}",
        )
    m, k = y.shape
    if jnp.ndim(t) == 1:
        if t.shape[0] != m:
            _checks.fail("t", f"{m} integer labels, one per row of y", f"shape {t.shape}")
        check_labels(t, k)
        t = (t[:, None] == jnp.arange(k)).astype(y.dtype)
    else:
        t = _check_same_shape(y, t)
    # The shift by the row maximum changes nothing (softmax is shift
    # invariant), so its gradient is stopped, as in jax.nn.log_softmax: jax.grad
    # of jnp.max divides by the count of entries equal to the maximum, which
    # was 0, giving inf, when XLA at optimisation level 0 recomputed y with
    # other rounding (measured on a chain of 1x1 dense layers).
    shifted = y - jax.lax.stop_gradient(jnp.max(y, axis=1, keepdims=True))
    e = jnp.exp(shifted)
    s = jnp.sum(e, axis=1, keepdims=True)
    log_p = shifted - jnp.log(s)
    p = e / s
    # d/dy of -sum_k t_k log p_k is p * sum_k t_k - t, which is p - t for rows
    # that sum to 1 (one-hot or probability targets).
    t_total = jnp.sum(t, axis=1, keepdims=True)
    return -jnp.sum(t * log_p) / m, (p * t_total - t) / m


softmax_cross_entropy = _make_loss(
    _softmax_cross_entropy, "softmax_cross_entropy", metrics.multiclass_accuracy
)
"""Softmax cross-entropy on logits `y` of shape `(m, k)`, with one-hot (or probability) rows
`t` of the same shape or integer labels of shape `(m,)`:
$J = -\\frac{1}{m} \\sum_i \\sum_k t_{ik} \\log \\operatorname{softmax}(y_i)_k$, the softmax
fused in, so $dJ/dy = (p - t) / m$ for rows of `t` that sum to 1 (Saito ch. 5.6.3)."""


# ------------------------------------------------------------- sequence losses

IGNORE_LABEL = -1
"""The target label of a padded (masked) step in
[`sequence_softmax_cross_entropy`][purenet.losses.sequence_softmax_cross_entropy] (PyTorch's
`ignore_index`)."""


def _sequence_targets(y, t):
    """`(labels, weights)` from `t`: integer labels `(m, T)` with
    [`IGNORE_LABEL`][purenet.losses.IGNORE_LABEL] at masked steps, or a pair `(labels, mask)`."""
    m, T, k = y.shape
    t, mask = metrics._sequence_labels(t, m, T)
    if _checks.is_concrete(t):
        arr = np.asarray(t)
        bad = arr[((arr < 0) & (arr != IGNORE_LABEL)) | (arr >= k)]
        if bad.size:
            _checks.fail("t", f"labels in [0, {k}) or {IGNORE_LABEL} (masked)", f"label {bad[0]}")
    weights = (t != IGNORE_LABEL).astype(y.dtype)
    if mask is not None:
        weights = weights * jnp.asarray(mask).astype(y.dtype)
    return jnp.where(t == IGNORE_LABEL, 0, t), weights


def _sequence_softmax_cross_entropy(y, t):
    """Softmax cross-entropy at every step of a sequence, averaged over the
    unmasked steps
    ([`sequence_softmax_cross_entropy`][purenet.losses.sequence_softmax_cross_entropy]).

    `y`: logits `(m, T, C)`. `t`: integer labels `(m, T)` in
    `[0, C)`, with [`IGNORE_LABEL`][purenet.losses.IGNORE_LABEL] (`-1`) at steps that do not
    count (padding), or a pair `(labels, mask)` with `mask` of shape
    `(m, T)`, 1 where a step counts and 0 where it does not (a step counts
    when its mask is 1 *and* its label is not `-1`). With `w_mt` these
    weights and `N = sum w_mt` (taken as 1 when every step is masked):

    ```text
    J = (1/N) sum_{m,t} w_mt * (-log softmax(y_mt)[t_mt])
    dJ/dy_mt = (w_mt / N) * (softmax(y_mt) - onehot(t_mt))
    ```

    the fused softmax-with-loss gradient of Saito ch. 5.6.3 at every step
    (PyTorch's `cross_entropy(..., ignore_index=-1, reduction="mean")`).

    Why a padding label: a mask has to travel with the targets, through
    `backprop(model, loss)(params, x, t)` and through `make_train`, which
    slices `x` and `t` into mini-batches by rows; integer labels with a
    padding value are one array that slices like any other. The pair form
    is there for direct calls with a separate mask.

    [`softmax_cross_entropy`][purenet.losses.softmax_cross_entropy] itself takes `(m, k)` logits
    only (it refuses `(m, T, C)`); this is its sequence form, normalised per step
    rather than per sequence.
    """
    _checks.float_array("y", y)
    _checks.ndim("y", y, 3)
    labels, weights = _sequence_targets(y, t)
    k = y.shape[-1]
    shifted = y - jax.lax.stop_gradient(jnp.max(y, axis=-1, keepdims=True))
    e = jnp.exp(shifted)
    s = jnp.sum(e, axis=-1, keepdims=True)
    log_p = shifted - jnp.log(s)
    one_hot = (labels[..., None] == jnp.arange(k)).astype(y.dtype)
    # Mean over the unmasked steps; with none (an all-padding batch) J = 0 and
    # dJ/dy = 0 rather than 0/0.
    count = jnp.maximum(jnp.sum(weights), 1.0)
    nll = -jnp.sum(one_hot * log_p, axis=-1)
    w = weights[..., None] / count
    return jnp.sum(weights * nll) / count, (e / s - one_hot) * w


sequence_softmax_cross_entropy = _make_loss(
    _sequence_softmax_cross_entropy, "sequence_softmax_cross_entropy", metrics.sequence_accuracy
)
"""Softmax cross-entropy at every step of a sequence: logits `(m, T, C)`, integer labels
`(m, T)` with [`IGNORE_LABEL`][purenet.losses.IGNORE_LABEL] at steps that do not count (or a
pair `(labels, mask)`), averaged over the steps that count; as PyTorch's
`cross_entropy(..., ignore_index=-1, reduction="mean")`. See the formula in the source's
`_sequence_softmax_cross_entropy`."""

LOSSES = {
    "mse": mse,
    "sigmoid_binary_cross_entropy": sigmoid_binary_cross_entropy,
    "multilabel_sigmoid_cross_entropy": multilabel_sigmoid_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "sequence_softmax_cross_entropy": sequence_softmax_cross_entropy,
}
"""The losses by name, as [`get`][purenet.losses.get] accepts them."""


def get(name: str | Loss) -> Loss:
    """A loss by name (or a [`Loss`][purenet.losses.Loss], returned as is)."""
    if isinstance(name, Loss):
        return name
    _checks.one_of("loss", name, LOSSES)
    return LOSSES[name]
