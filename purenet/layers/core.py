"""The layer contract, dense layers, activations, ``flatten`` and combinators.

A layer is a :class:`Layer`: four pure functions, ``jax.example_libraries.stax``
with a hand-written backward (the cs231n / *Deep Learning from Scratch* shape)
and non-gradient state kept apart from the trained parameters (as Haiku's
``transform_with_state`` and Flax's ``batch_stats`` do)::

    init(key, in_shape, dtype=float32) -> (out_shape, params, state)
    forward(params, x, *, state=(), train=False, key=None) -> (y, cache)
    backward(params, cache, dy) -> (dparams, dx)
    update_state(state, cache) -> state

Shapes exclude the batch dimension: a batch ``x`` has shape ``(m, *in_shape)``,
channels-last (``(m, features)``, ``(m, T, features)``, ``(m, H, W, C)``).
``params`` holds exactly what gradients train, ``dparams`` has its
structure, and parameter-free layers have ``params == ()``. ``state`` is ``()``
for every layer without non-gradient state; ``update_state`` turns a
training-mode forward's cache into the new state (the identity for stateless
layers). A combinator's state is ``()`` when none of its layers has state,
else a tuple with one entry per layer. A plain ``forward(params, x)`` is evaluation mode.

Layers with several inputs take a tuple ``x`` and a tuple of shapes; layers
with several outputs return a tuple ``y`` and take a tuple ``dy``. The
combinators (:func:`serial`, :func:`parallel`, :func:`fan_out`,
:func:`fan_in_sum`, :func:`fan_in_concat`, :func:`residual`) build networks
that are not a chain, each with its backward written out: a fork's backward
sums the gradients of its branches (the multivariable chain rule), a join's
backward hands each input its share.

Nothing in this package calls ``jax.grad``, ``jax.vjp`` or ``jax.jvp``: every
backward is the chain rule written out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet import activations as act
from purenet.params import Initializer, get_initializer, zeros

Shape = tuple[int, ...]


def _keep_state(state, cache):
    return state


class Layer(NamedTuple):
    """A layer: ``init``, ``forward``, ``backward`` and ``update_state``
    (the identity for every layer without non-gradient state)."""

    init: Callable
    forward: Callable
    backward: Callable
    update_state: Callable = _keep_state


# ------------------------------------------------------------------ shape helpers


def as_shape(in_shape: int | Sequence[int], name: str = "in_shape") -> Shape:
    """``in_shape`` as a tuple of positive ints (an int is accepted for 1-D)."""
    if isinstance(in_shape, int) and not isinstance(in_shape, bool):
        in_shape = (in_shape,)
    if not isinstance(in_shape, tuple | list) or not in_shape:
        _checks.fail(name, "a non-empty tuple of positive ints such as (784,)", repr(in_shape))
    return tuple(_checks.positive_int(f"{name}[{i}]", d) for i, d in enumerate(in_shape))


def as_shapes(
    in_shape: Sequence[int | Sequence[int]], count: int | None, layer: str
) -> tuple[Shape, ...]:
    """A tuple of shapes for a layer with several inputs (``count`` of them if given)."""
    if not isinstance(in_shape, tuple) or not all(isinstance(s, tuple | list) for s in in_shape):
        _checks.fail("in_shape", f"a tuple of input shapes for {layer}", repr(in_shape))
    if count is not None and len(in_shape) != count:
        _checks.fail("in_shape", f"{count} input shapes for {layer}", f"{len(in_shape)}")
    return tuple(as_shape(s, f"in_shape[{i}]") for i, s in enumerate(in_shape))


def check_rank(x: jax.Array, rank: int, layer: str, layout: str) -> None:
    """``x`` must be an array of exactly ``rank`` axes (batch axis included)."""
    if not hasattr(x, "shape") or jnp.ndim(x) != rank:
        got = f"shape {tuple(jnp.shape(x))}" if hasattr(x, "shape") else type(x).__name__
        _checks.fail("x", f"a batch of shape {layout} ({rank} axes) for {layer}", got)


def check_tuple_input(x: Sequence[jax.Array], count: int, layer: str) -> None:
    """``x`` must be a tuple (or list) of ``count`` arrays."""
    if not isinstance(x, tuple | list) or len(x) != count:
        got = (
            f"{type(x).__name__} of length {len(x)}"
            if isinstance(x, tuple | list)
            else (f"{type(x).__name__}")
        )
        _checks.fail("x", f"a tuple of {count} arrays for {layer}", got)


def split_key(key: jax.Array | None, n: int) -> list:
    """``n`` independent keys from ``key``, or ``n`` Nones when ``key`` is None."""
    return [None] * n if key is None else list(jax.random.split(key, n))


def _check_layers(layers: Sequence, name: str = "layers") -> None:
    if not layers:
        _checks.fail(name, "at least one layer", "none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            _checks.fail_type(f"{name}[{i}]", "a purenet Layer", type(layer).__name__)


def _check_entries(name: str, tree, count: int, what: str) -> None:
    if not isinstance(tree, tuple | list) or len(tree) != count:
        got = (
            f"{type(tree).__name__} of length {len(tree)}"
            if hasattr(tree, "__len__")
            else (type(tree).__name__)
        )
        _checks.fail(name, f"a tuple with one entry per {what} ({count})", got)


def _is_empty(state) -> bool:
    return isinstance(state, tuple) and not state


def _stateless(state, count: int):
    """Sub-layer states: ``()`` everywhere when the caller gave none."""
    return ((),) * count if _is_empty(state) else state


def _collapse(states) -> tuple:
    """A combinator's state: ``()`` when no sub-layer has state (so a stateless
    model is used with ``state=()`` everywhere), else one entry per sub-layer."""
    states = tuple(states)
    return () if all(_is_empty(s) for s in states) else states


def _update_each(layers: Sequence[Layer]) -> Callable:
    """``update_state`` of a combinator: each sub-layer updates its own entry."""

    def update_state(state, cache):
        state = _stateless(state, len(layers))
        return _collapse(
            layer.update_state(s, c) for layer, s, c in zip(layers, state, cache, strict=True)
        )

    return update_state


# ------------------------------------------------------------------------- dense


def dense(
    n: int,
    W_init: str | Initializer = "xavier_uniform",
    b_init: str | Initializer | None = None,
) -> Layer:
    """Fully connected (affine) layer on the last axis: ``y = x @ W + b``.

    ``x`` may have any rank ``>= 2``: ``(m, d)``, a sequence ``(m, T, d)``
    (the same ``W`` at every step), and so on; the leading axes are batch-like.

    Args:
      n: number of output units.
      W_init: initialiser for ``W`` of shape ``(n_in, n)``: a name from
        ``purenet.params.INITIALIZERS`` or a function ``(key, shape, dtype)``.
        The default, Glorot uniform, is the course's ``epsilon_init``.
      b_init: initialiser for ``b`` (default zeros).

    Backward (Saito ch. 5.6.2; Rumelhart et al. 1986 eqs. 5-7), with the
    leading axes flattened into rows: ``dW = x^T dy``, ``db = sum_rows dy``,
    ``dx = dy W^T``.
    """
    n = _checks.positive_int("n", n)
    W_init = get_initializer(W_init)
    b_init = zeros() if b_init is None else get_initializer(b_init)

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        k_W, k_b = jax.random.split(key)
        params = {"W": W_init(k_W, (in_shape[-1], n), dtype), "b": b_init(k_b, (n,), dtype)}
        return in_shape[:-1] + (n,), params, ()

    def forward(params, x, *, state=(), train=False, key=None):
        W, b = params["W"], params["b"]
        if not hasattr(x, "shape") or jnp.ndim(x) < 2 or x.shape[-1] != W.shape[0]:
            _checks.fail(
                "x",
                f"a batch of shape (m, ..., {W.shape[0]}) for dense with W of shape {W.shape}",
                f"shape {tuple(jnp.shape(x))}",
            )
        return x @ W + b, x

    def backward(params, cache, dy):
        x = cache
        rows_x = x.reshape(-1, x.shape[-1])
        rows_dy = dy.reshape(-1, dy.shape[-1])
        dW = rows_x.T @ rows_dy
        db = jnp.sum(rows_dy, axis=0)
        dx = dy @ params["W"].T
        return {"W": dW, "b": db}, dx

    return Layer(init, forward, backward)


# ------------------------------------------------------------------- activations


def _same_shape_init(key, in_shape, dtype=jnp.float32):
    return as_shape(in_shape), (), ()


def elementwise(activation: act.Activation) -> Layer:
    """A parameter-free layer applying ``activation`` to every entry, any shape.

    Backward: ``dx = dy * f'(x)``, with ``f'`` from the activation
    (``purenet.activations``), which may reuse the forward's output ``y``.
    """
    if not isinstance(activation, act.Activation):
        _checks.fail_type(
            "activation", "a purenet.activations.Activation", type(activation).__name__
        )

    def forward(params, x, *, state=(), train=False, key=None):
        y = activation.f(x)
        return y, (x, y)

    def backward(params, cache, dy):
        x, y = cache
        return (), dy * activation.df(x, y)

    return Layer(_same_shape_init, forward, backward)


def identity() -> Layer:
    """``y = x``: a linear "activation" (shows the collapse of linear hidden layers)."""
    return elementwise(act.identity)


def sigmoid() -> Layer:
    """``y = 1 / (1 + exp(-x))``, backward ``dx = dy * y * (1 - y)``."""
    return elementwise(act.sigmoid)


def tanh() -> Layer:
    """``y = tanh(x)``, backward ``dx = dy * (1 - y**2)``."""
    return elementwise(act.tanh)


def relu() -> Layer:
    """``y = max(x, 0)``, backward ``dx = dy * [x > 0]``."""
    return elementwise(act.relu)


def leaky_relu(slope: float = 0.01) -> Layer:
    """``y = x if x > 0 else slope * x``, backward ``dx = dy * (1 or slope)``."""
    return elementwise(act.leaky_relu_activation(slope))


# ------------------------------------------------------------------------ flatten


def flatten() -> Layer:
    """``(m, *s) -> (m, prod(s))``, row-major (C order) as ``jnp.reshape``;
    backward reshapes ``dy`` back to the input's shape."""

    def init(key, in_shape, dtype=jnp.float32):
        return (math.prod(as_shape(in_shape)),), (), ()

    def forward(params, x, *, state=(), train=False, key=None):
        if not hasattr(x, "shape") or jnp.ndim(x) < 2:
            _checks.fail(
                "x",
                "a batch of shape (m, ...) with at least 2 axes for flatten",
                f"shape {tuple(jnp.shape(x))}",
            )
        # The cache is an empty array of the input's shape but for the batch
        # axis: it carries the shape statically and survives a jit boundary
        # (a tuple of ints would come back as traced arrays).
        return x.reshape(x.shape[0], -1), jnp.zeros((0, *x.shape[1:]), x.dtype)

    def backward(params, cache, dy):
        return (), dy.reshape(dy.shape[0], *cache.shape[1:])

    return Layer(init, forward, backward)


# ------------------------------------------------------------------- combinators


def serial(*layers: Layer) -> Layer:
    """Compose layers in order; params, state and caches are tuples, one entry
    per layer.

    The backward runs the layers' backwards in reverse, passing each one's
    ``dx`` as the previous layer's ``dy``: the chain rule of Rumelhart et al.
    (1986, eq. 7), one layer at a time. ``key`` is split into one key per layer.
    """
    _check_layers(layers)
    count = len(layers)

    def init(key, in_shape, dtype=jnp.float32):
        params, state = [], []
        shape = in_shape
        for layer, k in zip(layers, jax.random.split(key, count), strict=True):
            shape, p, s = layer.init(k, shape, dtype)
            params.append(p)
            state.append(s)
        return shape, tuple(params), _collapse(state)

    def forward(params, x, *, state=(), train=False, key=None):
        _check_entries("params", params, count, "layer")
        state = _stateless(state, count)
        _check_entries("state", state, count, "layer")
        caches = []
        for layer, p, s, k in zip(layers, params, state, split_key(key, count), strict=True):
            x, cache = layer.forward(p, x, state=s, train=train, key=k)
            caches.append(cache)
        return x, tuple(caches)

    def backward(params, cache, dy):
        grads = [None] * count
        for i in reversed(range(count)):
            grads[i], dy = layers[i].backward(params[i], cache[i], dy)
        return tuple(grads), dy

    return Layer(init, forward, backward, _update_each(layers))


def parallel(*layers: Layer) -> Layer:
    """Layer ``i`` on part ``i`` of a tuple input; the output is the tuple of
    their outputs (stax's ``parallel``). Params, state and caches are tuples,
    one entry per layer; the backward runs each layer's backward on its part
    of ``dy``.

    Example, the two input groups of Rumelhart et al.'s family-trees network::

        serial(parallel(serial(dense(6), sigmoid()), serial(dense(6), sigmoid())),
               fan_in_concat(), dense(12), sigmoid(), ...)
    """
    _check_layers(layers)
    count = len(layers)

    def init(key, in_shape, dtype=jnp.float32):
        in_shapes = as_shapes(in_shape, count, "parallel")
        out = [
            layer.init(k, s, dtype)
            for layer, k, s in zip(layers, jax.random.split(key, count), in_shapes, strict=True)
        ]
        return tuple(o[0] for o in out), tuple(o[1] for o in out), _collapse(o[2] for o in out)

    def forward(params, x, *, state=(), train=False, key=None):
        check_tuple_input(x, count, "parallel")
        _check_entries("params", params, count, "layer")
        state = _stateless(state, count)
        _check_entries("state", state, count, "layer")
        pairs = [
            layer.forward(p, xi, state=s, train=train, key=k)
            for layer, p, xi, s, k in zip(
                layers, params, x, state, split_key(key, count), strict=True
            )
        ]
        return tuple(y for y, _ in pairs), tuple(c for _, c in pairs)

    def backward(params, cache, dy):
        pairs = [
            layer.backward(p, c, d)
            for layer, p, c, d in zip(layers, params, cache, dy, strict=True)
        ]
        return tuple(g for g, _ in pairs), tuple(dx for _, dx in pairs)

    return Layer(init, forward, backward, _update_each(layers))


def fan_out(n: int) -> Layer:
    """One input to a tuple of ``n`` copies. Backward: the copies' gradients
    are summed (the same ``x`` feeds ``n`` paths: the multivariable chain rule)."""
    n = _checks.positive_int("n", n)

    def init(key, in_shape, dtype=jnp.float32):
        return (as_shape(in_shape),) * n, (), ()

    def forward(params, x, *, state=(), train=False, key=None):
        return (x,) * n, None

    def backward(params, cache, dy):
        check_tuple_input(dy, n, "fan_out's backward")
        return (), sum(dy[1:], start=dy[0])

    return Layer(init, forward, backward)


def fan_in_sum() -> Layer:
    """The elementwise sum of a tuple of equally shaped inputs. Backward:
    every input receives ``dy`` itself (``d(a + b)/da = 1``)."""

    def init(key, in_shape, dtype=jnp.float32):
        shapes = as_shapes(in_shape, None, "fan_in_sum")
        if any(s != shapes[0] for s in shapes):
            _checks.fail("in_shape", "input shapes that are all equal for fan_in_sum", repr(shapes))
        return shapes[0], (), ()

    def forward(params, x, *, state=(), train=False, key=None):
        if not isinstance(x, tuple | list) or not x:
            _checks.fail("x", "a non-empty tuple of arrays for fan_in_sum", type(x).__name__)
        shapes = {tuple(jnp.shape(xi)) for xi in x}
        if len(shapes) != 1:
            _checks.fail("x", "arrays of one shape for fan_in_sum", sorted(shapes))
        return sum(x[1:], start=x[0]), (None,) * len(x)  # the count, as pytree structure

    def backward(params, cache, dy):
        return (), (dy,) * len(cache)

    return Layer(init, forward, backward)


def fan_in_concat(axis: int = -1) -> Layer:
    """Concatenate a tuple of inputs along ``axis`` (of the batched arrays, so
    ``-1`` is the feature axis; the batch axis 0 cannot be chosen). Backward:
    ``dy`` is cut back into the inputs' sizes along the same axis."""
    if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
        _checks.fail(
            "axis", "a non-zero int (an axis of the batched arrays, not the batch)", repr(axis)
        )

    def init(key, in_shape, dtype=jnp.float32):
        shapes = as_shapes(in_shape, None, "fan_in_concat")
        rank = len(shapes[0]) + 1
        if not -rank < axis < rank or any(len(s) + 1 != rank for s in shapes):
            _checks.fail("in_shape", f"inputs of one rank with axis {axis} inside it", repr(shapes))
        a = axis % rank - 1  # the axis within the unbatched shapes
        others = {s[:a] + s[a + 1 :] for s in shapes}
        if len(others) != 1:
            _checks.fail("in_shape", f"input shapes equal except along axis {axis}", repr(shapes))
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out), (), ()

    def forward(params, x, *, state=(), train=False, key=None):
        if not isinstance(x, tuple | list) or not x:
            _checks.fail("x", "a non-empty tuple of arrays for fan_in_concat", type(x).__name__)
        # Each input's size along the axis, carried as the length of an empty
        # array so that it stays static across a jit boundary.
        sizes = tuple(jnp.zeros((xi.shape[axis], 0), xi.dtype) for xi in x)
        return jnp.concatenate(x, axis=axis), sizes

    def backward(params, cache, dy):
        cuts = list(itertools.accumulate(size.shape[0] for size in cache))[:-1]
        return (), tuple(jnp.split(dy, cuts, axis=axis))

    return Layer(init, forward, backward)


def residual(layer: Layer) -> Layer:
    """``y = x + layer(x)`` (He et al. 2016). The inner layer must keep the
    shape. Backward: ``dx = dy + dx_layer`` (the skip path carries ``dy``
    unchanged), ``dparams = dparams_layer``."""
    _check_layers([layer], "layer")

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        out_shape, params, state = layer.init(key, in_shape, dtype)
        if tuple(out_shape) != in_shape:
            _checks.fail(
                "layer",
                f"a layer that keeps the shape {in_shape} inside residual",
                f"output shape {out_shape}",
            )
        return in_shape, params, state

    def forward(params, x, *, state=(), train=False, key=None):
        y, cache = layer.forward(params, x, state=state, train=train, key=key)
        return x + y, cache

    def backward(params, cache, dy):
        grads, dx = layer.backward(params, cache, dy)
        return grads, dy + dx

    return Layer(init, forward, backward, layer.update_state)
