"""Assertions for your own tests: is this hand-written gradient right?

Three helpers, each comparing a hand-written derivative with two independent
referees, JAX's autodiff and central finite differences (as
[`purenet.gradcheck`][purenet.gradcheck] does), and each passing silently or raising
`AssertionError` with the per-leaf report and, for every leaf that fails,
its worst entry: the index and the three values side by side.

* [`assert_gradients`][purenet.testing.assert_gradients] `(model, loss, params, x, t)`: the gradient
  of `purenet.backprop` against `jax.grad` of `purenet.objective`.
* [`assert_layer`][purenet.testing.assert_layer] `(layer, params, x)`: one layer's `backward` with a
  random upstream gradient `dy`, against `jax.vjp` of its `forward`.
* [`assert_vjp`][purenet.testing.assert_vjp] `(f, vjp, *primals)`: any function with a
  hand-written vector-Jacobian product `vjp(*primals, cotangent)`, purenet
  or not.

Tolerances depend on the dtype as in [`purenet.gradcheck.TOLERANCES`][purenet.gradcheck.TOLERANCES]:
run these checks in float64 (the `x64` fixture of the pytest plugin,
[`purenet.testing.plugin`][purenet.testing.plugin], turns it on for one test), where a correct
gradient agrees with autodiff to ~1e-12 and with finite differences to ~1e-9.

Also here, imported on first use:

* [`purenet.testing.strategies`][purenet.testing.strategies]: hypothesis strategies for random
  architectures and matching inputs (needs `hypothesis`; the assertions
  above do not);
* [`purenet.testing.plugin`][purenet.testing.plugin]: the pytest plugin (fixtures `x64`,
  `prng_key`, `gradient_check`), registered by installing purenet.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks, gradcheck
from purenet.cost import Penalty, backprop, objective
from purenet.layers import Layer
from purenet.losses import Loss

__all__ = ["assert_gradients", "assert_layer", "assert_vjp", "plugin", "strategies"]

_SUBMODULES = ("plugin", "strategies")


def __getattr__(name: str):
    # purenet.testing.strategies needs hypothesis, an optional dependency:
    # import it only when asked for, so the assertions work without it.
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------- reports


def _tolerance(tolerance, dtype) -> dict:
    if tolerance is None:
        by_dtype = gradcheck.TOLERANCES
        return dict(by_dtype.get(jnp.dtype(dtype), by_dtype[jnp.dtype("float32")]))
    if not isinstance(tolerance, Mapping) or set(tolerance) != {"autodiff", "numerical"}:
        _checks.fail(
            "tolerance",
            'None or a dict {"autodiff": ..., "numerical": ...}',
            repr(tolerance),
        )
    return {key: _checks.positive(f"tolerance[{key!r}]", tolerance[key]) for key in tolerance}


def _worst_entries(manual, autodiff, numeric, tolerance: dict, referee: str) -> list[str]:
    """For each leaf beyond tolerance: its worst entry, with the three values."""
    lines, fallback = [], None
    paths = jax.tree_util.tree_flatten_with_path(manual)[0]
    for (path, m), a, n in zip(
        paths, jax.tree.leaves(autodiff), jax.tree.leaves(numeric), strict=True
    ):
        m, a, n = (np.asarray(v, np.float64) for v in (m, a, n))
        if m.size == 0:
            continue
        floor = gradcheck.REPORT_FLOOR
        vs_autodiff = np.abs(m - a) / np.maximum(floor, np.abs(m) + np.abs(a))
        vs_numeric = np.abs(m - n) / np.maximum(floor, np.abs(m) + np.abs(n))
        bad_autodiff = vs_autodiff.max() > tolerance["autodiff"]
        bad_numeric = gradcheck.norm_ratio(m, n) > tolerance["numerical"]
        errors, against = (vs_autodiff, referee) if bad_autodiff else (vs_numeric, "finite diff")
        index = np.unravel_index(np.argmax(errors), errors.shape)
        where = f"[{', '.join(str(int(i)) for i in index)}]" if m.ndim else ""
        line = (
            f"  {jax.tree_util.keystr(path) or '<root>'}{where}: hand-written {m[index]:.8g}, "
            f"{referee} {a[index]:.8g}, finite diff {n[index]:.8g} "
            f"(rel_error {errors[index]:.2e} against {against})"
        )
        if bad_autodiff or bad_numeric:
            lines.append(line)
        elif fallback is None or errors[index] > fallback[0]:
            fallback = (errors[index], line)
    if not lines and fallback is not None:
        lines.append(fallback[1])
    return ["worst entries:"] + lines


def _fail_unless_passed(what: str, report, manual, autodiff, numeric, referee: str) -> None:
    if report.passed:
        return
    details = _worst_entries(manual, autodiff, numeric, report.tolerance, referee)
    lines = [f"{what}: hand-written gradient is wrong", str(report), *details]
    raise AssertionError("\n".join(lines))


# ------------------------------------------------------------------ assertions


def assert_gradients(
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
    **ctx: Any,
) -> None:
    """Assert that `purenet.backprop(model, loss, penalty)` computes the gradient.

    Runs [`purenet.gradcheck.check_gradients`][purenet.gradcheck.check_gradients] (hand-written
    backprop against `jax.grad` of [`purenet.objective`][purenet.cost.objective] and against central
    differences over every parameter) and passes silently when it passes.

    Args:
      model: a [`purenet.layers.Layer`][purenet.layers.core.Layer].
      loss: a [`purenet.losses.Loss`][purenet.losses.Loss].
      params: the point; only `params` are differentiated.
      x: the input batch.
      t: the targets.
      penalty: an optional [`purenet.cost.Penalty`][purenet.cost.Penalty].
      eps: finite-difference step (default: cube root of the dtype's epsilon).
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype
        from [`purenet.gradcheck.TOLERANCES`][purenet.gradcheck.TOLERANCES].
      chunk_size: coordinates per vectorised step of the finite differences.
      **ctx: the forward context: `state=`, `train=`, `key=` (a fixed
        key fixes dropout's mask).

    Raises:
      AssertionError: the gradient disagrees with a referee; the message is
        the per-leaf report followed by each failing leaf's worst entry
        (index, hand-written value, `jax.grad`'s, finite differences').

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from purenet import layers as L, losses
      >>> from purenet.testing import assert_gradients
      >>> model = L.serial(L.dense(3), L.tanh(), L.dense(2))
      >>> _, params, _ = model.init(jax.random.key(0), (4,), jnp.float32)
      >>> x = jax.random.normal(jax.random.key(1), (5, 4), jnp.float32)
      >>> t = jnp.array([0, 1, 1, 0, 1])
      >>> assert_gradients(model, losses.softmax_cross_entropy, params, x, t)
    """
    report = gradcheck.check_gradients(
        model, loss, params, x, t,
        penalty=penalty, eps=eps, tolerance=tolerance, chunk_size=chunk_size, **ctx,
    )
    if report.passed:
        return
    # Only on failure: the three gradients again, for the worst entries.
    J = objective(model, loss, penalty)
    manual = backprop(model, loss, penalty)(params, x, t, **ctx)[1]
    autodiff = jax.grad(J)(params, x, t, **ctx)
    numeric = gradcheck.numerical_gradient(J, params, x, t, eps=eps, chunk_size=chunk_size, **ctx)
    _fail_unless_passed("model", report, manual, autodiff, numeric, "jax.grad")


def assert_layer(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    dy_key: jax.Array | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
    **ctx: Any,
) -> None:
    """Assert that `layer.backward` is the vector-Jacobian product of `layer.forward`.

    A random upstream gradient `dy` (standard normal, one array per output)
    is pushed through `layer.backward(params, cache, dy)`; the referees are
    `jax.vjp` of `layer.forward` and central differences of
    `sum(forward(params, x) * dy)`, with respect to `params` and every
    floating-point leaf of `x` (integer inputs such as token ids have no
    gradient and are left out). This is [`assert_vjp`][purenet.testing.assert_vjp] with
    `f(params, x) = layer.forward(params, x, **ctx)[0]`.

    Args:
      layer: a [`purenet.layers.Layer`][purenet.layers.core.Layer].
      params: the layer's params (from `layer.init`).
      x: an input batch (a tuple for layers with several inputs).
      dy_key: `jax.random` key for `dy` (default `jax.random.key(0)`).
        Named apart from `key`, which goes to the forward (dropout).
      eps: finite-difference step.
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype.
      **ctx: the forward context: `state=`, `train=True`, `key=`.

    Raises:
      AssertionError: with the per-leaf report and worst entries (leaves
        `['params']...` and `['x']`).
      ValueError: `layer.backward` returns cotangents whose structure or
        shapes differ from `(params, x)`.

    Examples:
      A new activation, softplus, as an elementwise layer with its derivative
      written by hand:

      >>> import jax, jax.numpy as jnp
      >>> from purenet import activations, layers as L
      >>> from purenet.testing import assert_layer
      >>> softplus = activations.Activation(
      ...     f=lambda x: jnp.logaddexp(x, 0.0),
      ...     df=lambda x, y: jax.nn.sigmoid(x))
      >>> layer = L.elementwise(softplus)
      >>> x = jax.random.normal(jax.random.key(0), (4, 3), jnp.float32)
      >>> assert_layer(layer, (), x)
    """
    if not isinstance(layer, Layer):
        _checks.fail_type("layer", "a purenet Layer", type(layer).__name__)

    def forward(params, x):
        return layer.forward(params, x, **ctx)[0]

    def backward(params, x, dy):
        _, cache = layer.forward(params, x, **ctx)
        return layer.backward(params, cache, dy)

    _assert_vjp(
        forward, backward, (params, x), ("params", "x"),
        key=dy_key, eps=eps, tolerance=tolerance, what="layer", who="layer.backward",
    )


def assert_vjp(
    f: Callable[..., Any],
    vjp: Callable[..., Any],
    *primals: Any,
    key: jax.Array | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
) -> None:
    """Assert that `vjp` is the vector-Jacobian product of `f`.

    For a random cotangent `ct` of `f`'s output (standard normal, drawn
    with `key`), `vjp(*primals, ct)` must equal `jax.vjp(f,
    *primals)[1](ct)` and the central-difference gradient of
    `sum(f(*primals) * ct)`, leaf by leaf, for every floating-point leaf of
    the primals (integer leaves are not differentiated; their entries in the
    result may be anything, `None` included).

    Args:
      f: `f(*primals) -> y`, any pytree of floating-point arrays.
      vjp: the hand-written `vjp(*primals, ct) -> tuple` of one cotangent
        per primal, each with its primal's structure and shapes.
      *primals: the point (pytrees of arrays).
      key: `jax.random` key for the cotangent (default `jax.random.key(0)`).
      eps: finite-difference step.
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype.

    Raises:
      AssertionError: with the per-leaf report (leaves named after `f`'s
        parameters) and each failing leaf's worst entry.
      ValueError: `vjp`'s result is not a tuple of one cotangent per primal
        with the primals' structure and shapes (the message names `vjp`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from purenet.testing import assert_vjp
      >>> def f(w, x):
      ...     return jnp.tanh(x @ w)
      >>> def f_vjp(w, x, ct):
      ...     delta = ct * (1 - jnp.tanh(x @ w) ** 2)
      ...     return x.T @ delta, delta @ w.T
      >>> w = jnp.array([[0.5, -1.0], [2.0, 0.1]], jnp.float32)
      >>> x = jnp.array([[1.0, 2.0], [0.3, -0.4], [0.0, 1.0]], jnp.float32)
      >>> assert_vjp(f, f_vjp, w, x)

      A wrong one (the transpose forgotten would not even type-check, so
      here the derivative of tanh is):

      >>> def wrong_vjp(w, x, ct):
      ...     return x.T @ ct, ct @ w.T
      >>> assert_vjp(f, wrong_vjp, w, x)  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      AssertionError: f: hand-written gradient is wrong
      ...
    """
    for name, fn in (("f", f), ("vjp", vjp)):
        if not callable(fn):
            _checks.fail_type(name, "a function", type(fn).__name__)
    if not primals:
        _checks.fail("primals", "at least one primal (the point to check at)", "none")
    _assert_vjp(
        f, vjp, primals, _names(f, len(primals)),
        key=key, eps=eps, tolerance=tolerance, what=_name_of(f), who="vjp",
    )


# ------------------------------------------------------------ the shared check


def _name_of(f) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _names(f, count: int) -> tuple[str, ...]:
    """Report names for the primals: `f`'s parameter names where they can be read."""
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    positional = [
        p.name for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= count and len(set(positional[:count])) == count:
        return tuple(positional[:count])
    return tuple(f"primals[{i}]" for i in range(count))


def _is_float(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _describe(tree) -> str:
    try:
        return str(jax.tree.map(lambda leaf: tuple(jnp.shape(leaf)), tree))
    except Exception:  # pragma: no cover - a description only
        return type(tree).__name__


def _assert_vjp(f, vjp, primals, names, *, key, eps, tolerance, what, who) -> None:
    flat = [jax.tree.flatten(p) for p in primals]
    float_mask = [[_is_float(leaf) for leaf in leaves] for leaves, _ in flat]
    point = [leaf for (leaves, _), mask in zip(flat, float_mask, strict=True)
             for leaf, is_float in zip(leaves, mask, strict=True) if is_float]
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
            name: treedef.unflatten([next(it) if m else None for m in mask])
            for name, (_, treedef), mask in zip(names, flat, float_mask, strict=True)
        }

    y = f(*primals)
    out_leaves, out_tree = jax.tree.flatten(y)
    if not out_leaves or not all(_is_float(leaf) for leaf in out_leaves):
        _checks.fail("f", "a function with floating-point outputs", _describe(y))
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, len(out_leaves))
    ct = out_tree.unflatten(
        [jax.random.normal(k, jnp.shape(leaf), jnp.result_type(leaf))
         for k, leaf in zip(keys, out_leaves, strict=True)]
    )

    manual = _float_cotangents(vjp(*primals, ct), flat, float_mask, who)
    _, pullback = jax.vjp(lambda leaves: f(*rebuild(leaves)), point)
    (autodiff,) = pullback(ct)

    def probe(float_leaves):
        out = jax.tree.leaves(f(*rebuild(float_leaves)))
        return sum(jnp.sum(a * b) for a, b in zip(out, jax.tree.leaves(ct), strict=True))

    numeric = gradcheck.numerical_gradient(probe, point, eps=eps)
    manual, autodiff, numeric = named(manual), named(autodiff), named(numeric)
    dtype = jnp.result_type(*point)
    report = gradcheck._report(manual, autodiff, numeric, _tolerance(tolerance, dtype))
    _fail_unless_passed(what, report, manual, autodiff, numeric, "jax.vjp")


def _float_cotangents(result, flat, float_mask, who: str) -> list:
    """The hand-written cotangents of the float leaves, after checking that
    `result` has one entry per primal with the primals' structure and shapes."""
    count = len(flat)
    expected = (
        f"a tuple of {count} cotangent{'s' if count > 1 else ''}, one per primal, "
        "each with its primal's structure and shapes"
    )
    if not isinstance(result, tuple | list) or len(result) != count:
        got = (f"{type(result).__name__} of length {len(result)}"
               if isinstance(result, tuple | list) else type(result).__name__)
        _checks.fail(who, expected, got)
    cotangents = []
    for i, ((leaves, treedef), mask, part) in enumerate(
        zip(flat, float_mask, result, strict=True)
    ):
        if not any(mask):
            continue
        try:
            parts = treedef.flatten_up_to(part)
        except (ValueError, TypeError):
            _checks.fail(who, expected, f"cotangent {i} of structure {_describe(part)} "
                         f"for a primal of structure {_describe(treedef.unflatten(leaves))}")
        for leaf, d, is_float in zip(leaves, parts, mask, strict=True):
            if not is_float:
                continue
            if not hasattr(d, "shape") or tuple(d.shape) != tuple(jnp.shape(leaf)):
                got = f"shape {tuple(d.shape)}" if hasattr(d, "shape") else type(d).__name__
                _checks.fail(who, expected,
                             f"{got} in cotangent {i} for a leaf of shape {tuple(jnp.shape(leaf))}")
            cotangents.append(d)
    return cotangents
