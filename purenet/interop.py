"""purenet's hand-written backward inside anyone's JAX program.

[`custom_vjp`][purenet.interop.custom_vjp] turns a purenet [`Layer`][purenet.layers.core.Layer] into
a plain function `f(params, x)` (or a [`Loss`][purenet.losses.Loss] into
`J(y, t)`) registered with `jax.custom_vjp`: its forward is the
layer's `forward` and its reverse-mode rule is the layer's hand-written
`backward`. A user may then write their own loss, their own training loop,
`jax.jit`, `jax.vmap` or `jax.lax.scan` around it, and `jax.grad`
differentiates through purenet's backward pass, not through an autodiff trace
of the forward:

```python
f = purenet.custom_vjp(model)            # f(params, x, state=(), key=None, mask=None)
J = lambda params, x, t: my_loss(f(params, x), t)
grads = jax.grad(J)(params, x, t)        # calls model.backward
```

**What is differentiated.** `params` and `x` (every floating-point leaf)
get the cotangents `(dparams, dx)` of `backward(params, cache, dy)`. The
forward context is not differentiated:

* `train` is a Python `bool`, fixed when the function is made
  (`custom_vjp(model, train=True)`): it changes which program runs, so it
  is static, as `jax.jit`'s `static_argnames` would make it.
* `state` (batch norm's running statistics) and `key` (a
  `jax.random` key for dropout) are arrays, possibly traced under `jit`,
  `vmap` or `scan`. `jax.custom_vjp`'s `nondiff_argnums` is for
  hashable, static values only (JAX's "custom_vjp and nondiff_argnums update
  guide"), so both are ordinary arguments of the `jax.custom_vjp` function
  whose cotangent the rule leaves empty: `jax.grad` with respect to them
  gives zeros for `state` and float0 zeros for a typed key, as if they had
  passed through `jax.lax.stop_gradient`.
* Integer leaves of `x` (token ids for an embedding) have no gradient:
  their cotangent is JAX's float0 zeros (what `jax.grad(...,
  allow_int=True)` returns), whatever the layer's backward says about them.

* `mask` (a padding mask, bool) is an ordinary argument as well; being
  boolean it gets float0 zeros.

The forward's cache becomes the residuals of the custom rule as it is: by the
layer contract a cache is a pytree of arrays whose static parts (shapes,
flags, as `purenet.layers.Static`) live in its tree structure, so the
backward sees exactly the cache the forward built. `params` are checked
against the model (at trace time) before the forward runs.

For a [`Loss`][purenet.losses.Loss], `J(y, t)` is the loss's `value` and
its derivative for `y` is `g * grad(y, t)` (`g` the scalar cotangent);
the target `t` is not differentiated (zeros, or float0 for integer
labels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from purenet import _checks
from purenet.layers import Layer, call_forward, checked_call
from purenet.losses import Loss

__all__ = ["custom_vjp"]


def _input_cotangent(x, dx):
    """`dx` for floating-point leaves of `x`, `None` (float0 zeros) for
    integer ones."""
    leaves, treedef = jax.tree.flatten(x)
    if all(_checks.is_float(leaf) for leaf in leaves):
        return dx
    if not any(_checks.is_float(leaf) for leaf in leaves):
        return None
    parts = treedef.flatten_up_to(dx)
    return treedef.unflatten(
        [d if _checks.is_float(leaf) else None for leaf, d in zip(leaves, parts, strict=True)]
    )


def _layer_function(model: Layer, train: bool, return_state: bool) -> Callable:
    @jax.custom_vjp
    def apply(params, x, state, key, mask):
        y, cache = call_forward(model, params, x, state=state, train=train, key=key, mask=mask)
        if return_state:
            return y, model.update_state(state, cache)
        return y

    def apply_fwd(params, x, state, key, mask):
        y, cache = call_forward(model, params, x, state=state, train=train, key=key, mask=mask)
        out = (y, model.update_state(state, cache)) if return_state else y
        # x rides along (only its float leaves matter) to shape its cotangent.
        return out, (params, cache, x)

    def apply_bwd(residuals, cotangent):
        params, cache, x = residuals
        dy = cotangent[0] if return_state else cotangent  # the new state: not differentiated
        dparams, dx = model.backward(params, cache, dy)
        return dparams, _input_cotangent(x, dx), None, None, None

    apply.defvjp(apply_fwd, apply_bwd)

    def f(params, x, state=(), key=None, mask=None):
        return checked_call(model, params, x, lambda: apply(params, x, state, key, mask))

    f.__doc__ = (
        f"A purenet model as a jax.custom_vjp function (train={train}"
        f"{', returns (y, new_state)' if return_state else ''}): "
        "f(params, x, state=(), key=None, mask=None); jax.grad runs the hand-written backward."
    )
    return f


def _loss_function(loss: Loss) -> Callable:
    @jax.custom_vjp
    def J(y, t):
        return loss.value(y, t)

    def J_fwd(y, t):
        value, dy = loss.value_and_grad(y, t)
        return value, dy

    def J_bwd(dy, g):
        return g * dy, None  # the target is not differentiated

    J.defvjp(J_fwd, J_bwd)

    def value(y, t):
        return J(y, t)

    value.__doc__ = (
        "A purenet loss as a jax.custom_vjp function J(y, t); jax.grad for y "
        "runs the hand-written gradient."
    )
    return value


def custom_vjp(
    model_or_loss: Layer | Loss, *, train: bool = False, return_state: bool = False
) -> Callable[..., Any]:
    """Wrap a purenet layer or loss as a `jax.custom_vjp` function.

    Args:
      model_or_loss: a [`purenet.layers.Layer`][purenet.layers.core.Layer] (any layer or a whole
        model built with `serial` and the combinators) or a
        [`purenet.losses.Loss`][purenet.losses.Loss].
      train: for a layer, the forward's mode (`True` for dropout's masks and
        batch norm's batch statistics). Static: make one function per mode.
      return_state: for a layer, also return the new non-gradient state
        `model.update_state(state, cache)` (batch norm's running
        statistics after a training forward). It is an output that is not
        differentiated: its cotangent is dropped.

    Returns:
      For a layer, `f(params, x, state=(), key=None, mask=None) -> y` (or
      `(y, new_state)`), whose VJP with respect to `params` and `x` is
      the layer's `backward`; `state`, `key` and `mask` are held constant (see
      the module docstring). For a loss, `J(y, t) -> scalar` whose
      gradient for `y` is the loss's hand-written `grad`.

    Raises:
      TypeError: `model_or_loss` is neither a Layer nor a Loss, or `train`
        / `return_state` is not a bool.
      ValueError: `train` or `return_state` given for a loss.

    Examples:
      A purenet network under `jax.grad` with a loss written in plain
      `jnp`:

      >>> import jax, jax.numpy as jnp
      >>> import purenet
      >>> from purenet import layers as L
      >>> model = L.serial(L.dense(4), L.tanh(), L.dense(1))
      >>> _, params, _ = model.init(jax.random.key(0), (3,))
      >>> f = purenet.custom_vjp(model)
      >>> x, t = jnp.ones((5, 3), jnp.float32), jnp.zeros((5, 1), jnp.float32)
      >>> def huber(params, x, t):
      ...     r = jnp.abs(f(params, x) - t)
      ...     return jnp.mean(jnp.where(r < 1, 0.5 * r**2, r - 0.5))
      >>> grads = jax.jit(jax.grad(huber))(params, x, t)
      >>> jax.tree.map(jnp.shape, grads)
      ({'W': (3, 4), 'b': (4,)}, (), {'W': (4, 1), 'b': (1,)})

      A loss: `jax.grad` of `J` is the loss's own `grad`.

      >>> J = purenet.custom_vjp(purenet.losses.mse)
      >>> y = jnp.array([[1.0], [3.0]], jnp.float32)
      >>> jax.grad(J)(y, jnp.zeros((2, 1)))
      Array([[0.5],
             [1.5]], dtype=float32)
    """
    for name, flag in (("train", train), ("return_state", return_state)):
        if not isinstance(flag, bool):
            _checks.fail_type(name, "a bool", type(flag).__name__)
    if isinstance(model_or_loss, Layer):
        return _layer_function(model_or_loss, train, return_state)
    if isinstance(model_or_loss, Loss):
        for name, flag in (("train", train), ("return_state", return_state)):
            if flag:
                _checks.fail(name, "False for a Loss (a loss has no mode and no state)", flag)
        return _loss_function(model_or_loss)
    _checks.fail_type(
        "model_or_loss",
        "a purenet Layer (e.g. purenet.layers.serial(...)) or a purenet Loss "
        "(e.g. purenet.losses.mse)",
        type(model_or_loss).__name__,
    )
