"""Activation functions and their derivatives, written by hand.

An [`Activation`][purenet.activations.Activation] is a pair of elementwise pure functions:

* `f(x) -> y`
* `df(x, y) -> dy/dx`, given both the input and the output, so that the
  derivative reuses what the forward pass computed: `sigmoid' = y (1 - y)`,
  `tanh' = 1 - y**2` (Rumelhart, Hinton & Williams 1986, eq. 4 for the
  sigmoid; Saito, *Deep Learning from Scratch*, ch. 5.5).

Softmax is not elementwise; it is provided as [`softmax`][purenet.activations.softmax] and
[`log_softmax`][purenet.activations.log_softmax] for the losses, where its backward is fused with
the cross-entropy (see `purenet.losses`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks


class Activation(NamedTuple):
    """An elementwise nonlinearity `f` with its derivative `df(x, y)`,
    and a `name` for messages. A NaN in `x` gives NaN out, as in `jax.nn`."""

    f: Callable
    df: Callable
    name: str = "elementwise"


def _identity_df(x, y):
    return jnp.ones_like(x)


identity = Activation(f=lambda x: x, df=_identity_df, name="identity")
"""`f(x) = x`, `f' = 1`: a linear unit (a network of them collapses to one linear map)."""


def _sigmoid(x):
    # 1 / (1 + exp(-x)) overflows exp for large negative x; both branches below
    # only ever exponentiate a non-positive number, so nothing overflows and
    # jax.grad (used as a referee in tests) sees no inf * 0.
    e = jnp.exp(-jnp.abs(x))
    return jnp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(jnp.result_type(x))


sigmoid = Activation(f=_sigmoid, df=lambda x, y: y * (1.0 - y), name="sigmoid")
"""The logistic function $f(x) = 1 / (1 + e^{-x})$, $f' = y (1 - y)$ (Rumelhart et al. 1986,
eq. 4). Computed so that it only exponentiates $-|x|$: no overflow for any `x`."""

tanh = Activation(f=jnp.tanh, df=lambda x, y: 1.0 - y * y, name="tanh")
"""$f(x) = \\tanh x$, $f' = 1 - y^2$."""

# ReLU'(0) is taken as 0, the convention of jax.nn.relu and of torch. The
# forward is a `where`, not `maximum`: jax.grad (the referee) splits a tie of
# maximum(x, 0) at x == 0 and would see 0.5 there, where a row zeroed by an
# earlier ReLU meets a zero bias. The test is `x <= 0`, not `x > 0`, so that a
# NaN (for which every comparison is false) passes through as NaN, as in
# jax.nn.relu; its derivative there is 0, as jax.grad(jax.nn.relu)(nan).
relu = Activation(
    f=lambda x: jnp.where(x <= 0, jnp.zeros_like(x), x),
    df=lambda x, y: (x > 0).astype(jnp.result_type(x)),
    name="relu",
)
"""$f(x) = \\max(x, 0)$, $f' = [x > 0]$: the derivative at 0 is taken as 0, as `jax.nn.relu`
and PyTorch do; a NaN passes through as NaN."""


def leaky_relu_activation(slope: float = 0.01) -> Activation:
    """`f(x) = x` for `x > 0` and `slope * x` otherwise (Maas et al., 2013)."""
    slope = _checks.number_in("slope", slope, 0.0, 1.0)

    def f(x):
        return jnp.where(x > 0, x, slope * x)

    def df(x, y):
        return jnp.where(x > 0, 1.0, slope).astype(jnp.result_type(x))

    return Activation(f=f, df=df, name=f"leaky_relu({slope})")


_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu(x):
    return 0.5 * x * (1.0 + jax.scipy.special.erf(x / _SQRT_2))


def _gelu_df(x, y):
    # d/dx [x Phi(x)] = Phi(x) + x phi(x), phi the standard normal density
    Phi = 0.5 * (1.0 + jax.scipy.special.erf(x / _SQRT_2))
    return Phi + x * jnp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


gelu = Activation(f=_gelu, df=_gelu_df, name="gelu")
"""GELU, exact: `f(x) = x Phi(x)` with `Phi` the standard normal CDF
(Hendrycks & Gimpel 2016, eq. 1); `torch.nn.GELU()` and
`jax.nn.gelu(x, approximate=False)`. `f'(x) = Phi(x) + x phi(x)`."""


def _gelu_tanh(x):
    u = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + jnp.tanh(u))


def _gelu_tanh_df(x, y):
    # f = x s / 2 with s = 1 + tanh(u):  f' = s / 2 + x (1 - tanh(u)^2) u' / 2
    t = jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du


gelu_tanh = Activation(f=_gelu_tanh, df=_gelu_tanh_df, name="gelu_tanh")
"""GELU, GPT-2's tanh approximation (Hendrycks & Gimpel 2016, sec. 2):
`f(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`; Hugging Face's
`gelu_new`, `torch.nn.GELU(approximate="tanh")`, `jax.nn.gelu`'s default."""


def softmax(z: jax.Array, axis: int = -1) -> jax.Array:
    """Numerically stable softmax: `exp(z - max z) / sum exp(z - max z)`.

    Subtracting the row maximum leaves the result unchanged (softmax is
    invariant to adding a constant to every logit) and keeps `exp` from
    overflowing, so logits of +-1e4 are fine in float32.
    """
    shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(z: jax.Array, axis: int = -1) -> jax.Array:
    """Numerically stable `log(softmax(z))`: `(z - max z) - log sum exp(z - max z)`."""
    shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))
