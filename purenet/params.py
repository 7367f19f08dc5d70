"""Flat parameters ("unrolled theta") and weight initialisers.

Contract:

```python
theta, unravel = purenet.ravel(params)   # theta: 1-D array of all entries
params_again = unravel(theta)            # same tree, shapes and dtypes
```

This is the "unrolling parameters" step of Ng's Machine Learning course
(lecture 9, "Backpropagation in practice"): the weight matrices Theta1,
Theta2, ... are laid end to end in one vector so that any vector optimizer
(gradient descent, L-BFGS from `scipy.optimize.minimize`) can train a
network, and reshaped back inside the cost function.

Leaves are laid out in `jax.tree.leaves` order, each in row-major (C) order.
`theta` has the promoted dtype of all leaves (`jnp.result_type`); each leaf
is cast back to its own dtype by `unravel`, so a tree of float32 and float64
leaves round-trips exactly. Integer leaves round-trip exactly while their
values are representable in the promoted float dtype (|n| <= 2**24 in float32).

Initialisers follow `jax.nn.initializers`: a factory returns a function
`init(key, shape, dtype) -> array`. Shapes of weight matrices are
`(fan_in, fan_out)`, matching `dense`'s `y = x @ W + b`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks

Initializer = Callable[[jax.Array, tuple, jnp.dtype], jax.Array]
"""The type of an initialiser: `init(key, shape, dtype) -> array`, as
`jax.nn.initializers` (the factories below return one)."""


# --------------------------------------------------------------------------- ravel


def ravel(tree: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """Flatten a pytree of arrays into one 1-D vector.

    Args:
      tree: any pytree (nested dicts, tuples, lists, NamedTuples) of arrays.

    Returns:
      `(theta, unravel)`: `theta` is the 1-D concatenation of every leaf;
      `unravel(theta)` rebuilds a tree of the same structure, shapes and
      dtypes. `unravel` is a pure function, usable under `jit` and `vmap`.

    Example:
      >>> import jax.numpy as jnp
      >>> theta, unravel = ravel({"W": jnp.ones((2, 3)), "b": jnp.zeros(3)})
      >>> theta.shape
      (9,)
      >>> unravel(theta)["W"].shape
      (2, 3)
    """
    leaves, treedef = jax.tree.flatten(tree)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    shapes = [leaf.shape for leaf in leaves]
    dtypes = [leaf.dtype for leaf in leaves]
    sizes = [math.prod(shape) for shape in shapes]
    total = sum(sizes)
    flat_dtype = jnp.result_type(*dtypes) if dtypes else jnp.float32
    if leaves:
        theta = jnp.concatenate([jnp.ravel(leaf).astype(flat_dtype) for leaf in leaves])
    else:
        theta = jnp.zeros((0,), flat_dtype)
    offsets = np.cumsum([0] + sizes)

    def unravel(theta):
        if jnp.shape(theta) != (total,):
            _checks.fail("theta", f"a 1-D array of length {total}", f"shape {jnp.shape(theta)}")
        pieces = [
            theta[offsets[i] : offsets[i + 1]].reshape(shapes[i]).astype(dtypes[i])
            for i in range(len(leaves))
        ]
        return jax.tree.unflatten(treedef, pieces)

    return theta, unravel


# --------------------------------------------------------------------- initialisers


def _fans(shape) -> tuple[int, int]:
    """`(fan_in, fan_out)` of a weight.

    A matrix `(n_in, n_out)` has `(n_in, n_out)`. A convolution kernel
    `(*K, C_in, C_out)` (rank 3 or more) connects each output unit to
    `prod(K) * C_in` inputs and each input unit to `prod(K) * C_out`
    outputs, so both fans carry the receptive field `prod(K)`, the
    convention of Keras (`compute_fans`) and PyTorch
    (`_calculate_fan_in_and_fan_out`).
    """
    if len(shape) < 1:
        _checks.fail("shape", "a weight shape with at least one dimension", shape)
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def zeros() -> Initializer:
    """All zeros. For weights this shows the symmetry problem: every hidden unit
    computes the same function and receives the same gradient, forever."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.zeros(shape, dtype)

    return init


def constant(value: float) -> Initializer:
    """Every entry equal to `value` (the symmetry problem again, with a twist:
    units are identical but not silent)."""
    value = _checks.number_in("value", value, -math.inf, math.inf)

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, value, dtype)

    return init


def uniform(epsilon: float | None = None) -> Initializer:
    """Uniform in `[-epsilon, epsilon]` (Ng's `epsilon_init`).

    With `epsilon=None` the course's default is used,
    `epsilon_init = sqrt(6) / sqrt(L_in + L_out)` (ex4 of Ng's course), which
    is exactly Glorot & Bengio's (2010) uniform initialisation.
    """
    if epsilon is not None:
        epsilon = _checks.positive("epsilon", epsilon)

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = _fans(shape)
        eps = epsilon if epsilon is not None else math.sqrt(6.0) / math.sqrt(fan_in + fan_out)
        return jax.random.uniform(key, shape, dtype, -eps, eps)

    return init


def normal(std: float = 0.01) -> Initializer:
    """Normal with mean 0 and standard deviation `std` (the "small random
    numbers" of the notes; with deep sigmoid nets it makes gradients vanish)."""
    std = _checks.positive("std", std)

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


def xavier_uniform() -> Initializer:
    """Glorot & Bengio (2010), eq. 16: U[-a, a] with a = sqrt(6 / (fan_in + fan_out))."""
    return uniform(None)


def xavier_normal() -> Initializer:
    """Glorot & Bengio (2010): normal with std = sqrt(2 / (fan_in + fan_out)).

    Note: "Deep Learning from Scratch" (Saito, ch. 6) calls std = 1/sqrt(fan_in)
    "Xavier"; that is `lecun_normal` here.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = _fans(shape)
        return math.sqrt(2.0 / (fan_in + fan_out)) * jax.random.normal(key, shape, dtype)

    return init


def lecun_normal() -> Initializer:
    """LeCun et al. (1998): normal with std = 1 / sqrt(fan_in)."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, _ = _fans(shape)
        return jax.random.normal(key, shape, dtype) / math.sqrt(fan_in)

    return init


def he_normal() -> Initializer:
    """He et al. (2015), "Delving deep into rectifiers": normal with
    std = sqrt(2 / fan_in), which keeps the variance of ReLU activations
    constant from layer to layer."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, _ = _fans(shape)
        return math.sqrt(2.0 / fan_in) * jax.random.normal(key, shape, dtype)

    return init


def he_uniform() -> Initializer:
    """He et al. (2015): U[-a, a] with a = sqrt(6 / fan_in)."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, _ = _fans(shape)
        a = math.sqrt(6.0 / fan_in)
        return jax.random.uniform(key, shape, dtype, -a, a)

    return init


INITIALIZERS = {
    "zeros": zeros,
    "uniform": uniform,
    "normal": normal,
    "xavier_uniform": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_normal": xavier_normal,
    "lecun_normal": lecun_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
}
"""The initialisers by name, as the layers' `W_init=` and `b_init=` accept them:
each value is a factory called without arguments (`INITIALIZERS["he_normal"]()`).
`glorot_*` are aliases of `xavier_*`."""


def get_initializer(init: str | Initializer) -> Initializer:
    """An initialiser from a name in `INITIALIZERS` or a callable (returned as is)."""
    if callable(init):
        return init
    if isinstance(init, str) and init in INITIALIZERS:
        return INITIALIZERS[init]()
    _checks.fail("init", f"a callable or one of {sorted(INITIALIZERS)}", repr(init))
