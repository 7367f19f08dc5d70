"""Argument validation shared by every public entry point.

Every check raises an error with a message of one shape, `"<argument>:
expected <what>, got <what was given>"`, so the user sees which argument is
wrong and how to fix it. Two exceptions, as Python's own built-ins use them:

* `TypeError` (`fail_type`) for the wrong kind of object: a string
  where a number or an array is needed, a bool where a number is needed, an
  object that is not an optimizer;
* `ValueError` (`fail`) for the right kind of object with a bad value:
  a negative learning rate, a NaN, an array of the wrong shape or dtype.

Two kinds of checks exist:

* static checks (types, shapes, dtypes) work eagerly and under `jit`,
  because shapes and dtypes are known at trace time;
* value checks (a hyperparameter's range, finiteness, label ranges) need
  concrete numbers. They run on concrete values and are skipped on traced
  ones (a `jax.core.Tracer` inside `jit`, `vmap`, `grad` or
  `scan`), which pass through unchanged. That is what lets one `jax.vmap`
  sweep a learning rate, a weight penalty or a clipping threshold, while a
  nonsense Python number still fails at once, before any work is done.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_FLOAT_DTYPES = (jnp.dtype("float32"), jnp.dtype("float64"))


def fail(name: str, expected: str, got) -> None:
    """Raise the library's standard `ValueError` (a bad value) for argument `name`."""
    raise ValueError(f"{name}: expected {expected}, got {got}")


def fail_type(name: str, expected: str, got) -> None:
    """Raise the library's standard `TypeError` (a wrong kind of object) for `name`."""
    raise TypeError(f"{name}: expected {expected}, got {got}")


def is_float(x) -> bool:
    """True when the array (or scalar) `x` has a floating-point or complex dtype:
    the leaves that have a gradient (integer ids and bools have none)."""
    return bool(jnp.issubdtype(jnp.result_type(x), jnp.inexact))


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer inside `jit`/`vmap`)."""
    return not isinstance(x, jax.core.Tracer)


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _kind(value) -> str:
    """How a wrong object is described in a message: its type, and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else type(value).__name__


def describe(value) -> str:
    """How a params entry is described in a message: `"a dict with keys ['W', 'b']"`,
    `"a tuple of length 2"`, `"()"`, `"an array of shape (3, 4) and dtype float32"`,
    else its type's name."""
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of length {len(value)}" if value else "()"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)} and dtype {jnp.dtype(value.dtype).name}"
    return type(value).__name__


def positive_int(name: str, value) -> int:
    """`value` as an `int` if it is an integer >= 1, else a clear error.

    A non-number (a string, `None`, a bool) raises `TypeError`; a number
    that is not a whole number >= 1 (`0`, `-3`, `2.5`) `ValueError`.
    """
    if not _is_real_number(value):
        fail_type(name, "a positive integer", _kind(value))
    if not isinstance(value, numbers.Integral) or value < 1:
        fail(name, "a positive integer", repr(value))
    return int(value)


def _scalar_array(name: str, value):
    """Static checks on an array used as a number: a 0-d array of a real dtype."""
    dtype = jnp.dtype(value.dtype)
    if dtype == jnp.dtype(bool) or not (
        jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    ):
        fail_type(name, "a real number", f"an array of dtype {dtype}")
    if jnp.ndim(value) != 0:
        fail(name, "a scalar", f"an array of shape {tuple(jnp.shape(value))}")


def number_in(name: str, value, low: float, high: float, *, low_open=False, high_open=False):
    """`value` if it lies in the interval, else a clear error.

    The interval is closed unless `low_open` / `high_open` is set; `high`
    may be `math.inf`.

    Args:
      name: the argument's name, for the message.
      value: a Python real number, or a 0-d array of a real dtype (a traced
        one included).
      low, high: the interval's ends.
      low_open, high_open: exclude that end.

    Returns:
      A concrete value (a Python number, a NumPy scalar, a concrete 0-d array)
      as a Python `float`; a traced value (inside `jit`, `vmap`,
      `grad`) unchanged, after checking only its shape and dtype, since its
      value is not known yet.

    Raises:
      TypeError: `value` is not a number (a string, a bool, `None`, an
        array of a non-real dtype).
      ValueError: `value` is a non-scalar array, NaN or infinite, or
        outside the interval.
    """
    if hasattr(value, "dtype") and not _is_real_number(value):
        _scalar_array(name, value)
        if not is_concrete(value):
            return value  # traced: its value is checked by nobody, by design
    elif not _is_real_number(value):
        fail_type(name, "a real number", _kind(value))
    v = float(value)
    got = repr(value) if type(value) in (int, float) else repr(v)
    if not math.isfinite(v):
        fail(name, "a finite real number", got)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        fail(name, f"a number in {left}{low}, {high}{right}", got)
    return v


def nonnegative(name: str, value):
    """`value` if it is a real number `>= 0` (see `number_in` for traced values)."""
    return number_in(name, value, 0.0, math.inf)


def positive(name: str, value):
    """`value` if it is a real number `> 0` (see `number_in` for traced values)."""
    return number_in(name, value, 0.0, math.inf, low_open=True)


def array(name: str, x):
    """Check that `x` is an array (anything with a `shape` and a `dtype`).

    Raises:
      TypeError: `x` is a list, a string, `None` or another non-array.
    """
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        fail_type(name, "an array", _kind(x))
    return x


def float_array(name: str, x):
    """Check `x` is an array of a supported float dtype (float32/float64).

    Half precision (float16, bfloat16) is refused: the hand-written backward
    passes and the finite-difference checks are only verified in single and
    double precision, and several of them (softmax, BCE) lose all accuracy in
    half precision.

    Raises:
      TypeError: `x` is not an array.
      ValueError: its dtype is not float32 or float64.
    """
    array(name, x)
    if jnp.dtype(x.dtype) not in SUPPORTED_FLOAT_DTYPES:
        fail(name, "float32 or float64 data (half precision is not supported)", str(x.dtype))
    return x


def ndim(name: str, x, n: int) -> None:
    if jnp.ndim(x) != n:
        fail(name, f"an array with {n} dimensions", f"shape {tuple(jnp.shape(x))}")


def all_finite(name: str, x) -> None:
    """Eager-only: refuse NaN or inf values (skipped on tracers)."""
    if is_concrete(x):
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            fail(name, "finite values", f"{bad} NaN or inf entries")


def one_of(name: str, value, options) -> None:
    if value not in options:
        fail(name, f"one of {sorted(options)}", repr(value))


def same_tree(name: str, tree, reference, reference_name: str = "params") -> None:
    """A `ValueError` unless `tree` has the structure and leaf shapes of `reference`.

    Static (structure and shapes only), so it works under `jit` and `vmap`.
    """
    treedef = jax.tree.structure(reference)
    if jax.tree.structure(tree) != treedef:
        fail(
            name,
            f"a pytree with the structure of {reference_name}, {treedef}",
            jax.tree.structure(tree),
        )
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(reference), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            fail(name, f"an array of shape {jnp.shape(b)} like {reference_name}", jnp.shape(a))
