"""Gradient checking: hand-written gradients against finite differences and `jax.grad`.

This is the only module of the library that uses autodiff, and only as a
referee. Three checks, by size of network:

* [`numerical_gradient`][purenet.gradcheck.numerical_gradient]: central differences over *every*
  coordinate, `(J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)` (Ng's course,
  "Gradient checking"), 2P cost evaluations for P parameters. Coordinates are
  processed in chunks by `lax.map(..., batch_size=chunk_size)` under `jit`:
  no Python loop over coordinates, memory bounded by the chunk. Use it for
  networks up to a few thousand parameters, or larger ones in float64 when
  minutes are affordable.
* [`directional_check`][purenet.gradcheck.directional_check]: for random unit directions `v`,
  compares `<grad, v>` with `(J(theta + eps v) - J(theta - eps v)) / (2 eps)`: two
  cost evaluations per direction, whatever P. Use it for large networks.
* [`check_layer`][purenet.gradcheck.check_layer]: one layer's backward against `jax.vjp` and finite
  differences, with a random upstream gradient `dy` (cs231n's
  `eval_numerical_gradient_array`).

[`check_gradients`][purenet.gradcheck.check_gradients] runs the whole comparison for a model and a
loss and returns a [`GradientReport`][purenet.gradcheck.GradientReport] with the worst error per
parameter leaf.

**Which check at which size** (measured on 2 CPU cores, float64, see
`benchmarks/README.md`): for a 784-256-10 network at batch 128 (P = 203,530)
the full check took 594 s with `chunk_size=16`, 1.31x its floor of 2P
forward passes (453 s); the directional check with 8 directions took 0.75 s
(most of it compilation). So: full check up to ~10^4 parameters (seconds),
directional check above that, the full check on large networks only when
minutes are affordable.

**What error to expect.** Compare in float64: there, hand-written and
`jax.grad` gradients agree to rounding (`rel_error` < 1e-9) and central
differences agree to `O(eps**2)` truncation plus `O(u / eps)` rounding
(course norm ratio < 1e-8 for smooth networks; kinks of ReLU can spoil single
coordinates if `theta +- eps` crosses one). In float32, finite differences
are too coarse for a full check: rounding `u / eps` with `u ~ 6e-8` limits
the norm ratio to about 1e-3 .. 1e-2 (the float32 tolerance below), so a
float32 check can catch a wrong formula but not a subtle one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks
from purenet.cost import Penalty, backprop, objective
from purenet.layers import Layer
from purenet.losses import Loss
from purenet.params import ravel

# Tolerances by dtype: elementwise rel_error against jax.grad, and the course's
# norm ratio against central differences.
#
# Reports compute rel_error with a floor of REPORT_FLOOR instead of cs231n's
# 1e-8: a gradient that is exactly zero in exact arithmetic (the bias of a
# layer feeding batch norm, say) comes out as +-1e-16 of rounding noise from
# both sides, which a 1e-8 floor would call a relative error of 1e-8.
REPORT_FLOOR = 1e-6
"""The floor of the denominator of [`rel_error`][purenet.gradcheck.rel_error] in reports
(cs231n uses 1e-8): an entry that is exactly zero in exact arithmetic comes out as
rounding noise of about 1e-16 from both sides, which a floor of 1e-8 would call a
relative error of 1e-8."""
TOLERANCES = {
    jnp.dtype("float64"): {"autodiff": 1e-9, "numerical": 1e-8},
    # float32: jax.grad itself is ~1e-4 (elementwise) away from the float64
    # gradient on a 784-50-10 network, so two correct float32 gradients can
    # differ by that much; a wrong formula is off by O(1).
    jnp.dtype("float32"): {"autodiff": 1e-3, "numerical": 2e-2},
}
"""Tolerances by dtype: `"autodiff"` bounds the elementwise
[`rel_error`][purenet.gradcheck.rel_error] against `jax.grad`, `"numerical"` the
[`norm_ratio`][purenet.gradcheck.norm_ratio] against central differences (Ng's course).
In float32 `jax.grad` itself is about 1e-4 away from the float64 gradient of a 784-50-10
network, so the bounds are loose there; a wrong formula is off by O(1) in either dtype.
Other dtypes use float32's."""


def default_eps(dtype: Any) -> float:
    """Step of central differences: the cube root of the machine epsilon, which
    balances truncation (`eps**2`) against rounding (`u / eps`): about 6e-6
    in float64 and 5e-3 in float32 (Nocedal & Wright, *Numerical Optimization*,
    sec. 8.1). Ng's course uses 1e-4."""
    return float(np.cbrt(np.finfo(jnp.dtype(dtype)).eps))


# ------------------------------------------------------------------ error metrics


def rel_error(a: Any, b: Any, tiny: float = 1e-8) -> float:
    """cs231n's relative error, `max |a - b| / max(tiny, |a| + |b|)`, elementwise
    then the maximum over all entries of all leaves of two pytrees."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.size:
            worst = max(
                worst, float(np.max(np.abs(x - y) / np.maximum(tiny, np.abs(x) + np.abs(y))))
            )
    return worst


def norm_ratio(a: Any, b: Any) -> float:
    """The course's check, `||a - b|| / ||a + b||` over all entries of two
    pytrees (0 when both are zero)."""
    x, y = np.asarray(ravel(a)[0], np.float64), np.asarray(ravel(b)[0], np.float64)
    den = np.linalg.norm(x + y)
    num = np.linalg.norm(x - y)
    return 0.0 if num == 0.0 else float(num / den) if den > 0 else float("inf")


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
      eps: the step; default [`default_eps`][purenet.gradcheck.default_eps] of the params' dtype.
      chunk_size: coordinates evaluated together (vmapped) inside a
        sequential `lax.map`; memory grows with it, and so does the batching
        of matmuls over different weights, which is slower than plain matmuls
        for large layers.

    Returns:
      A pytree like `params` holding `dF/dparams`.
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

    Args:
      f: `f(params, *args, **kwargs) -> scalar`.
      grads: the gradient to check (same structure as `params`).
      params: the point.
      key: a `jax.random` key for the directions (unit vectors, uniform on the
        sphere).
      num_directions: number of directions.
      eps: the step along each direction (default [`default_eps`][purenet.gradcheck.default_eps]).

    Returns:
      `(analytic, numeric)`: two float arrays of length `num_directions`,
      `<grads, v>` and the finite-difference slope along each `v`; pass
      them to [`rel_error`][purenet.gradcheck.rel_error].
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
class LeafError:
    """Worst errors for one parameter leaf."""

    path: str
    shape: tuple
    vs_autodiff: float
    vs_numerical: float


@dataclasses.dataclass(frozen=True)
class GradientReport:
    """Result of [`check_gradients`][purenet.gradcheck.check_gradients] (or
    [`check_layer`][purenet.gradcheck.check_layer]).

    Attributes:
      leaves: worst `rel_error` per leaf against `jax.grad` and against
        finite differences.
      autodiff_rel_error: worst `rel_error` against `jax.grad`, all leaves.
      numerical_norm_ratio: the course's `||a - b|| / ||a + b||` against
        finite differences.
      dtype: the dtype of the check.
      tolerance: `{"autodiff": ..., "numerical": ...}` used for `passed`.
    """

    leaves: tuple
    autodiff_rel_error: float
    numerical_rel_error: float
    numerical_norm_ratio: float
    dtype: str
    tolerance: dict

    @property
    def passed(self) -> bool:
        return (
            self.autodiff_rel_error <= self.tolerance["autodiff"]
            and self.numerical_norm_ratio <= self.tolerance["numerical"]
        )

    def __str__(self) -> str:
        width = max([len("leaf")] + [len(leaf.path) for leaf in self.leaves])
        lines = [
            f"gradient check ({self.dtype}): {'PASSED' if self.passed else 'FAILED'}",
            f"  {'leaf':<{width}}  {'shape':<12} {'vs jax.grad':>12} {'vs finite diff':>15}",
        ]
        for leaf in self.leaves:
            lines.append(
                f"  {leaf.path:<{width}}  {str(leaf.shape):<12} "
                f"{leaf.vs_autodiff:>12.2e} {leaf.vs_numerical:>15.2e}"
            )
        lines.append(
            f"  worst rel_error vs jax.grad {self.autodiff_rel_error:.2e} "
            f"(tolerance {self.tolerance['autodiff']:.0e}); "
            f"norm ratio vs finite differences {self.numerical_norm_ratio:.2e} "
            f"(tolerance {self.tolerance['numerical']:.0e})"
        )
        return "\n".join(lines)


def _report(manual, autodiff, numeric, tolerance=None) -> GradientReport:
    paths_leaves = jax.tree_util.tree_flatten_with_path(manual)[0]
    auto_leaves = jax.tree.leaves(autodiff)
    num_leaves = jax.tree.leaves(numeric)
    rows = tuple(
        LeafError(
            path=jax.tree_util.keystr(path) or "<root>",
            shape=tuple(np.shape(leaf)),
            vs_autodiff=rel_error(leaf, a, REPORT_FLOOR),
            vs_numerical=rel_error(leaf, n, REPORT_FLOOR),
        )
        for (path, leaf), a, n in zip(paths_leaves, auto_leaves, num_leaves, strict=True)
    )
    dtype = jnp.result_type(*jax.tree.leaves(manual))
    if tolerance is None:
        tolerance = TOLERANCES.get(jnp.dtype(dtype), TOLERANCES[jnp.dtype("float32")])
    return GradientReport(
        leaves=rows,
        autodiff_rel_error=rel_error(manual, autodiff, REPORT_FLOOR),
        numerical_rel_error=rel_error(manual, numeric, REPORT_FLOOR),
        numerical_norm_ratio=norm_ratio(manual, numeric),
        dtype=str(dtype),
        tolerance=dict(tolerance),
    )


def check_gradients(
    model: Layer,
    loss: Loss,
    params: Any,
    x: jax.Array,
    t: jax.Array,
    *,
    penalty: Penalty | None = None,
    eps: float | None = None,
    tolerance: float | None = None,
    chunk_size: int = 16,
    **ctx: Any,
) -> GradientReport:
    """Hand-written backprop against `jax.grad` and central differences.

    Only `params` are differentiated: non-gradient `state` (batch norm's
    running statistics) goes in `**ctx` and is held fixed, so a correct
    batch-norm model passes in both modes.

    Args:
      model, loss: the network and its loss.
      params, x, t: the point and the data.
      penalty: an optional `purenet.cost.Penalty`.
      eps: finite-difference step (default [`default_eps`][purenet.gradcheck.default_eps]).
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype
        from [`TOLERANCES`][purenet.gradcheck.TOLERANCES].
      chunk_size: see [`numerical_gradient`][purenet.gradcheck.numerical_gradient].
      **ctx: forward context: `state=`, `train=True`, `key=key` (a fixed
        dropout key makes the cost deterministic, hence checkable).

    Returns:
      A [`GradientReport`][purenet.gradcheck.GradientReport]; `print(report)` shows a table and
      `report.passed` the verdict.
    """
    J = objective(model, loss, penalty)
    grad_fn = backprop(model, loss, penalty)
    arrays, static = _split_static(ctx)
    # One compiled program for both (eagerly, every primitive would compile
    # on its own for each new shape).
    manual, autodiff = jax.jit(
        lambda p, x, t, a: (
            grad_fn(p, x, t, **a, **static)[1],
            jax.grad(lambda p: J(p, x, t, **a, **static))(p),
        )
    )(params, x, t, arrays)
    numeric = numerical_gradient(J, params, x, t, eps=eps, chunk_size=chunk_size, **ctx)
    return _report(manual, autodiff, numeric, tolerance)


def _is_float(x) -> bool:
    return all(jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in jax.tree.leaves(x))


def check_layer(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    dy_key: jax.Array,
    eps: float | None = None,
    tolerance: float | None = None,
    **ctx: Any,
) -> GradientReport:
    """One layer's backward against `jax.vjp` and finite differences.

    A random upstream gradient `dy` (normal, drawn with `dy_key`, one
    array per output for layers with several outputs) is pushed through
    `layer.backward`; the references are the vector-Jacobian product of
    `layer.forward` and the numerical gradient of `sum(forward * dy)`,
    with respect to both the params and the input `x` (reported as the leaf
    `dx`; a tuple for several inputs; left out for integer inputs such as
    token ids, which have no gradient). `**ctx` goes to the forward, e.g.
    `state=`, or `train=True, key=k` for dropout (a fixed key fixes the
    mask).
    """
    arrays, static = _split_static(ctx)
    with_x = _is_float(x)

    def out(point, arrays):
        return layer.forward(point["params"], point.get("dx", x), **arrays, **static)[0]

    @jax.jit
    def manual_and_autodiff(point, arrays):
        y, cache = layer.forward(point["params"], point.get("dx", x), **arrays, **static)
        leaves, treedef = jax.tree.flatten(y)
        keys = jax.random.split(dy_key, len(leaves))
        dy = treedef.unflatten(
            [jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, leaves, strict=True)]
        )
        dparams, dx = layer.backward(point["params"], cache, dy)
        manual = {"params": dparams, "dx": dx} if with_x else {"params": dparams}
        (autodiff,) = jax.vjp(lambda p: out(p, arrays), point)[1](dy)
        return manual, autodiff, dy

    def probe(point, dy, arrays):
        products = zip(jax.tree.leaves(out(point, arrays)), jax.tree.leaves(dy), strict=True)
        return sum(jnp.sum(a * b) for a, b in products)

    point = {"params": params, "dx": x} if with_x else {"params": params}
    manual, autodiff, dy = manual_and_autodiff(point, arrays)
    numeric = numerical_gradient(probe, point, dy, arrays, eps=eps)
    return _report(manual, autodiff, numeric, tolerance)
