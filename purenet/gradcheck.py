"""Gradient checking: hand-written gradients against `jax.vjp` and finite differences.

This is the only module of the library that uses autodiff, and only as a
referee. One engine, [`check_vjp`][purenet.gradcheck.check_vjp], checks a
hand-written vector-Jacobian product `vjp(*primals, ct)` of any function
`f(*primals)` against two referees that share no code with it: `jax.vjp` of
`f`, and central differences of $\\langle f(\\text{primals}), ct \\rangle$ over
every coordinate. The other checks are uses of it:

* [`check_layer`][purenet.gradcheck.check_layer]: one layer's `backward`,
  with a random upstream gradient `dy` (cs231n's
  `eval_numerical_gradient_array`);
* [`check_gradients`][purenet.gradcheck.check_gradients]: `purenet.backprop`
  of a model and a loss, the referee being `jax.grad` of `purenet.objective`;
* `purenet.testing`'s assertions, which raise `AssertionError` with the
  report when a check fails.

Each returns a [`GradientReport`][purenet.gradcheck.GradientReport]: one row
per leaf, the worst entry of each leaf, and the verdict.

The building blocks are public too:
[`numerical_gradient`][purenet.gradcheck.numerical_gradient] (central
differences $(J(\\theta + \\epsilon e_i) - J(\\theta - \\epsilon e_i)) / 2\\epsilon$
over every coordinate, Ng's course, "Gradient checking"; coordinates in chunks
by `lax.map(..., batch_size=chunk_size)` under `jit`, no Python loop),
[`directional_check`][purenet.gradcheck.directional_check] (two cost
evaluations per random direction, whatever the size), and the error measures
[`leaf_errors`][purenet.gradcheck.leaf_errors],
[`rel_error`][purenet.gradcheck.rel_error] and
[`norm_ratio`][purenet.gradcheck.norm_ratio].

**Which check at which size** (measured on 2 CPU cores, float64, see
`benchmarks/README.md`): for a 784-256-10 network at batch 128 (P = 203,530)
the full check took 594 s with `chunk_size=16`, 1.31x its floor of 2P
forward passes (453 s); the directional check with 8 directions took 0.75 s
(most of it compilation). So: full check up to ~10^4 parameters (seconds),
directional check above that.

**How a leaf's error is measured, and why.** The verdict uses, for each leaf
(`W`, `b`, `dx`, ...), the error of the whole leaf:

$$e = \\frac{\\lVert g - r \\rVert}{\\max(\\lVert r \\rVert,\\ c \\lVert R \\rVert)}$$

with $g$ the hand-written leaf, $r$ the referee's and $R$ the referee's whole
gradient (every leaf) ([`leaf_errors`][purenet.gradcheck.leaf_errors]).
cs231n's entrywise `max |a - b| / (|a| + |b|)` was the measure before; it
fails both ways in float32. Entries near zero are rounding noise on both
sides, so a correct float32 gradient reads up to 0.4 against `jax.vjp`
entrywise (a masked transformer block; 1.8e-5 per whole leaf); the
tolerance had to be 1e-3, which a gradient 1.001 times too large (off by
0.1 % in every entry, entrywise error 5e-4) passed. Per whole leaf, that bug
reads 1e-3 and correct gradients read ~1e-7: the float32 tolerance is now
1e-4 and catches it.

The floor $c$ differs by referee. Against autodiff, $c = 10^{-3}$
([`LEAF_FLOOR`][purenet.gradcheck.LEAF_FLOOR]): rounding is relative to each
value, and the floor only keeps a leaf whose exact gradient is zero (the
bias of a layer feeding batch norm: $\\pm 10^{-16}$ of rounding on both
sides) from reading as an error of order 1. Against central differences,
$c = 1$ ([`NUMERICAL_FLOOR`][purenet.gradcheck.NUMERICAL_FLOOR]): their error
is about the same for every coordinate ($u^{2/3}$ times the size of $f$, see
below), not relative to each partial derivative, so each leaf's share is
measured against the whole gradient. Relative to its own norm, a leaf of
Saito's 784-50-10 network (zero biases, weights of std 0.01; the
`gradient_check` experiment) read 1.3e-8 in float64 and 7.7e-2 in float32
for a correct gradient, beyond both tolerances; against the whole gradient,
4e-9 and 1.7e-2. A small leaf's bug still fails, through the autodiff referee.

**Tolerances** ([`TOLERANCES`][purenet.gradcheck.TOLERANCES], by dtype):
against autodiff 1e-9 in float64 and 1e-4 in float32; against central
differences 1e-8 and 5e-2. A central difference has truncation error
$O(\\epsilon^2)$ and rounding error $O(u / \\epsilon)$; with
$\\epsilon = u^{1/3}$ ([`default_eps`][purenet.gradcheck.default_eps]) both
are $O(u^{2/3})$, ~4e-11 in float64 and ~2.4e-5 in float32, times the
curvature and the size of $f$. Measured on purenet's layers (dense,
activations, batch and layer norm, conv, pooling, LSTM, GRU, masked
attention, a transformer block) and two MLPs, the worst correct leaf read
2.5e-14 against `jax.vjp` and 7.8e-10 against finite differences in
float64 (4.0e-9 for Saito's network of the `gradient_check` experiment);
1.8e-5 (the transformer block) and 1.6e-2 (ReLU, whose kinks a float32 step
of 5e-3 crosses) in float32; a 1.001x gradient read 1.0e-3 in both. So a float32 check catches a
wrong formula and a 0.1 % error through its autodiff referee, but its finite
differences only confirm the referee to a few percent: check in float64
(the `x64` fixture of `purenet.testing.plugin`). A report in float32 says
so.

**Non-finite values** are never compared away: an error that involves a NaN
or an infinity is reported as `nan` (never 0 and never inf), the check
fails, and the report names where the non-finite values first appear: the
input, the params (the primals), the forward output, the hand-written
gradient, the referee or the finite differences.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks
from purenet.cost import Penalty, backprop, objective
from purenet.layers import Layer, call_forward
from purenet.losses import Loss
from purenet.params import ravel

__all__ = [
    "LEAF_FLOOR",
    "NUMERICAL_FLOOR",
    "REPORT_FLOOR",
    "TOLERANCES",
    "GradientReport",
    "LeafError",
    "WorstEntry",
    "check_gradients",
    "check_layer",
    "check_vjp",
    "default_eps",
    "directional_check",
    "leaf_errors",
    "norm_ratio",
    "numerical_gradient",
    "rel_error",
    "tolerance_for",
]

TOLERANCES = {
    jnp.dtype("float64"): {"autodiff": 1e-9, "numerical": 1e-8},
    jnp.dtype("float32"): {"autodiff": 1e-4, "numerical": 5e-2},
}
"""Largest [`leaf_errors`][purenet.gradcheck.leaf_errors] a correct gradient
may have, by dtype: `"autodiff"` against `jax.vjp` / `jax.grad`, `"numerical"`
against central differences (see the module docstring for the measurements
behind them). Any dtype other than float64 gets the float32 row."""

LEAF_FLOOR = 1e-3
"""Floor of a leaf's error denominator against autodiff, as a fraction of the
norm of the referee's whole gradient (see
[`leaf_errors`][purenet.gradcheck.leaf_errors])."""

NUMERICAL_FLOOR = 1.0
"""The same floor against central differences: each leaf's error is measured
against the norm of the whole gradient, the scale of finite differences'
error (see the module docstring)."""

REPORT_FLOOR = 1e-6
"""Floor of $|a| + |b|$ in the entrywise [`rel_error`][purenet.gradcheck.rel_error]
that reports print next to the worst entries (cs231n uses 1e-8; a gradient
that is exactly zero comes out as $\\pm 10^{-16}$ of rounding from both sides,
which a 1e-8 floor would call a relative error of 1e-8)."""


def tolerance_for(dtype: Any) -> dict:
    """The row of [`TOLERANCES`][purenet.gradcheck.TOLERANCES] for `dtype`
    (float64's for float64, float32's for anything else), as a new dict.

    Examples:
      >>> from purenet.gradcheck import tolerance_for
      >>> tolerance_for("float32")
      {'autodiff': 0.0001, 'numerical': 0.05}
    """
    row = TOLERANCES.get(jnp.dtype(dtype), TOLERANCES[jnp.dtype("float32")])
    return dict(row)


def default_eps(dtype: Any) -> float:
    """Step of central differences: the cube root of the machine epsilon.

    It balances truncation ($\\epsilon^2$) against rounding ($u / \\epsilon$):
    about 6e-6 in float64 and 5e-3 in float32 (Nocedal & Wright, *Numerical
    Optimization*, sec. 8.1). Ng's course uses 1e-4.
    """
    return float(np.cbrt(np.finfo(jnp.dtype(dtype)).eps))


# ------------------------------------------------------------------ error metrics


def _as_float64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def _finite(*arrays) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def rel_error(a: Any, b: Any, tiny: float = 1e-8) -> float:
    """cs231n's relative error, $\\max |a - b| / \\max(\\text{tiny}, |a| + |b|)$.

    Entrywise, then the maximum over all entries of all leaves of two
    pytrees. Any non-finite entry makes the result `nan`: a comparison that
    involves a NaN or an infinity is undefined, never 0.

    Examples:
      >>> import jax.numpy as jnp
      >>> from purenet.gradcheck import rel_error
      >>> rel_error(jnp.array([1.0, 2.0]), jnp.array([1.0, 3.0]))
      0.2
      >>> rel_error(jnp.array([1.0, jnp.nan]), jnp.array([1.0, 2.0]))
      nan
    """
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = _as_float64(x), _as_float64(y)
        if not _finite(x, y):
            return float("nan")
        if x.size:
            errors = np.abs(x - y) / np.maximum(tiny, np.abs(x) + np.abs(y))
            worst = max(worst, float(np.max(errors)))
    return worst


def norm_ratio(a: Any, b: Any) -> float:
    """The course's check, $\\lVert a - b \\rVert / \\lVert a + b \\rVert$ over all
    entries of two pytrees: 0 when both are zero, `nan` when any entry is not
    finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from purenet.gradcheck import norm_ratio
      >>> norm_ratio(jnp.array([3.0, 0.0]), jnp.array([1.0, 0.0]))
      0.5
    """
    x, y = _as_float64(ravel(a)[0]), _as_float64(ravel(b)[0])
    if not _finite(x, y):
        return float("nan")
    num, den = np.linalg.norm(x - y), np.linalg.norm(x + y)
    return 0.0 if num == 0.0 else float(num / den) if den > 0 else float("inf")


def leaf_errors(manual: Any, reference: Any, floor: float = LEAF_FLOOR) -> tuple[float, ...]:
    """The error of each leaf of `manual` against the same leaf of `reference`.

    For a leaf $g$ against its reference $r$, with $R$ all of `reference`:

    $$e = \\frac{\\lVert g - r \\rVert}
             {\\max(\\lVert r \\rVert,\\ \\text{floor} \\cdot \\lVert R \\rVert)}$$

    (Euclidean norms over the whole leaf). This is the measure the checks
    judge by; the module docstring says why a whole leaf rather than the
    worst entry. A leaf is 0 when it equals its reference exactly, `inf`
    when its reference and the floor are both zero and it is not, and `nan`
    when any entry of either is not finite.

    Args:
      manual: the gradient to judge (a pytree).
      reference: the referee's, of the same structure.
      floor: the denominator's floor, a fraction of $\\lVert R \\rVert$.

    Returns:
      One float per leaf, in `jax.tree.leaves` order.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from purenet.gradcheck import leaf_errors
      >>> g = {"W": jnp.array([1.0, 2.0]), "b": jnp.array([0.0])}
      >>> [round(e, 6) for e in leaf_errors(jax.tree.map(lambda a: 1.001 * a, g), g)]
      [0.001, 0.0]
    """
    pairs = [
        (_as_float64(m), _as_float64(r))
        for m, r in zip(jax.tree.leaves(manual), jax.tree.leaves(reference), strict=True)
    ]
    finite = [_finite(m, r) for m, r in pairs]
    total = np.sqrt(
        sum(float(np.sum(r * r)) for (_, r), ok in zip(pairs, finite, strict=True) if ok)
    )
    errors = []
    for (m, r), ok in zip(pairs, finite, strict=True):
        if not ok:
            errors.append(float("nan"))
            continue
        num = float(np.linalg.norm(m - r))
        den = max(float(np.linalg.norm(r)), floor * total)
        errors.append(0.0 if num == 0.0 else num / den if den > 0 else float("inf"))
    return tuple(errors)


# ------------------------------------------------------------- finite differences


def _split_static(kwargs):
    """Keyword arguments that are arrays or the `state` pytree (traced under
    jit) and the rest (flags such as `train=True`, closed over as static
    Python values)."""
    arrays = {
        k: v for k, v in kwargs.items() if k == "state" or isinstance(v, jax.Array | np.ndarray)
    }
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    return arrays, static


def numerical_gradient(
    f: Callable,
    params: Any,
    *args: Any,
    eps: float | None = None,
    chunk_size: int = 16,
    **kwargs: Any,
) -> Any:
    """Central-difference gradient of a scalar function over every coordinate.

    Args:
      f: `f(params, *args, **kwargs) -> scalar`.
      params: the pytree to differentiate with respect to.
      *args: further arguments of `f`, held fixed.
      eps: the step; default [`default_eps`][purenet.gradcheck.default_eps] of
        the params' dtype.
      chunk_size: coordinates evaluated together (vmapped) inside a
        sequential `lax.map`; memory grows with it, and so does the batching
        of matmuls over different weights, which is slower than plain matmuls
        for large layers.
      **kwargs: further keyword arguments of `f`, held fixed.

    Returns:
      A pytree like `params` holding $\\partial f / \\partial \\text{params}$.

    Raises:
      ValueError: `chunk_size` is not a positive integer or `eps` not a
        positive number.

    Examples:
      >>> import jax.numpy as jnp
      >>> from purenet.gradcheck import numerical_gradient
      >>> g = numerical_gradient(lambda p: jnp.sum(p ** 2), jnp.array([1.0, -2.0]))
      >>> [round(float(v), 2) for v in g]
      [2.0, -4.0]
    """
    chunk_size = _checks.positive_int("chunk_size", chunk_size)
    theta, unravel = ravel(params)
    eps = default_eps(theta.dtype) if eps is None else _checks.positive("eps", eps)

    arrays, static = _split_static(kwargs)

    @jax.jit
    def all_partials(theta, args, arrays):
        def f_flat(th):
            return f(unravel(th), *args, **arrays, **static)

        def partial(i):
            step = jnp.zeros_like(theta).at[i].set(eps)
            return (f_flat(theta + step) - f_flat(theta - step)) / (2 * eps)

        return jax.lax.map(partial, jnp.arange(theta.size), batch_size=chunk_size)

    return unravel(all_partials(theta, args, arrays).astype(theta.dtype))


def directional_check(
    f: Callable,
    grads: Any,
    params: Any,
    *args: Any,
    key: jax.Array,
    num_directions: int = 8,
    eps: float | None = None,
    **kwargs: Any,
) -> tuple[jax.Array, jax.Array]:
    """Compare a gradient with central differences along random directions.

    For random unit directions $v$, $\\langle \\text{grads}, v \\rangle$ against
    $(f(\\theta + \\epsilon v) - f(\\theta - \\epsilon v)) / 2\\epsilon$: two
    evaluations of `f` per direction, whatever the number of parameters.

    Args:
      f: `f(params, *args, **kwargs) -> scalar`.
      grads: the gradient to check (same structure as `params`).
      params: the point.
      *args: further arguments of `f`, held fixed.
      key: a `jax.random` key for the directions (unit vectors, uniform on the
        sphere).
      num_directions: number of directions.
      eps: the step along each direction (default
        [`default_eps`][purenet.gradcheck.default_eps]).
      **kwargs: further keyword arguments of `f`, held fixed.

    Returns:
      `(analytic, numeric)`: two float arrays of length `num_directions`,
      $\\langle \\text{grads}, v \\rangle$ and the finite-difference slope along
      each $v$; pass them to [`rel_error`][purenet.gradcheck.rel_error].

    Raises:
      ValueError: `num_directions` is not a positive integer or `eps` not a
        positive number.
    """
    num_directions = _checks.positive_int("num_directions", num_directions)
    theta, unravel = ravel(params)
    g = ravel(grads)[0]
    eps = default_eps(theta.dtype) if eps is None else _checks.positive("eps", eps)
    v = jax.random.normal(key, (num_directions, theta.size), theta.dtype)
    v = v / jnp.linalg.norm(v, axis=1, keepdims=True)

    arrays, static = _split_static(kwargs)

    @jax.jit
    def slopes(theta, v, args, arrays):
        def slope(direction):
            plus = f(unravel(theta + eps * direction), *args, **arrays, **static)
            minus = f(unravel(theta - eps * direction), *args, **arrays, **static)
            return (plus - minus) / (2 * eps)

        return jax.lax.map(slope, v)

    return v @ g, slopes(theta, v, args, arrays)


# --------------------------------------------------------------------- reports


@dataclasses.dataclass(frozen=True)
class WorstEntry:
    """The entry of a leaf farthest from its referee, with the three values.

    Attributes:
      index: the entry's index in the leaf (`()` for a scalar leaf).
      manual: the hand-written value.
      autodiff: the autodiff referee's value.
      numerical: the finite-difference value.
      against: the referee it is farthest from: the autodiff referee's name
        (`"jax.vjp"`, `"jax.grad"`) or `"finite diff"`.
      rel_error: that entry's [`rel_error`][purenet.gradcheck.rel_error]
        against it (floor [`REPORT_FLOOR`][purenet.gradcheck.REPORT_FLOOR]).
    """

    index: tuple
    manual: float
    autodiff: float
    numerical: float
    against: str
    rel_error: float


@dataclasses.dataclass(frozen=True)
class LeafError:
    """One leaf of a [`GradientReport`][purenet.gradcheck.GradientReport].

    Attributes:
      path: the leaf's path, e.g. `"[0]['W']"` or `"['x']"`.
      shape: its shape.
      vs_autodiff: its [`leaf_errors`][purenet.gradcheck.leaf_errors]
        against the autodiff referee.
      vs_numerical: the same against central differences (with the floor
        [`NUMERICAL_FLOOR`][purenet.gradcheck.NUMERICAL_FLOOR]).
      worst: its [`WorstEntry`][purenet.gradcheck.WorstEntry] (`None` for an
        empty leaf).
    """

    path: str
    shape: tuple
    vs_autodiff: float
    vs_numerical: float
    worst: WorstEntry | None = None


def _within(error: float, tolerance: float) -> bool:
    return bool(error <= tolerance)  # False for nan


@dataclasses.dataclass(frozen=True)
class GradientReport:
    """Result of [`check_vjp`][purenet.gradcheck.check_vjp] and the checks built on it.

    `print(report)` shows one row per leaf, the worst entries and the
    verdict; `report.passed` is the verdict.

    Attributes:
      leaves: one [`LeafError`][purenet.gradcheck.LeafError] per
        differentiated leaf.
      autodiff_rel_error: the largest entrywise
        [`rel_error`][purenet.gradcheck.rel_error] against the autodiff
        referee, all leaves (floor [`REPORT_FLOOR`][purenet.gradcheck.REPORT_FLOOR]);
        shown, not judged.
      numerical_rel_error: the same against central differences.
      numerical_norm_ratio: the course's
        [`norm_ratio`][purenet.gradcheck.norm_ratio] against central
        differences, all leaves; shown, not judged.
      dtype: the dtype of the check (`"float32"` when any differentiated
        leaf or output is float32).
      tolerance: `{"autodiff": ..., "numerical": ...}`, the largest leaf
        errors that pass.
      autodiff_error: the largest leaf error against the autodiff referee
        (what `passed` judges; `nan` when non-finite values are involved).
      numerical_error: the largest leaf error against central differences.
      referee: the autodiff referee's name, `"jax.vjp"` or `"jax.grad"`.
      name: what was checked (`"layer"`, `"model"`, or `f`'s name), the
        start of [`summary`][purenet.gradcheck.GradientReport.summary].
      non_finite: where non-finite values appear, first where they entered
        (e.g. `("the input x (1 of 12 entries)", "the forward output (4 of 8
        entries)", "the hand-written gradient from layer.backward (4 of 20
        entries)", "the referee jax.vjp (4 of 20 entries)")`); empty when every
        value is finite.
    """

    leaves: tuple
    autodiff_rel_error: float
    numerical_rel_error: float
    numerical_norm_ratio: float
    dtype: str
    tolerance: dict
    autodiff_error: float = 0.0
    numerical_error: float = 0.0
    referee: str = "jax.vjp"
    name: str = "f"
    non_finite: tuple = ()

    @property
    def passed(self) -> bool:
        """Every value finite and every leaf within tolerance of both referees."""
        return (
            not self.non_finite
            and _within(self.autodiff_error, self.tolerance["autodiff"])
            and _within(self.numerical_error, self.tolerance["numerical"])
        )

    @property
    def float32_note(self) -> str:
        """For a check not run in float64, what it cannot see and how to run it in
        float64; `""` for a float64 check."""
        if self.dtype == "float64":
            return ""
        return (
            f"checked in {self.dtype}, where central differences agree only to "
            f"~{self.tolerance['numerical']:.0e}; for a tight check run it in float64, "
            "with the x64 fixture of purenet.testing.plugin"
        )

    @property
    def summary(self) -> str:
        """One line: what was checked and the verdict, e.g. `"layer: hand-written
        gradient is wrong"` or `"model: non-finite values (NaN or inf) in the
        input x ..."`."""
        if self.non_finite:
            first, *rest = self.non_finite
            text = f"{self.name}: non-finite values (NaN or inf) entered at {first}"
            if rest:
                text += f", then in {', '.join(rest)}"
            return text + "; gradients cannot be compared"
        verdict = "gradient is right" if self.passed else "hand-written gradient is wrong"
        note = f" ({self.float32_note})" if self.float32_note else ""
        return f"{self.name}: {verdict}{note}"

    def failing_leaves(self) -> tuple:
        """The leaves beyond tolerance of either referee (with a NaN error included)."""
        return tuple(
            leaf
            for leaf in self.leaves
            if not (
                _within(leaf.vs_autodiff, self.tolerance["autodiff"])
                and _within(leaf.vs_numerical, self.tolerance["numerical"])
            )
        )

    def __str__(self) -> str:
        width = max([len("leaf")] + [len(leaf.path) for leaf in self.leaves])
        referee = f"vs {self.referee}"
        status = "PASSED" if self.passed else "FAILED"
        lines = [f"gradient check ({self.dtype}): {status}"]
        if self.non_finite:
            lines.append(f"  non-finite values in {'; '.join(self.non_finite)}")
        if self.float32_note:
            lines.append(f"  {self.float32_note}")
        lines.append(f"  {'leaf':<{width}}  {'shape':<12} {referee:>12} {'vs finite diff':>15}")
        for leaf in self.leaves:
            lines.append(
                f"  {leaf.path:<{width}}  {str(leaf.shape):<12} "
                f"{leaf.vs_autodiff:>12.2e} {leaf.vs_numerical:>15.2e}"
            )
        lines.append(
            f"  worst leaf error {referee} {self.autodiff_error:.2e} "
            f"(tolerance {self.tolerance['autodiff']:.0e}); "
            f"vs finite differences {self.numerical_error:.2e} "
            f"(tolerance {self.tolerance['numerical']:.0e})"
        )
        lines.append(
            f"  entrywise rel_error {referee} {self.autodiff_rel_error:.2e}; "
            f"norm ratio vs finite differences {self.numerical_norm_ratio:.2e}"
        )
        shown = (
            self.failing_leaves()
            or sorted(
                (leaf for leaf in self.leaves if leaf.worst is not None),
                key=lambda leaf: -np.nan_to_num(leaf.vs_autodiff, nan=np.inf),
            )[:1]
        )
        shown = [leaf for leaf in shown if leaf.worst is not None]
        if shown:
            lines.append("worst entries:")
        for leaf in shown:
            w = leaf.worst
            where = f"[{', '.join(str(i) for i in w.index)}]" if w.index else ""
            lines.append(
                f"  {leaf.path}{where}: hand-written {w.manual:.8g}, "
                f"{self.referee} {w.autodiff:.8g}, finite diff {w.numerical:.8g} "
                f"(rel_error {w.rel_error:.2e} against {w.against})"
            )
        return "\n".join(lines)


def _worst_entry(m, a, n, against_autodiff: bool, referee: str) -> WorstEntry | None:
    """The entry with the largest difference from the referee the leaf fails
    (a non-finite one first: `np.argmax` picks the first NaN)."""
    if m.size == 0:
        return None
    r = a if against_autodiff else n
    with np.errstate(invalid="ignore"):
        difference = np.abs(m - r)
        difference = np.where(np.isfinite(difference), difference, np.nan)
    index = np.unravel_index(int(np.argmax(difference)), m.shape)
    mi, ri = float(m[index]), float(r[index])
    with np.errstate(invalid="ignore"):
        entry = abs(mi - ri) / max(REPORT_FLOOR, abs(mi) + abs(ri))
    if not np.isfinite(entry):
        entry = float("nan")
    return WorstEntry(
        index=tuple(int(i) for i in index),
        manual=mi,
        autodiff=float(a[index]),
        numerical=float(n[index]),
        against=referee if against_autodiff else "finite diff",
        rel_error=float(entry),
    )


def _report(manual, autodiff, numeric, *, dtype, tolerance, referee, name, non_finite):
    """The report of three gradient pytrees of one structure."""
    paths_leaves = jax.tree_util.tree_flatten_with_path(manual)[0]
    auto_leaves = [_as_float64(a) for a in jax.tree.leaves(autodiff)]
    num_leaves = [_as_float64(n) for n in jax.tree.leaves(numeric)]
    vs_autodiff = leaf_errors(manual, autodiff)
    vs_numerical = leaf_errors(manual, numeric, NUMERICAL_FLOOR)
    rows = []
    for (path, m), a, n, ea, en in zip(
        paths_leaves, auto_leaves, num_leaves, vs_autodiff, vs_numerical, strict=True
    ):
        # Against autodiff unless only the finite differences fail.
        only_numerical = _within(ea, tolerance["autodiff"]) and not _within(
            en, tolerance["numerical"]
        )
        rows.append(
            LeafError(
                path=jax.tree_util.keystr(path) or "<root>",
                shape=tuple(np.shape(m)),
                vs_autodiff=ea,
                vs_numerical=en,
                worst=_worst_entry(_as_float64(m), a, n, not only_numerical, referee),
            )
        )

    def worst(errors):
        return float("nan") if any(np.isnan(errors)) else max(errors, default=0.0)

    return GradientReport(
        leaves=tuple(rows),
        autodiff_rel_error=rel_error(manual, autodiff, REPORT_FLOOR),
        numerical_rel_error=rel_error(manual, numeric, REPORT_FLOOR),
        numerical_norm_ratio=norm_ratio(manual, numeric),
        dtype=str(dtype),
        tolerance=dict(tolerance),
        autodiff_error=worst(vs_autodiff),
        numerical_error=worst(vs_numerical),
        referee=referee,
        name=name,
        non_finite=tuple(non_finite),
    )


# ------------------------------------------------------------------ arguments


def _tolerance(tolerance, dtype) -> dict:
    if tolerance is None:
        return tolerance_for(dtype)
    if not isinstance(tolerance, Mapping) or set(tolerance) != {"autodiff", "numerical"}:
        _checks.fail(
            "tolerance", 'None or a dict {"autodiff": ..., "numerical": ...}', repr(tolerance)
        )
    return {key: _checks.positive(f"tolerance[{key!r}]", tolerance[key]) for key in tolerance}


def _check_key(name: str, key) -> None:
    """`key` is a `jax.random` key: a typed key, or a raw `uint32` array of shape `(2,)`."""
    ok = hasattr(key, "dtype") and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (jnp.dtype(key.dtype) == jnp.uint32 and tuple(jnp.shape(key)) == (2,))
    )
    if not ok:
        _checks.fail_type(name, "a jax.random key (jax.random.key(seed))", _checks._kind(key))


def _name_of(f) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _names(f, count: int) -> tuple[str, ...]:
    """Report names for the primals: `f`'s parameter names where they can be read."""
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= count and len(set(positional[:count])) == count:
        return tuple(positional[:count])
    return tuple(f"primals[{i}]" for i in range(count))


def _describe(tree) -> str:
    try:
        return str(jax.tree.map(lambda leaf: tuple(jnp.shape(leaf)), tree))
    except Exception:  # pragma: no cover - a description only
        return type(tree).__name__


def _count_non_finite(tree) -> tuple[int, int]:
    """`(non-finite entries, entries)` over the floating-point leaves of `tree`."""
    bad = total = 0
    for leaf in jax.tree.leaves(tree):
        if leaf is None or not _checks.is_float(leaf):
            continue
        arr = np.asarray(leaf)
        bad += int(arr.size - np.count_nonzero(np.isfinite(arr)))
        total += int(arr.size)
    return bad, total


def _where_non_finite(places) -> tuple[str, ...]:
    found = []
    for label, tree in places:
        bad, total = _count_non_finite(tree)
        if bad:
            found.append(f"{label} ({bad} of {total} {'entry' if total == 1 else 'entries'})")
    return tuple(found)


def _float_cotangents(result, flat, float_mask, who: str) -> list:
    """The hand-written cotangents of the float leaves, after checking that
    `result` has one entry per primal with the primals' structure and shapes."""
    count = len(flat)
    expected = (
        f"a tuple of {count} cotangent{'s' if count > 1 else ''}, one per primal, "
        "each with its primal's structure and shapes"
    )
    if not isinstance(result, tuple | list) or len(result) != count:
        if isinstance(result, tuple | list):
            got = f"{type(result).__name__} of length {len(result)}"
        elif hasattr(result, "shape"):  # a traced array under jit: its shape, not its type
            got = f"an array of shape {tuple(result.shape)}"
        else:
            got = type(result).__name__
        _checks.fail(who, expected, got)
    cotangents = []
    for i, ((leaves, treedef), mask, part) in enumerate(zip(flat, float_mask, result, strict=True)):
        if not any(mask):
            continue
        try:
            parts = treedef.flatten_up_to(part)
        except (ValueError, TypeError):
            _checks.fail(
                who,
                expected,
                f"cotangent {i} of structure {_describe(part)} "
                f"for a primal of structure {_describe(treedef.unflatten(leaves))}",
            )
        for leaf, d, is_float in zip(leaves, parts, mask, strict=True):
            if not is_float:
                continue
            if not hasattr(d, "shape") or tuple(d.shape) != tuple(jnp.shape(leaf)):
                got = f"shape {tuple(d.shape)}" if hasattr(d, "shape") else type(d).__name__
                _checks.fail(
                    who,
                    expected,
                    f"{got} in cotangent {i} for a leaf of shape {tuple(jnp.shape(leaf))}",
                )
            cotangents.append(jnp.asarray(d, jnp.result_type(leaf)))
    return cotangents


# --------------------------------------------------------------------- the engine


def _engine(
    f,
    vjp,
    primals,
    names,
    *,
    labels,
    inputs=(),
    key,
    cotangent=None,
    eps,
    tolerance,
    chunk_size,
    referee,
    who,
    name,
) -> GradientReport:
    """`vjp` against `jax.vjp` of `f` and central differences, at `primals`.

    `labels[i]` names primal `i` in a non-finite message, `inputs` are
    further `(label, tree)` pairs checked for non-finite values first (data
    held fixed); `cotangent="ones"` replaces the random cotangent by ones
    (a scalar loss: its gradient).
    """
    flat = [jax.tree.flatten(p) for p in primals]
    float_mask = [[_checks.is_float(leaf) for leaf in leaves] for leaves, _ in flat]
    point = [
        leaf
        for (leaves, _), mask in zip(flat, float_mask, strict=True)
        for leaf, is_float in zip(leaves, mask, strict=True)
        if is_float
    ]
    if not point:
        _checks.fail("primals", "at least one floating-point array to differentiate", "none")

    def rebuild(float_leaves):
        it = iter(float_leaves)
        return tuple(
            treedef.unflatten([next(it) if m else x for x, m in zip(leaves, mask, strict=True)])
            for (leaves, treedef), mask in zip(flat, float_mask, strict=True)
        )

    def named(float_leaves):
        """The float leaves as `{name: primal tree}`, integer leaves left out."""
        it = iter(float_leaves)
        return {
            n: treedef.unflatten([next(it) if m else None for m in mask])
            for n, (_, treedef), mask in zip(names, flat, float_mask, strict=True)
        }

    out = jax.eval_shape(lambda leaves: f(*rebuild(leaves)), point)
    out_leaves, out_tree = jax.tree.flatten(out)
    if not out_leaves or not all(_checks.is_float(leaf) for leaf in out_leaves):
        _checks.fail("f", "a function with floating-point outputs", _describe(out))
    if cotangent == "ones":
        cotangent = out_tree.unflatten([jnp.ones(leaf.shape, leaf.dtype) for leaf in out_leaves])
    else:
        keys = jax.random.split(key, len(out_leaves))
        cotangent = out_tree.unflatten(
            [
                jax.random.normal(k, leaf.shape, leaf.dtype)
                for k, leaf in zip(keys, out_leaves, strict=True)
            ]
        )

    @jax.jit
    def hand_written_and_referee(point, ct):
        y, pullback = jax.vjp(lambda leaves: f(*rebuild(leaves)), point)
        (autodiff,) = pullback(ct)
        manual = _float_cotangents(vjp(*rebuild(point), ct), flat, float_mask, who)
        return y, manual, autodiff

    def probe(float_leaves, ct):
        y = jax.tree.leaves(f(*rebuild(float_leaves)))
        return sum(jnp.sum(a * b) for a, b in zip(y, jax.tree.leaves(ct), strict=True))

    y, manual, autodiff = hand_written_and_referee(point, cotangent)
    numeric = numerical_gradient(probe, point, cotangent, eps=eps, chunk_size=chunk_size)
    non_finite = _where_non_finite(
        [
            *inputs,
            *zip(labels, primals, strict=True),
            ("the forward output", y),
            (f"the hand-written gradient from {who}", manual),
            (f"the referee {referee}", autodiff),
            ("the finite differences", numeric),
        ]
    )
    dtypes = {jnp.dtype(jnp.result_type(leaf)) for leaf in [*point, *out_leaves]}
    dtype = (
        jnp.dtype("float64")
        if dtypes == {jnp.dtype("float64")}
        else min(dtypes, key=lambda d: d.itemsize)
    )
    return _report(
        named(manual),
        named(autodiff),
        named(numeric),
        dtype=dtype,
        tolerance=_tolerance(tolerance, dtype),
        referee=referee,
        name=name,
        non_finite=non_finite,
    )


def check_vjp(
    f: Callable[..., Any],
    vjp: Callable[..., Any],
    *primals: Any,
    key: jax.Array | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
    chunk_size: int = 16,
) -> GradientReport:
    """A hand-written vector-Jacobian product against `jax.vjp` and finite differences.

    For a random cotangent `ct` of `f`'s output (standard normal, drawn with
    `key`), `vjp(*primals, ct)` is compared, leaf by leaf, with
    `jax.vjp(f, *primals)[1](ct)` and with the central-difference gradient of
    $\\langle f(\\text{primals}), ct \\rangle$, for every floating-point leaf of
    the primals (integer leaves such as token ids are not differentiated;
    their entries in `vjp`'s result may be anything, `None` included). Both
    computations run under one `jax.jit`.

    Args:
      f: `f(*primals) -> y`, any pytree of floating-point arrays.
      vjp: the hand-written `vjp(*primals, ct) -> tuple` of one cotangent
        per primal, each with its primal's structure and shapes.
      *primals: the point (pytrees of arrays).
      key: `jax.random` key for the cotangent (default `jax.random.key(0)`).
      eps: finite-difference step (default
        [`default_eps`][purenet.gradcheck.default_eps]).
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype from
        [`TOLERANCES`][purenet.gradcheck.TOLERANCES].
      chunk_size: see [`numerical_gradient`][purenet.gradcheck.numerical_gradient].

    Returns:
      A [`GradientReport`][purenet.gradcheck.GradientReport], its leaves named
      after `f`'s parameters (`['w']`, `['x']['h']`, ...).

    Raises:
      TypeError: `f` or `vjp` is not callable, or `key` is not a
        `jax.random` key.
      ValueError: no primals, no floating-point leaf among them, `f` has a
        non-floating-point output, `tolerance` is not a dict of two positive
        numbers, or `vjp`'s result is not a tuple of one cotangent per primal
        with the primals' structure and shapes (the message names `vjp`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from purenet.gradcheck import check_vjp
      >>> def f(w, x):
      ...     return jnp.tanh(x @ w)
      >>> def f_vjp(w, x, ct):
      ...     delta = ct * (1 - jnp.tanh(x @ w) ** 2)
      ...     return x.T @ delta, delta @ w.T
      >>> w = jnp.array([[0.5, -1.0], [2.0, 0.1]], jnp.float32)
      >>> x = jnp.array([[1.0, 2.0], [0.3, -0.4], [0.0, 1.0]], jnp.float32)
      >>> report = check_vjp(f, f_vjp, w, x)
      >>> report.passed, report.dtype, [leaf.path for leaf in report.leaves]
      (True, 'float32', ["['w']", "['x']"])
    """
    for arg, fn in (("f", f), ("vjp", vjp)):
        if not callable(fn):
            _checks.fail_type(arg, "a function", type(fn).__name__)
    if not primals:
        _checks.fail("primals", "at least one primal (the point to check at)", "none")
    key = jax.random.key(0) if key is None else key
    _check_key("key", key)
    names = _names(f, len(primals))
    return _engine(
        f,
        vjp,
        primals,
        names,
        labels=[f"the primal {n}" for n in names],
        key=key,
        eps=eps,
        tolerance=tolerance,
        chunk_size=chunk_size,
        referee="jax.vjp",
        who="vjp",
        name=_name_of(f),
    )


def _context(mask, ctx):
    """The forward's keyword context, with `mask` when one is given."""
    return ctx if mask is None else {**ctx, "mask": mask}


def check_layer(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    dy_key: jax.Array | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
    mask: jax.Array | None = None,
    **ctx: Any,
) -> GradientReport:
    """One layer's backward against `jax.vjp` and finite differences.

    [`check_vjp`][purenet.gradcheck.check_vjp] with
    `f(params, x) = call_forward(layer, params, x, mask=mask, **ctx)[0]` and the
    hand-written `vjp(params, x, dy) = layer.backward(params, cache, dy)`:
    a random upstream gradient `dy` (normal, drawn with `dy_key`, one array
    per output for layers with several outputs) is pushed through
    `layer.backward`, and the result is compared for the params and the
    input `x` (the leaves `['params']...` and `['x']`; integer inputs such as
    token ids have no gradient and are left out).

    Args:
      layer: a [`Layer`][purenet.layers.Layer].
      params: its params.
      x: an input batch (a tuple for several inputs).
      dy_key: `jax.random` key for `dy` (default `jax.random.key(0)`); named
        apart from `key`, which goes to the forward (dropout).
      eps: finite-difference step.
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype.
      mask: a padding mask for the forward, bool `(m, T)`, held fixed.
      **ctx: the rest of the forward context: `state=`, or `train=True,
        key=k` for dropout (a fixed key fixes the mask).

    Returns:
      A [`GradientReport`][purenet.gradcheck.GradientReport].

    Raises:
      TypeError: `layer` is not a `Layer`, or `dy_key` not a random key.
      ValueError: `layer.backward` returns cotangents whose structure or
        shapes differ from `(params, x)`.
    """
    if not isinstance(layer, Layer):
        _checks.fail_type("layer", "a purenet Layer", type(layer).__name__)
    dy_key = jax.random.key(0) if dy_key is None else dy_key
    _check_key("dy_key", dy_key)
    ctx = _context(mask, ctx)

    def forward(params, x):
        return call_forward(layer, params, x, **ctx)[0]

    def backward(params, x, dy):
        _, cache = call_forward(layer, params, x, **ctx)
        return layer.backward(params, cache, dy)

    return _engine(
        forward,
        backward,
        (params, x),
        ("params", "x"),
        labels=("the params", "the input x"),
        inputs=[(f"the {k} argument", v) for k, v in ctx.items() if k in ("state", "mask")],
        key=dy_key,
        eps=eps,
        tolerance=tolerance,
        chunk_size=16,
        referee="jax.vjp",
        who="layer.backward",
        name="layer",
    )


def check_gradients(
    model: Layer,
    loss: Loss,
    params: Any,
    x: Any,
    t: Any,
    *,
    penalty: Penalty | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
    chunk_size: int = 16,
    mask: jax.Array | None = None,
    **ctx: Any,
) -> GradientReport:
    """Hand-written backprop against `jax.grad` and central differences.

    [`check_vjp`][purenet.gradcheck.check_vjp] of the scalar cost
    `J(params) = objective(model, loss, penalty)(params, x, t, **ctx)` with
    cotangent 1, the hand-written side being `backprop(model, loss,
    penalty)`. Only `params` are differentiated: `x`, `t`, the `mask` and
    non-gradient `state` (batch norm's running statistics, in `**ctx`) are
    held fixed, so a correct batch-norm model passes in both modes.

    Args:
      model: the network.
      loss: its [`Loss`][purenet.losses.Loss].
      params: the point.
      x: the input batch.
      t: the targets.
      penalty: an optional [`Penalty`][purenet.cost.Penalty].
      eps: finite-difference step (default
        [`default_eps`][purenet.gradcheck.default_eps]).
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype
        from [`TOLERANCES`][purenet.gradcheck.TOLERANCES].
      chunk_size: see [`numerical_gradient`][purenet.gradcheck.numerical_gradient].
      mask: a padding mask, bool `(m, T)`, passed to the forward.
      **ctx: the rest of the forward context: `state=`, `train=True`,
        `key=key` (a fixed dropout key makes the cost deterministic, hence
        checkable).

    Returns:
      A [`GradientReport`][purenet.gradcheck.GradientReport] whose leaves are
      the params' (`[0]['W']`, ...) and whose referee is `jax.grad`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from purenet import layers as L, losses
      >>> from purenet.gradcheck import check_gradients
      >>> model = L.serial(L.dense(3), L.tanh(), L.dense(2))
      >>> _, params, _ = model.init(jax.random.key(0), (4,), jnp.float32)
      >>> x = jax.random.normal(jax.random.key(1), (5, 4), jnp.float32)
      >>> t = jnp.array([0, 1, 1, 0, 1])
      >>> report = check_gradients(model, losses.softmax_cross_entropy, params, x, t)
      >>> report.passed, report.referee
      (True, 'jax.grad')
    """
    ctx = _context(mask, ctx)
    J = objective(model, loss, penalty)
    grad_fn = backprop(model, loss, penalty)

    def cost(params):
        return J(params, x, t, **ctx)

    def hand_written(params, ct):
        return (jax.tree.map(lambda g: ct * g, grad_fn(params, x, t, **ctx)[1]),)

    report = _engine(
        cost,
        hand_written,
        (params,),
        ("params",),
        labels=("the params",),
        inputs=[
            ("the input x", x),
            ("the targets t", t),
            *[(f"the {k} argument", v) for k, v in ctx.items() if k in ("state", "mask")],
        ],
        key=None,
        cotangent="ones",
        eps=eps,
        tolerance=tolerance,
        chunk_size=chunk_size,
        referee="jax.grad",
        who="backprop",
        name="model",
    )
    # Leaves as the params' own paths: [0]['W'], not ['params'][0]['W'].
    leaves = tuple(
        dataclasses.replace(leaf, path=leaf.path.removeprefix("['params']") or "<root>")
        for leaf in report.leaves
    )
    return dataclasses.replace(report, leaves=leaves)
