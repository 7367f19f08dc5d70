"""Argument validation shared by every public entry point.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong kind of object)
with a message of one shape: ``"<argument>: expected <what>, got <what was
given>"``, so the user sees which argument is wrong and how to fix it.

Two kinds of checks exist:

* static checks (shapes, dtypes, hyperparameters) work eagerly and under
  ``jit``, because shapes and dtypes are known at trace time;
* value checks (finiteness, label ranges) need concrete numbers, so they run
  only on concrete arrays and are skipped silently on tracers. The eager entry
  points (training loop, data loaders and splitters) call them before any work.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

SUPPORTED_FLOAT_DTYPES = (jnp.dtype("float32"), jnp.dtype("float64"))


def fail(name: str, expected: str, got) -> None:
    """Raise the library's standard ``ValueError`` for argument ``name``."""
    raise ValueError(f"{name}: expected {expected}, got {got}")


def is_concrete(x) -> bool:
    """True when ``x`` holds actual values (not a tracer inside ``jit``/``vmap``)."""
    return not isinstance(x, jax.core.Tracer)


def _is_real_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is an integer >= 1, else a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        fail(name, "a positive integer", repr(value))
    return int(value)


def number_in(name: str, value, low: float, high: float, *, low_open=False, high_open=False):
    """``value`` as a ``float`` if it lies in the interval, else a clear error.

    The interval is closed unless ``low_open`` / ``high_open`` is set; ``high``
    may be ``math.inf``.
    """
    if not _is_real_number(value) or not math.isfinite(float(value)):
        fail(name, "a finite real number", repr(value))
    v = float(value)
    below = v <= low if low_open else v < low
    above = v >= high if high_open else v > high
    if math.isnan(v) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open or high == math.inf else "]"
        fail(name, f"a number in {left}{low}, {high}{right}", repr(value))
    return v


def nonnegative(name: str, value) -> float:
    return number_in(name, value, 0.0, math.inf)


def positive(name: str, value) -> float:
    return number_in(name, value, 0.0, math.inf, low_open=True)


def float_array(name: str, x):
    """Check ``x`` is an array of a supported float dtype (float32/float64).

    Half precision (float16, bfloat16) is refused: the hand-written backward
    passes and the finite-difference checks are only verified in single and
    double precision, and several of them (softmax, BCE) lose all accuracy in
    half precision.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        fail(name, "an array", type(x).__name__)
    if jnp.dtype(dtype) not in SUPPORTED_FLOAT_DTYPES:
        fail(name, "float32 or float64 data (half precision is not supported)", str(dtype))
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
