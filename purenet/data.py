"""Data utilities: one-hot targets, standardization, splits and shuffled batches.

Contract and conventions:

* Batches are rows: `x` has shape `(m, ...)` (usually `(m, features)`)
  and the targets `t` have the same number of rows `m`.
* Every function is pure. Randomness comes only from an explicit
  `jax.random` key: the same key gives the same split or the same batches.
* The eager entry points check their arguments before any work and refuse
  NaN or inf data. Under `jit` the value checks (finiteness, label range)
  cannot run, because tracers hold no values; the shape checks still do.
* Arguments are checked in Python first; the work then runs in private jitted
  functions, compiled once per shape rather than once per eager operation.
* `batch_indices` and `batches` have static output shapes, so they run
  inside `jax.jit` and `jax.lax.scan` (`num_examples`, `batch_size`
  and `drop_remainder` must then be static Python values).

Batch gradient descent, stochastic gradient descent and mini-batch gradient
descent are one code path with a different batch size `k`: `k = m` (one
batch per epoch), `k = 1` (one example per step) and `1 < k < m`.

The rule when `k` does not divide `m` (`drop_remainder=True`, the
default): every epoch draws a fresh permutation of the `m` examples, cuts it
into `m // k` batches of `k` and drops the `m mod k` examples left at the
end of the permutation. The dropped examples are different ones each epoch, so
every example is still seen equally often in expectation, and every step sees
a batch of the same size, which keeps the shapes static under `jit` and the
gradient scale equal across steps. With `drop_remainder=False` the last batch
is filled up with the first examples of the same permutation instead, so every
example is seen at least once per epoch and a few are seen twice.

Example:

```python
import jax
from purenet import data, datasets

x, t = datasets.moons(jax.random.key(0), n=1000, noise=0.1)
train, validation, test = data.split(jax.random.key(1), x, t)
stats = data.standardize_fit(train[0])        # fitted on the training split only
x_train = data.standardize_apply(stats, train[0])
x_test = data.standardize_apply(stats, test[0])

# step(params, (x_batch, t_batch)) -> (params, loss) is one gradient step.
def epoch(params, key):                        # one scan step per epoch
    xb, tb = data.batches(key, x_train, train[1], batch_size=32)
    params, losses = jax.lax.scan(step, params, (xb, tb))   # one step per batch
    return params, losses.mean()

keys = jax.random.split(jax.random.key(2), num_epochs)
params, epoch_losses = jax.lax.scan(epoch, params, keys)
```
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet._checks import (
    SUPPORTED_FLOAT_DTYPES,
    all_finite,
    fail,
    float_array,
    is_concrete,
    positive_int,
)

__all__ = [
    "Standardizer",
    "batch_indices",
    "batches",
    "num_batches",
    "one_hot",
    "split",
    "split_sizes",
    "standardize_apply",
    "standardize_fit",
    "standardize_invert",
]


# --------------------------------------------------------------------------- checks


def _check_key(name: str, key) -> None:
    """Refuse anything that is not a single `jax.random` key.

    Typed keys (`jax.random.key(0)`) and legacy raw `uint32` keys
    (`jax.random.PRNGKey(0)`) are both accepted. The common mistake this
    catches is passing an integer seed.
    """
    dtype = getattr(key, "dtype", None)
    if dtype is not None:
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and jnp.ndim(key) == 0:
            return
        if dtype == jnp.uint32 and jnp.ndim(key) == 1:
            return
        got = f"an array of shape {tuple(jnp.shape(key))} and dtype {dtype}"
    else:
        got = repr(key)
    fail(name, "a single jax.random key such as jax.random.key(0)", got)


def _rows(name: str, x) -> int:
    """The number of rows of `x`; refuse scalars."""
    if jnp.ndim(x) < 1:
        fail(name, "an array with one row per example (at least 1 dimension)", f"shape {()}")
    return int(jnp.shape(x)[0])


def _same_rows(x, t) -> int:
    m = _rows("x", x)
    if m < 1:
        fail("x", "at least one row", f"shape {tuple(jnp.shape(x))}")
    if _rows("t", t) != m:
        fail("t", f"the same number of rows as x ({m})", f"shape {tuple(jnp.shape(t))}")
    return m


# ------------------------------------------------------------------------- one-hot


def one_hot(labels: jax.Array, num_classes: int, *, dtype: Any = jnp.float32) -> jax.Array:
    """One-hot rows for integer class labels.

    `one_hot(labels, C)[..., c]` is 1 where `labels == c` and 0 elsewhere,
    so integer labels of shape `(m,)` become targets of shape `(m, C)`.

    Eagerly, labels outside `[0, num_classes)` raise an error: an all-zero
    target row would silently train on nothing. Under `jit` the labels are not
    known, so such rows are filled with NaN instead, which makes the loss NaN
    rather than quietly wrong.

    Args:
      labels: integer array of any shape.
      num_classes: number of classes `C` (a positive integer).
      dtype: float32 (default) or float64.

    Returns:
      Array of shape `labels.shape + (num_classes,)` and the given dtype.

    Raises:
      ValueError: labels are not integers or lie outside `[0, num_classes)`.
    """
    num_classes = positive_int("num_classes", num_classes)
    if jnp.dtype(dtype) not in SUPPORTED_FLOAT_DTYPES:
        fail("dtype", "float32 or float64", repr(dtype))
    # Check concrete labels before converting them: jnp.asarray would wrap
    # int64 values beyond the int32 range into range.
    values = np.asarray(labels) if is_concrete(labels) else labels
    if not np.issubdtype(values.dtype, np.integer):
        fail("labels", "integer class labels", f"dtype {values.dtype}")
    if isinstance(values, np.ndarray) and values.size:
        outside = (values < 0) | (values >= num_classes)
        if outside.any():
            first = np.unravel_index(np.argmax(outside), values.shape)
            where = first[0] if values.ndim == 1 else tuple(int(i) for i in first)
            fail(
                "labels",
                f"integers in [0, {num_classes})",
                f"{values[first]} at index {where} "
                f"({int(outside.sum())} of {values.size} labels out of range)",
            )
    return _one_hot(jnp.asarray(labels), num_classes, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _one_hot(labels, num_classes, dtype):
    rows = labels[..., None] == jnp.arange(num_classes)
    inside = (labels >= 0) & (labels < num_classes)
    return jnp.where(inside[..., None], rows.astype(dtype), jnp.nan).astype(dtype)


# ------------------------------------------------------------------ standardization


class Standardizer(NamedTuple):
    """Per-feature statistics fitted on a training split.

    Attributes:
      mean: feature means, shape `x.shape[1:]`.
      std: feature standard deviations with 1 in place of 0 (constant
        features), shape `x.shape[1:]`.
    """

    mean: jax.Array
    std: jax.Array


def standardize_fit(x: jax.Array) -> Standardizer:
    """Fit per-feature mean and standard deviation on the rows of `x`.

    `std` is the population standard deviation (`ddof=0`, as in
    scikit-learn's `StandardScaler`). A feature whose training values are all
    equal has no scale to divide by: its `std` is stored as 1 and its `mean`
    as that value, so it standardizes to exactly 0 instead of NaN. Fit on the
    training split only and apply the same statistics to the validation and
    test splits, so that no information about them leaks into training.

    Args:
      x: float array of shape `(m, ...)` with `m >= 1` finite rows.

    Returns:
      A `Standardizer(mean, std)`, each of shape `x.shape[1:]`.
    """
    x = float_array("x", jnp.asarray(x))
    if _rows("x", x) < 1:
        fail("x", "at least one row", f"shape {x.shape}")
    all_finite("x", x)
    return _fit(x)


@jax.jit
def _fit(x) -> Standardizer:
    mean = jnp.mean(x, axis=0)
    std = jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=0))
    # Test equality rather than std == 0: the rounded mean of a constant
    # column can differ from its value by one ulp, giving a tiny nonzero std.
    constant = jnp.all(x == x[:1], axis=0) | (std == 0)
    return Standardizer(mean=jnp.where(constant, x[0], mean), std=jnp.where(constant, 1, std))


def _check_stats(stats: Standardizer, x) -> None:
    if not isinstance(stats, Standardizer):
        fail("stats", "a Standardizer from standardize_fit", type(stats).__name__)
    if jnp.shape(x)[1:] != jnp.shape(stats.mean):
        fail(
            "x",
            f"rows of shape {tuple(jnp.shape(stats.mean))} (as fitted)",
            f"shape {tuple(jnp.shape(x))}",
        )


def standardize_apply(stats: Standardizer, x: jax.Array) -> jax.Array:
    """Standardize `x` with fitted statistics: `(x - mean) / std`.

    Args:
      stats: the `Standardizer` returned by `standardize_fit`.
      x: float array of shape `(m,) + stats.mean.shape`.

    Returns:
      Array of the same shape and dtype as `x`.
    """
    x = float_array("x", jnp.asarray(x))
    _check_stats(stats, x)
    all_finite("x", x)
    return ((x - stats.mean) / stats.std).astype(x.dtype)


def standardize_invert(stats: Standardizer, z: jax.Array) -> jax.Array:
    """Undo `standardize_apply`: `z * std + mean`.

    Useful for regression targets standardized for training and reported in
    their original units.
    """
    z = float_array("z", jnp.asarray(z))
    _check_stats(stats, z)
    return (z * stats.std + stats.mean).astype(z.dtype)


# -------------------------------------------------------------------------- split


def _check_fractions(fractions) -> tuple[float, ...]:
    try:
        values = tuple(fractions)
    except TypeError:
        values = ()
    if (
        not values
        or not all(isinstance(f, numbers.Real) and not isinstance(f, bool) for f in values)
        or not all(math.isfinite(f) and f > 0 for f in values)
        # 1e-6 absorbs the rounding of decimal fractions such as 0.6 + 0.2 + 0.2.
        or abs(sum(values) - 1) > 1e-6
    ):
        fail("fractions", "positive numbers that sum to 1", repr(fractions))
    return tuple(float(f) for f in values)


def split(
    key: jax.Array,
    x: jax.Array,
    t: jax.Array,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
) -> tuple[tuple[jax.Array, jax.Array], ...]:
    """Shuffle the rows of `(x, t)` and cut them into parts.

    The part sizes come from rounding the cumulative fractions, so they add up
    to `m` and each differs from `fraction * m` by at most one example
    (see `split_sizes`).

    Args:
      key: a `jax.random` key; the same key gives the same split.
      x: inputs, shape `(m, ...)`.
      t: targets, shape `(m, ...)`.
      fractions: positive numbers that sum to 1, one per part. The default
        gives train / validation / test; `(0.8, 0.2)` gives train / test.

    Returns:
      A tuple with one `(x_part, t_part)` pair per fraction, in order. The
      parts are disjoint and together hold every row exactly once.

    Raises:
      ValueError: bad fractions, a part that would be empty, or `x` and
        `t` with different numbers of rows.
    """
    _check_key("key", key)
    fractions = _check_fractions(fractions)
    x, t = jnp.asarray(x), jnp.asarray(t)
    m = _same_rows(x, t)
    all_finite("x", x)
    all_finite("t", t)
    return _shuffle_and_cut(key, x, t, split_sizes(m, fractions))


def split_sizes(num_examples: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> tuple[int, ...]:
    """The part sizes `split` uses for `num_examples` rows.

    Part `i` ends at row `round(num_examples * (f_0 + ... + f_i))`: the sizes
    add up to `num_examples` and each differs from `f_i * num_examples` by at
    most one.

    Raises:
      ValueError: bad fractions, or a part that would be empty.
    """
    m = positive_int("num_examples", num_examples)
    fractions = _check_fractions(fractions)
    ends = [round(m * c) for c in np.cumsum(fractions)[:-1]] + [m]
    sizes = tuple(int(b - a) for a, b in zip([0] + ends[:-1], ends, strict=True))
    if min(sizes) < 1:
        fail(
            "fractions",
            f"fractions that leave every part at least one of the {m} rows",
            f"{fractions} (part sizes {sizes})",
        )
    return sizes


@functools.partial(jax.jit, static_argnames="sizes")
def _shuffle_and_cut(key, x, t, sizes):
    order = jax.random.permutation(key, x.shape[0])
    x, t = x[order], t[order]
    starts = np.cumsum((0,) + sizes[:-1])
    return tuple((x[a : a + n], t[a : a + n]) for a, n in zip(starts, sizes, strict=True))


# ------------------------------------------------------------------------ batching


def num_batches(num_examples: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """Batches per epoch: `m // k` when dropping the remainder, else `ceil(m / k)`."""
    m = positive_int("num_examples", num_examples)
    k = positive_int("batch_size", batch_size)
    if k > m:
        fail("batch_size", f"an integer in [1, {m}] (the number of examples)", repr(batch_size))
    return m // k if drop_remainder else -(-m // k)


def batch_indices(
    key: jax.Array, num_examples: int, batch_size: int, *, drop_remainder: bool = True
) -> jax.Array:
    """Row indices of one shuffled epoch, one row of the result per batch.

    A fresh permutation of `range(num_examples)` cut into batches of
    `batch_size`. When `batch_size` does not divide `num_examples`:

    * `drop_remainder=True` (default): the `m mod k` indices at the end of
      the permutation are dropped for this epoch. Every index appears at most
      once and, when `k` divides `m`, exactly once.
    * `drop_remainder=False`: the last batch is completed with the first
      `k - m mod k` indices of the same permutation, so every index appears at
      least once and at most twice.

    Pure in `key`; runs under `jit` and `scan` when `num_examples`,
    `batch_size` and `drop_remainder` are static.

    Args:
      key: a `jax.random` key, typically one per epoch.
      num_examples: `m`, a positive integer.
      batch_size: `k`, an integer in `[1, m]`. `k = m` is batch gradient
        descent, `k = 1` stochastic gradient descent.
      drop_remainder: the rule above.

    Returns:
      int32 array of shape `(num_batches, batch_size)`.
    """
    _check_key("key", key)
    num_batches(num_examples, batch_size, drop_remainder=drop_remainder)  # validates
    return _epoch_indices(key, num_examples, batch_size, drop_remainder)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _epoch_indices(key, num_examples, batch_size, drop_remainder):
    n = num_batches(num_examples, batch_size, drop_remainder=drop_remainder)
    order = jax.random.permutation(key, num_examples).astype(jnp.int32)
    if drop_remainder:
        order = order[: n * batch_size]
    else:
        order = jnp.concatenate([order, order[: n * batch_size - num_examples]])
    return order.reshape(n, batch_size)


def batches(
    key: jax.Array, x: jax.Array, t: jax.Array, batch_size: int, *, drop_remainder: bool = True
) -> tuple[jax.Array, jax.Array]:
    """One shuffled epoch of `(x, t)` stacked into batches for `lax.scan`.

    `batches(key, x, t, k)` equals `(x[idx], t[idx])` with
    `idx = batch_indices(key, m, k, drop_remainder=drop_remainder)`; see
    `batch_indices` for the rule when `k` does not divide `m`. The
    shuffled copy costs one epoch of memory; for data sets too large for that,
    scan over `batch_indices` and gather each batch inside the step.

    Args:
      key: a `jax.random` key, typically one per epoch.
      x: inputs, shape `(m, ...)`.
      t: targets, shape `(m, ...)`.
      batch_size: `k`, an integer in `[1, m]`.
      drop_remainder: see `batch_indices`.

    Returns:
      `(xb, tb)` of shapes `(num_batches, k) + x.shape[1:]` and
      `(num_batches, k) + t.shape[1:]`.
    """
    x, t = jnp.asarray(x), jnp.asarray(t)
    m = _same_rows(x, t)
    all_finite("x", x)
    all_finite("t", t)
    _check_key("key", key)
    num_batches(m, batch_size, drop_remainder=drop_remainder)  # validates
    return _gather_batches(key, x, t, batch_size, drop_remainder)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _gather_batches(key, x, t, batch_size, drop_remainder):
    idx = _epoch_indices(key, x.shape[0], batch_size, drop_remainder)
    return x[idx], t[idx]
