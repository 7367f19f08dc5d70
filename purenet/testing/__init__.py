"""Assertions for your own tests: is this hand-written gradient right?

Three helpers, each a thin wrapper over the one engine of
[`purenet.gradcheck`][purenet.gradcheck] (a hand-written derivative against
JAX's autodiff and central finite differences), passing silently or raising
`AssertionError` with the report: one line that says what is wrong, the
per-leaf table, and for every leaf that fails its worst entry, the index and
the three values side by side.

* [`assert_gradients`][purenet.testing.assert_gradients]
  `(model, loss, params, x, t)`: the gradient of `purenet.backprop` against
  `jax.grad` of `purenet.objective`
  ([`check_gradients`][purenet.gradcheck.check_gradients]).
* [`assert_layer`][purenet.testing.assert_layer] `(layer, params, x)`: one
  layer's `backward` with a random upstream gradient `dy`, against `jax.vjp`
  of its `forward` ([`check_layer`][purenet.gradcheck.check_layer]).
* [`assert_vjp`][purenet.testing.assert_vjp] `(f, vjp, *primals)`: any
  function with a hand-written vector-Jacobian product `vjp(*primals,
  cotangent)`, purenet or not ([`check_vjp`][purenet.gradcheck.check_vjp]).

When the check meets a NaN or an infinity, the message says "non-finite
values" and where they entered (the input, the params, the forward output,
the hand-written gradient or the referee) instead of blaming the gradient.

Tolerances depend on the dtype as in
[`TOLERANCES`][purenet.gradcheck.TOLERANCES]: run these checks in float64
(the `x64` fixture of the pytest plugin,
[`purenet.testing.plugin`][purenet.testing.plugin], turns it on for one
test), where a correct gradient agrees with autodiff to ~1e-12 and with
finite differences to ~1e-9. A check run in float32 says so in its message.

Also here, imported on first use:

* [`purenet.testing.strategies`][purenet.testing.strategies]: hypothesis
  strategies for random architectures and matching inputs (needs
  `hypothesis`; the assertions above do not);
* [`purenet.testing.plugin`][purenet.testing.plugin]: the pytest plugin
  (fixtures `x64`, `prng_key`, `gradient_check`), registered by installing
  purenet.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import jax

from purenet import gradcheck
from purenet.cost import Penalty
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


# --------------------------------------------------------------------- verdict


def _raise_unless_passed(report: gradcheck.GradientReport) -> None:
    """Pass silently, or raise `AssertionError`: the report's one-line summary
    (what is wrong, or where non-finite values entered), then the report."""
    if not report.passed:
        raise AssertionError(f"{report.summary}\n{report}")


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
    mask: jax.Array | None = None,
    **ctx: Any,
) -> None:
    """Assert that `purenet.backprop(model, loss, penalty)` computes the gradient.

    Runs [`check_gradients`][purenet.gradcheck.check_gradients] (hand-written
    backprop against `jax.grad` of `purenet.objective` and against central
    differences over every parameter) and passes silently when it passes.

    Args:
      model: a [`Layer`][purenet.layers.Layer].
      loss: a [`Loss`][purenet.losses.Loss].
      params: the point; only `params` are differentiated.
      x: the input batch.
      t: the targets.
      penalty: an optional [`Penalty`][purenet.cost.Penalty].
      eps: finite-difference step (default: cube root of the dtype's epsilon).
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype
        from [`TOLERANCES`][purenet.gradcheck.TOLERANCES].
      chunk_size: coordinates per vectorised step of the finite differences.
      mask: a padding mask, bool `(m, T)`, passed to the forward.
      **ctx: the rest of the forward context: `state=`, `train=`, `key=` (a
        fixed key fixes dropout's mask).

    Raises:
      AssertionError: the gradient disagrees with a referee (the message
        starts "model: hand-written gradient is wrong"), or non-finite values
        make the comparison impossible (it starts "model: non-finite values"
        and names where they entered); then the per-leaf report and each
        failing leaf's worst entry (index, hand-written value, `jax.grad`'s,
        finite differences').

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
    _raise_unless_passed(
        gradcheck.check_gradients(
            model,
            loss,
            params,
            x,
            t,
            penalty=penalty,
            eps=eps,
            tolerance=tolerance,
            chunk_size=chunk_size,
            mask=mask,
            **ctx,
        )
    )


def assert_layer(
    layer: Layer,
    params: Any,
    x: Any,
    *,
    dy_key: jax.Array | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
    mask: jax.Array | None = None,
    **ctx: Any,
) -> None:
    """Assert that `layer.backward` is the vector-Jacobian product of `layer.forward`.

    Runs [`check_layer`][purenet.gradcheck.check_layer]: a random upstream
    gradient `dy` (standard normal, one array per output) is pushed through
    `layer.backward(params, cache, dy)`; the referees are `jax.vjp` of
    `layer.forward` and central differences of `sum(forward(params, x) *
    dy)`, with respect to `params` and every floating-point leaf of `x`
    (integer inputs such as token ids have no gradient and are left out).
    This is [`assert_vjp`][purenet.testing.assert_vjp] with
    `f(params, x) = call_forward(layer, params, x, **ctx)[0]`.

    Args:
      layer: a [`Layer`][purenet.layers.Layer].
      params: the layer's params (from `layer.init`).
      x: an input batch (a tuple for layers with several inputs).
      dy_key: `jax.random` key for `dy` (default `jax.random.key(0)`).
        Named apart from `key`, which goes to the forward (dropout).
      eps: finite-difference step.
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype.
      mask: a padding mask, bool `(m, T)`, passed to the forward.
      **ctx: the rest of the forward context: `state=`, `train=True`, `key=`.

    Raises:
      AssertionError: with the report (leaves `['params']...` and `['x']`),
        after a first line that says "hand-written gradient is wrong" or
        "non-finite values" and where they entered.
      TypeError: `layer` is not a `Layer`.
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
    _raise_unless_passed(
        gradcheck.check_layer(
            layer, params, x, dy_key=dy_key, eps=eps, tolerance=tolerance, mask=mask, **ctx
        )
    )


def assert_vjp(
    f: Callable[..., Any],
    vjp: Callable[..., Any],
    *primals: Any,
    key: jax.Array | None = None,
    eps: float | None = None,
    tolerance: Mapping[str, float] | None = None,
    chunk_size: int = 16,
) -> None:
    """Assert that `vjp` is the vector-Jacobian product of `f`.

    Runs [`check_vjp`][purenet.gradcheck.check_vjp]: for a random cotangent
    `ct` of `f`'s output (standard normal, drawn with `key`),
    `vjp(*primals, ct)` must equal `jax.vjp(f, *primals)[1](ct)` and the
    central-difference gradient of `sum(f(*primals) * ct)`, leaf by leaf,
    for every floating-point leaf of the primals (integer leaves are not
    differentiated; their entries in the result may be anything, `None`
    included).

    Args:
      f: `f(*primals) -> y`, any pytree of floating-point arrays.
      vjp: the hand-written `vjp(*primals, ct) -> tuple` of one cotangent
        per primal, each with its primal's structure and shapes.
      *primals: the point (pytrees of arrays).
      key: `jax.random` key for the cotangent (default `jax.random.key(0)`).
      eps: finite-difference step.
      tolerance: `{"autodiff": ..., "numerical": ...}`; default by dtype.
      chunk_size: coordinates per vectorised step of the finite differences.

    Raises:
      AssertionError: with the report (leaves named after `f`'s parameters)
        and each failing leaf's worst entry, after a first line naming `f`.
      TypeError: `f` or `vjp` is not callable, or `key` not a random key.
      ValueError: no primals, or `vjp`'s result is not a tuple of one
        cotangent per primal with the primals' structure and shapes (the
        message names `vjp`).

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
      AssertionError: f: hand-written gradient is wrong (checked in float32, ...
      ...

      A NaN in the point is named, not blamed on the gradient:

      >>> assert_vjp(f, f_vjp, w, x.at[0, 0].set(jnp.nan))  # doctest: +ELLIPSIS
      Traceback (most recent call last):
      AssertionError: f: non-finite values (NaN or inf) entered at the primal x (1 of 6 entries)...
      ...
    """
    _raise_unless_passed(
        gradcheck.check_vjp(
            f, vjp, *primals, key=key, eps=eps, tolerance=tolerance, chunk_size=chunk_size
        )
    )
