"""The layer contract, dense layers, activations, `flatten` and combinators.

A layer is a [`Layer`][purenet.layers.core.Layer]: four pure functions, `jax.example_libraries.stax`
with a hand-written backward (the cs231n / *Deep Learning from Scratch* shape)
and non-gradient state kept apart from the trained parameters (as Haiku's
`transform_with_state` and Flax's `batch_stats` do):

```text
init(key, in_shape, dtype=float32) -> (out_shape, params, state)
forward(params, x, *, state=(), train=False, key=None, mask=None) -> (y, cache)
backward(params, cache, dy) -> (dparams, dx)
update_state(state, cache) -> state
```

Shapes exclude the batch dimension: a batch `x` has shape `(m, *in_shape)`,
channels-last (`(m, features)`, `(m, T, features)`, `(m, H, W, C)`).
`params` holds exactly what gradients train, `dparams` has its
structure, and parameter-free layers have `params == ()`. `state` is `()`
for every layer without non-gradient state; `update_state` turns a
training-mode forward's cache into the new state (the identity for stateless
layers). A combinator's state is `()` when none of its layers has state,
else a tuple with one entry per layer. A plain `forward(params, x)` is evaluation mode.

Layers with several inputs take a tuple `x` and a tuple of shapes; layers
with several outputs return a tuple `y` and take a tuple `dy`. The
combinators ([`serial`][purenet.layers.core.serial], [`parallel`][purenet.layers.core.parallel],
[`fan_out`][purenet.layers.core.fan_out], [`fan_in_sum`][purenet.layers.core.fan_in_sum],
[`fan_in_concat`][purenet.layers.core.fan_in_concat], [`residual`][purenet.layers.core.residual])
build networks that are not a chain, each with its backward written out: a fork's backward sums the
gradients of its branches (the multivariable chain rule), a join's backward hands each input its
share.

Nothing in this package calls `jax.grad`, `jax.vjp` or `jax.jvp`: every
backward is the chain rule written out.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet import activations as act
from purenet.layers import per_example_rules as _rules
from purenet.params import Initializer, get_initializer, zeros

Shape = tuple[int, ...]
"""A shape without the batch axis: `(features,)`, `(T, features)`, `(H, W, C)`."""


def _keep_state(state, cache):
    return state


class Layer(NamedTuple):
    """A layer: `init`, `forward`, `backward` and `update_state`
    (the identity for every layer without non-gradient state), with a
    `name` for messages (`"dense(8)"`) and, for a combinator, its
    `children`: `(key, layer)` pairs, where `key` is the child's entry
    in the combinator's params (`None` when the child's params are the
    combinator's own, as in `residual`).

    Two optional rules give each example's own gradient from the batch's
    cache (`purenet.per_example`; see
    [`per_example_rules`][purenet.layers.per_example_rules]):
    `per_example(params, cache, dy) -> (per_example_dparams, dx)`, each
    leaf `(m, *leaf.shape)`, and `sq_norms(params, cache, dy) -> (sq_norms, dx)`,
    each leaf `(m,)`. `None` for a layer without params (none is needed)
    or without support (per-example gradients through it are refused).

    Build library layers with [`make_layer`][purenet.layers.core.make_layer],
    which also checks params against the model at the outermost call."""

    init: Callable
    forward: Callable
    backward: Callable
    update_state: Callable = _keep_state
    name: str = "layer"
    children: tuple = ()
    per_example: Callable | None = None
    sq_norms: Callable | None = None


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Static:
    """Static information kept in a cache: a shape, a flag, a count.

    A cache is a pytree of arrays (the layer contract). A `Static` node has no
    leaves: its `value` is part of the pytree's *structure*, so it crosses a
    `jit` boundary unchanged (a Python int returned from `jit` would come back
    as a traced array) and `vmap` leaves it alone. `value` must be hashable.
    """

    value: Any


# --------------------------------------------------- params checked against model

_INSIDE = contextvars.ContextVar("purenet_params_checked", default=False)


def _input_shape(x):
    """`in_shape` as `init` takes it, from a batch (a tuple for several inputs)."""
    if isinstance(x, tuple | list):
        return tuple(_input_shape(xi) for xi in x)
    return tuple(jnp.shape(x)[1:])


def _params_dtype(params):
    for leaf in jax.tree.leaves(params):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
            return jnp.dtype(dtype)
    return jnp.dtype(jnp.float32)


@functools.lru_cache(maxsize=512)
def _expected(layer: Layer, in_shape, dtype):
    """What `layer.init` gives for `in_shape`: shapes and dtypes only
    (`jax.eval_shape` runs no FLOPs); None when `init` refuses the shape
    (then the forward's own input checks speak)."""
    try:
        return jax.eval_shape(lambda key: layer.init(key, in_shape, dtype)[1], jax.random.key(0))
    except (ValueError, TypeError):
        return None


def _labels(layer: Layer, path: tuple) -> list[str]:
    """The layers a params path runs through: `["serial[2]", "dense(8)"]`."""
    for key, child in layer.children:
        if key is None:
            return [layer.name] + _labels(child, path)
        if path and path[0] == key:
            return [f"{layer.name}[{key}]"] + _labels(child, path[1:])
    return [layer.name]


def layer_path(layer: Layer, path: tuple) -> str:
    """The layers that a params path runs through, as messages show them.

    Args:
      layer: the model.
      path: the keys from the root of its params to a leaf, e.g. `(2, "W")`.

    Returns:
      e.g. `"serial[2], dense(8)"`: each combinator with the index or key it
      passes to a child, then the layer that owns the leaf.
    """
    return ", ".join(_labels(layer, tuple(path)))


def _describe(tree) -> str:
    if isinstance(tree, dict):
        return f"a dict with keys {sorted(map(str, tree))}"
    if isinstance(tree, tuple | list):
        return f"a {type(tree).__name__} of length {len(tree)}" if tree else "()"
    if hasattr(tree, "shape") and hasattr(tree, "dtype"):
        return f"an array of shape {tuple(tree.shape)} and dtype {jnp.dtype(tree.dtype).name}"
    return type(tree).__name__


def _mismatch(expected, got, path=()):
    """The first place where `got` differs from `expected`:
    `(path, what was expected, what was given)`, or None."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return path, _describe(expected), _describe(got)
        if set(expected) != set(got):
            missing = sorted(map(str, set(expected) - set(got)))
            extra = sorted(map(str, set(got) - set(expected)))
            said = (f"missing keys {missing}" if missing else "") + (
                ("; " if missing and extra else "") + (f"unexpected keys {extra}" if extra else "")
            )
            return path, f"keys {sorted(map(str, expected))}", said
        for k in expected:
            found = _mismatch(expected[k], got[k], path + (k,))
            if found:
                return found
        return None
    if isinstance(expected, tuple | list):
        if type(got) is not type(expected) or len(got) != len(expected):
            want = _describe(expected)
            if not expected:
                want = "() (this layer has no params)"
            return path, want, _describe(got)
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            found = _mismatch(e, g, path + (i,))
            if found:
                return found
        return None
    if expected is None:
        return None if got is None else (path, "None", _describe(got))
    if not (hasattr(got, "shape") and hasattr(got, "dtype")):
        return path, f"an array of shape {tuple(expected.shape)}", _describe(got)
    if tuple(got.shape) != tuple(expected.shape):
        return path, f"shape {tuple(expected.shape)}", f"{tuple(got.shape)}"
    if jnp.dtype(got.dtype) != jnp.dtype(expected.dtype):
        return path, f"dtype {jnp.dtype(expected.dtype).name}", jnp.dtype(got.dtype).name
    return None


def _batched(in_shape) -> str:
    if in_shape and isinstance(in_shape[0], tuple):
        return "(" + ", ".join(_batched(s) for s in in_shape) + ")"
    return "(" + ", ".join(["m", *map(str, in_shape)]) + ")"


def check_params(layer: Layer, params, x, name: str = "params") -> None:
    """Check `params` against what `layer.init` gives for inputs like `x`.

    Structure, shapes and dtypes are compared with `jax.eval_shape` of `init`
    (no FLOPs, memoized per layer, input shape and dtype), so under `jit` the
    check runs once at trace time and adds nothing to the compiled program.
    The dtype expected is that of the first floating leaf of `params`.

    Raises:
      ValueError: naming the path in params and the layers it runs through,
        e.g. `params[2]['W'] (serial[2], dense(8)): expected shape (4, 8), got (4, 3)`.
    """
    if not isinstance(layer, Layer):
        return
    try:
        in_shape = _input_shape(x)
        hash(in_shape)
    except TypeError:
        return
    expected = _expected(layer, in_shape, _params_dtype(params))
    if expected is None:
        return
    found = _mismatch(expected, params)
    if found is None:
        return
    path, want, got = found
    where = name + "".join(f"[{k!r}]" for k in path)
    labels = layer_path(layer, path)
    raise ValueError(
        f"{where} ({labels}): expected {want}, got {got} "
        f"(what {layer.name}'s init gives for inputs of shape {_batched(in_shape)})"
    )


# An error about the input: "x: ..." or "x[1]: ..." (one of several inputs).
_ABOUT_X = re.compile(r"x(\[\d+\])*: ")


def checked_call(layer: Layer, params, x, fn: Callable):
    """`fn()`, with `params` checked against `layer` first, unless a caller
    further out has already checked them (one check per entry point)."""
    if _INSIDE.get():
        return fn()
    token = _INSIDE.set(True)
    try:
        try:
            check_params(layer, params, x)
        except ValueError as params_error:
            # Params that do not fit the input may mean a wrong input: when the
            # layers themselves reject `x`, that error comes first, and the
            # params' misfit second (another instance's params give the same
            # rejection of a right `x`: only the caller knows which is wrong).
            try:
                jax.eval_shape(fn)
            except Exception as error:  # the wrong params may fail any way (KeyError)
                message = getattr(error, "purenet_message", str(error))
                if not _ABOUT_X.match(message):
                    raise params_error from None
                if type(error) not in (ValueError, TypeError):
                    raise error from None
                misfit = f"; or, if x is right, params that do not fit it: {params_error}"
                again = type(error)(f"{error}{misfit}")
                if hasattr(error, "purenet_path"):  # as `within` made it, for an outer one
                    again.purenet_path, again.purenet_leaf = error.purenet_path, error.purenet_leaf
                    again.purenet_message = message + misfit
                raise again from None
            raise params_error from None
        return fn()
    finally:
        _INSIDE.reset(token)


def make_layer(
    init: Callable,
    forward: Callable,
    backward: Callable,
    update_state: Callable = _keep_state,
    *,
    name: str,
    children: tuple = (),
    per_example: Callable | None = None,
    sq_norms: Callable | None = None,
) -> Layer:
    """A [`Layer`][purenet.layers.core.Layer] whose `forward` checks its
    params against `init` (see [`check_params`][purenet.layers.core.check_params])
    when called from outside any other checked call. `per_example` and
    `sq_norms` are the layer's optional per-example rules (the `Layer` fields)."""
    layer = Layer(
        init,
        forward,
        backward,
        update_state,
        name,
        tuple(children),
        per_example=per_example,
        sq_norms=sq_norms,
    )

    @functools.wraps(forward)
    def checked_forward(params, x, **context):
        return checked_call(layer, params, x, lambda: forward(params, x, **context))

    return layer._replace(forward=checked_forward)


@contextlib.contextmanager
def within(segment: str, layer: Layer):
    """Errors raised by a sub-layer start with its path through the combinators:
    `serial[3] (conv2d): kernel_size: ...`; nested paths are joined with
    commas. A `ValueError` or `TypeError` is raised again with the path in
    its message; any other exception gets the path as a note."""
    try:
        yield
    except (ValueError, TypeError) as error:
        path = [segment] + getattr(error, "purenet_path", [])
        leaf = getattr(error, "purenet_leaf", layer.name)
        message = getattr(error, "purenet_message", str(error))
        if type(error) not in (ValueError, TypeError):
            error.add_note(f"in {', '.join(path)} ({leaf})")
            raise
        again = type(error)(f"{', '.join(path)} ({leaf}): {message}")
        again.purenet_path, again.purenet_leaf, again.purenet_message = path, leaf, message
        raise again.with_traceback(error.__traceback__) from None
    except Exception as error:
        error.add_note(f"in {segment} ({layer.name})")
        raise


# ------------------------------------------------------------------ shape helpers


def as_shape(in_shape: int | Sequence[int], name: str = "in_shape") -> Shape:
    """`in_shape` as a tuple of positive ints (an int is accepted for 1-D)."""
    if isinstance(in_shape, int) and not isinstance(in_shape, bool):
        in_shape = (in_shape,)
    if not isinstance(in_shape, tuple | list) or not in_shape:
        _checks.fail(name, "a non-empty tuple of positive ints such as (784,)", repr(in_shape))
    return tuple(_checks.positive_int(f"{name}[{i}]", d) for i, d in enumerate(in_shape))


def as_shapes(
    in_shape: Sequence[int | Sequence[int]], count: int | None, layer: str
) -> tuple[Shape, ...]:
    """A tuple of shapes for a layer with several inputs (`count` of them if given)."""
    if not isinstance(in_shape, tuple) or not all(isinstance(s, tuple | list) for s in in_shape):
        _checks.fail("in_shape", f"a tuple of input shapes for {layer}", repr(in_shape))
    if count is not None and len(in_shape) != count:
        _checks.fail("in_shape", f"{count} input shapes for {layer}", f"{len(in_shape)}")
    return tuple(as_shape(s, f"in_shape[{i}]") for i, s in enumerate(in_shape))


def check_rank(x: jax.Array, rank: int, layer: str, layout: str) -> None:
    """`x` must be an array of exactly `rank` axes (batch axis included)."""
    if not hasattr(x, "shape") or jnp.ndim(x) != rank:
        got = f"shape {tuple(jnp.shape(x))}" if hasattr(x, "shape") else type(x).__name__
        _checks.fail("x", f"a batch of shape {layout} ({rank} axes) for {layer}", got)


def check_tuple_input(x: Sequence[jax.Array], count: int, layer: str) -> None:
    """`x` must be a tuple (or list) of `count` arrays."""
    if not isinstance(x, tuple | list) or len(x) != count:
        got = (
            f"{type(x).__name__} of length {len(x)}"
            if isinstance(x, tuple | list)
            else (f"{type(x).__name__}")
        )
        _checks.fail("x", f"a tuple of {count} arrays for {layer}", got)


def split_key(key: jax.Array | None, n: int) -> list:
    """`n` independent keys from `key`, or `n` Nones when `key` is None."""
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
    """Sub-layer states: `()` everywhere when the caller gave none."""
    return ((),) * count if _is_empty(state) else state


def _collapse(states) -> tuple:
    """A combinator's state: `()` when no sub-layer has state (so a stateless
    model is used with `state=()` everywhere), else one entry per sub-layer."""
    states = tuple(states)
    return () if all(_is_empty(s) for s in states) else states


def _update_each(layers: Sequence[Layer]) -> Callable:
    """`update_state` of a combinator: each sub-layer updates its own entry."""

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
    """Fully connected (affine) layer on the last axis: `y = x @ W + b`.

    `x` may have any rank `>= 2`: `(m, d)`, a sequence `(m, T, d)`
    (the same `W` at every step), and so on; the leading axes are batch-like.

    Args:
      n: number of output units.
      W_init: initialiser for `W` of shape `(n_in, n)`: a name from
        `purenet.params.INITIALIZERS` or a function `(key, shape, dtype)`.
        The default, Glorot uniform, is the course's `epsilon_init`.
      b_init: initialiser for `b` (default zeros).

    Backward (Saito ch. 5.6.2; Rumelhart et al. 1986 eqs. 5-7), with the
    leading axes flattened into rows: `dW = x^T dy`, `db = sum_rows dy`,
    `dx = dy W^T`.
    """
    n = _checks.positive_int("n", n)
    W_init = get_initializer(W_init)
    b_init = zeros() if b_init is None else get_initializer(b_init)

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        k_W, k_b = jax.random.split(key)
        params = {"W": W_init(k_W, (in_shape[-1], n), dtype), "b": b_init(k_b, (n,), dtype)}
        return in_shape[:-1] + (n,), params, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
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

    # Per example (Goodfellow 2015): dW_i = x_i^T dy_i; the norms by
    # |x_i|^2 |dy_i|^2 on rows, by the cheaper of dW_i and the Gram form on sequences.
    def per_example(params, cache, dy):
        dW, db = _rules.dense_per_example(cache, dy)
        return {"W": dW, "b": db}, dy @ params["W"].T

    def sq_norms(params, cache, dy):
        sq_W, sq_b = _rules.dense_sq_norms(cache, dy)
        return {"W": sq_W, "b": sq_b}, dy @ params["W"].T

    return make_layer(
        init,
        forward,
        backward,
        name=f"dense({n})",
        per_example=per_example,
        sq_norms=sq_norms,
    )


# ------------------------------------------------------------------- activations


def _same_shape_init(key, in_shape, dtype=jnp.float32):
    return as_shape(in_shape), (), ()


def elementwise(activation: act.Activation) -> Layer:
    """A parameter-free layer applying `activation` to every entry, any shape.

    Backward: `dx = dy * f'(x)`, with `f'` from the activation
    (`purenet.activations`), which may reuse the forward's output `y`.
    """
    if not isinstance(activation, act.Activation):
        _checks.fail_type(
            "activation", "a purenet.activations.Activation", type(activation).__name__
        )

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        y = activation.f(x)
        return y, (x, y)

    def backward(params, cache, dy):
        x, y = cache
        return (), dy * activation.df(x, y)

    return make_layer(_same_shape_init, forward, backward, name=activation.name)


def identity() -> Layer:
    """`y = x`: a linear "activation" (shows the collapse of linear hidden layers)."""
    return elementwise(act.identity)


def sigmoid() -> Layer:
    """`y = 1 / (1 + exp(-x))`, backward `dx = dy * y * (1 - y)`."""
    return elementwise(act.sigmoid)


def tanh() -> Layer:
    """`y = tanh(x)`, backward `dx = dy * (1 - y**2)`."""
    return elementwise(act.tanh)


def relu() -> Layer:
    """`y = max(x, 0)`, backward `dx = dy * [x > 0]`."""
    return elementwise(act.relu)


def gelu() -> Layer:
    """GELU, exact: `y = x Phi(x)` (Hendrycks & Gimpel 2016), backward
    `dx = dy * (Phi(x) + x phi(x))`; as `torch.nn.GELU()`."""
    return elementwise(act.gelu)


def gelu_tanh() -> Layer:
    """GELU, GPT-2's tanh approximation (`gelu_new` in Hugging Face,
    `torch.nn.GELU(approximate="tanh")`); see `purenet.activations.gelu_tanh`."""
    return elementwise(act.gelu_tanh)


def leaky_relu(slope: float = 0.01) -> Layer:
    """`y = x if x > 0 else slope * x`, backward `dx = dy * (1 or slope)`."""
    return elementwise(act.leaky_relu_activation(slope))


# ------------------------------------------------------------------------ flatten


def flatten() -> Layer:
    """`(m, *s) -> (m, prod(s))`, row-major (C order) as `jnp.reshape`;
    backward reshapes `dy` back to the input's shape."""

    def init(key, in_shape, dtype=jnp.float32):
        return (math.prod(as_shape(in_shape)),), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not hasattr(x, "shape") or jnp.ndim(x) < 2:
            _checks.fail(
                "x",
                "a batch of shape (m, ...) with at least 2 axes for flatten",
                f"shape {tuple(jnp.shape(x))}",
            )
        return x.reshape(x.shape[0], -1), Static(x.shape[1:])

    def backward(params, cache, dy):
        return (), dy.reshape(dy.shape[0], *cache.value)

    return make_layer(init, forward, backward, name="flatten")


# ------------------------------------------------------------------- combinators


def serial(*layers: Layer) -> Layer:
    """Compose layers in order; params, state and caches are tuples, one entry
    per layer.

    The backward runs the layers' backwards in reverse, passing each one's
    `dx` as the previous layer's `dy`: the chain rule of Rumelhart et al.
    (1986, eq. 7), one layer at a time. `key` is split into one key per layer.
    """
    _check_layers(layers)
    count = len(layers)

    def init(key, in_shape, dtype=jnp.float32):
        params, state = [], []
        shape = in_shape
        for i, (layer, k) in enumerate(zip(layers, jax.random.split(key, count), strict=True)):
            with within(f"serial[{i}]", layer):
                shape, p, s = layer.init(k, shape, dtype)
            params.append(p)
            state.append(s)
        return shape, tuple(params), _collapse(state)

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        _check_entries("params", params, count, "layer")
        state = _stateless(state, count)
        _check_entries("state", state, count, "layer")
        caches = []
        steps = zip(layers, params, state, split_key(key, count), strict=True)
        for i, (layer, p, s, k) in enumerate(steps):
            with within(f"serial[{i}]", layer):
                x, cache = layer.forward(p, x, state=s, train=train, key=k, mask=mask)
            caches.append(cache)
        return x, tuple(caches)

    def backward(params, cache, dy):
        grads = [None] * count
        for i in reversed(range(count)):
            with within(f"serial[{i}]", layers[i]):
                grads[i], dy = layers[i].backward(params[i], cache[i], dy)
        return tuple(grads), dy

    def each_in_reverse(rule):  # backward's loop, with a per-example rule per layer
        def run(params, cache, dy):
            out = [None] * count
            for i in reversed(range(count)):
                with within(f"serial[{i}]", layers[i]):
                    out[i], dy = rule(layers[i], params[i], cache[i], dy)
            return tuple(out), dy

        return run

    return make_layer(
        init,
        forward,
        backward,
        _update_each(layers),
        name="serial",
        children=tuple(enumerate(layers)),
        per_example=each_in_reverse(_rules.layer_grads),
        sq_norms=each_in_reverse(_rules.layer_sq_norms),
    )


def parallel(*layers: Layer) -> Layer:
    """Layer `i` on part `i` of a tuple input; the output is the tuple of
    their outputs (stax's `parallel`). Params, state and caches are tuples,
    one entry per layer; the backward runs each layer's backward on its part
    of `dy`.

    Example, the two input groups of Rumelhart et al.'s family-trees network:

    ```python
    serial(parallel(serial(dense(6), sigmoid()), serial(dense(6), sigmoid())),
           fan_in_concat(), dense(12), sigmoid(), ...)
    ```
    """
    _check_layers(layers)
    count = len(layers)

    def init(key, in_shape, dtype=jnp.float32):
        in_shapes = as_shapes(in_shape, count, "parallel")
        out = []
        keys = jax.random.split(key, count)
        for i, (layer, k, s) in enumerate(zip(layers, keys, in_shapes, strict=True)):
            with within(f"parallel[{i}]", layer):
                out.append(layer.init(k, s, dtype))
        return tuple(o[0] for o in out), tuple(o[1] for o in out), _collapse(o[2] for o in out)

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        check_tuple_input(x, count, "parallel")
        _check_entries("params", params, count, "layer")
        state = _stateless(state, count)
        _check_entries("state", state, count, "layer")
        pairs = []
        parts = zip(layers, params, x, state, split_key(key, count), strict=True)
        for i, (layer, p, xi, s, k) in enumerate(parts):
            with within(f"parallel[{i}]", layer):
                pairs.append(layer.forward(p, xi, state=s, train=train, key=k, mask=mask))
        return tuple(y for y, _ in pairs), tuple(c for _, c in pairs)

    def backward(params, cache, dy):
        pairs = []
        for i, (layer, p, c, d) in enumerate(zip(layers, params, cache, dy, strict=True)):
            with within(f"parallel[{i}]", layer):
                pairs.append(layer.backward(p, c, d))
        return tuple(g for g, _ in pairs), tuple(dx for _, dx in pairs)

    def each_part(rule):  # backward's loop, with a per-example rule per part
        def run(params, cache, dy):
            pairs = []
            for i, (layer, p, c, d) in enumerate(zip(layers, params, cache, dy, strict=True)):
                with within(f"parallel[{i}]", layer):
                    pairs.append(rule(layer, p, c, d))
            return tuple(g for g, _ in pairs), tuple(dx for _, dx in pairs)

        return run

    return make_layer(
        init,
        forward,
        backward,
        _update_each(layers),
        name="parallel",
        children=tuple(enumerate(layers)),
        per_example=each_part(_rules.layer_grads),
        sq_norms=each_part(_rules.layer_sq_norms),
    )


def fan_out(n: int) -> Layer:
    """One input to a tuple of `n` copies. Backward: the copies' gradients
    are summed (the same `x` feeds `n` paths: the multivariable chain rule)."""
    n = _checks.positive_int("n", n)

    def init(key, in_shape, dtype=jnp.float32):
        return (as_shape(in_shape),) * n, (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        return (x,) * n, ()

    def backward(params, cache, dy):
        check_tuple_input(dy, n, "fan_out's backward")
        return (), sum(dy[1:], start=dy[0])

    return make_layer(init, forward, backward, name=f"fan_out({n})")


def fan_in_sum() -> Layer:
    """The elementwise sum of a tuple of equally shaped inputs. Backward:
    every input receives `dy` itself (`d(a + b)/da = 1`)."""

    def init(key, in_shape, dtype=jnp.float32):
        shapes = as_shapes(in_shape, None, "fan_in_sum")
        if any(s != shapes[0] for s in shapes):
            _checks.fail("in_shape", "input shapes that are all equal for fan_in_sum", repr(shapes))
        return shapes[0], (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(x, tuple | list) or not x:
            _checks.fail("x", "a non-empty tuple of arrays for fan_in_sum", type(x).__name__)
        shapes = {tuple(jnp.shape(xi)) for xi in x}
        if len(shapes) != 1:
            _checks.fail("x", "arrays of one shape for fan_in_sum", sorted(shapes))
        return sum(x[1:], start=x[0]), Static(len(x))

    def backward(params, cache, dy):
        return (), (dy,) * cache.value

    return make_layer(init, forward, backward, name="fan_in_sum")


def fan_in_concat(axis: int = -1) -> Layer:
    """Concatenate a tuple of inputs along `axis` (of the batched arrays, so
    `-1` is the feature axis; the batch axis 0 cannot be chosen). Backward:
    `dy` is cut back into the inputs' sizes along the same axis."""
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

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(x, tuple | list) or not x:
            _checks.fail("x", "a non-empty tuple of arrays for fan_in_concat", type(x).__name__)
        sizes = tuple(xi.shape[axis] for xi in x)  # each input's size along the axis
        return jnp.concatenate(x, axis=axis), Static(sizes)

    def backward(params, cache, dy):
        cuts = list(itertools.accumulate(cache.value))[:-1]
        return (), tuple(jnp.split(dy, cuts, axis=axis))

    return make_layer(init, forward, backward, name="fan_in_concat")


def residual(layer: Layer) -> Layer:
    """`y = x + layer(x)` (He et al. 2016). The inner layer must keep the
    shape. Backward: `dx = dy + dx_layer` (the skip path carries `dy`
    unchanged), `dparams = dparams_layer`."""
    _check_layers([layer], "layer")

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        with within("residual", layer):
            out_shape, params, state = layer.init(key, in_shape, dtype)
        if tuple(out_shape) != in_shape:
            _checks.fail(
                "layer",
                f"a layer that keeps the shape {in_shape} inside residual",
                f"output shape {out_shape}",
            )
        return in_shape, params, state

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        with within("residual", layer):
            y, cache = layer.forward(params, x, state=state, train=train, key=key, mask=mask)
        return x + y, cache

    def backward(params, cache, dy):
        with within("residual", layer):
            grads, dx = layer.backward(params, cache, dy)
        return grads, dy + dx

    def with_skip(rule):  # backward, with a per-example rule for the inner layer
        def run(params, cache, dy):
            with within("residual", layer):
                grads, dx = rule(layer, params, cache, dy)
            return grads, dy + dx

        return run

    return make_layer(
        init,
        forward,
        backward,
        layer.update_state,
        name="residual",
        children=((None, layer),),
        per_example=with_skip(_rules.layer_grads),
        sq_norms=with_skip(_rules.layer_sq_norms),
    )
