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

A forward names only the context keywords it uses (`forward(params, x)` is
enough for a layer without state, mode, randomness or mask): callers pass the
context through [`call_forward`][purenet.layers.core.call_forward], which
drops what a layer does not name and refuses a padding mask or a state that
it cannot take.

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

import dataclasses
import functools
import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet import activations as act
from purenet.layers import per_example_rules as _rules
from purenet.layers.checking import checked_call, within
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
    combinator's own, as in `residual`), and `transport`: the params key
    whose transpose carries the error back in `backward` (the "weight
    transport" of Lillicrap et al. 2016), or None. Declaring it promises
    that `backward(params, cache, dy)` gives a `dx` linear in
    `params[transport]` and a params gradient that does not read it (dense
    and convolution: `dW = x^T dy`, `dx = dy W^T`), so
    [`purenet.feedback`][purenet.feedback] can put a feedback matrix in its place.

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
    transport: str | None = None
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


# ------------------------------------------------------------- the forward's context


# The context keywords of the contract and what a layer whose forward does not
# name one is given of it: `train` and `key` never matter to it (a layer with
# no mode or randomness has neither); `state` and `mask` only when they carry
# nothing (`()` or no leaves; None). A keyword added later is dropped for the
# layers written before it when its value is None, and refused otherwise.
def _is_none(value) -> bool:
    return value is None


_DROPPABLE = {
    "state": lambda value: not jax.tree.leaves(value),
    "train": lambda value: True,
    "key": lambda value: True,
    "mask": _is_none,
}
_HOW = {
    "state": ("state", "give it state=(), or add `state=()` to its forward's keywords"),
    "mask": (
        "a padding mask",
        "give it no mask, or add `mask=None` to its forward's keywords (and honour the "
        "mask, unless the layer treats each position on its own)",
    ),
}


def _named(forward: Callable) -> frozenset[str] | None:
    """The keywords `forward` names; None when it takes `**kwargs` (or has
    no signature Python can read: then it is given everything, as before)."""
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(
        p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


_named_cached = functools.lru_cache(maxsize=4096)(_named)


def _keywords(forward: Callable) -> frozenset[str] | None:
    try:
        return _named_cached(forward)
    except TypeError:  # an unhashable callable: read its signature each time
        return _named(forward)


def _fitted(forward: Callable, name: str, context: dict) -> dict:
    """`context` cut to the keywords `forward` names (see `call_forward`)."""
    named = _keywords(forward)
    if named is None or named.issuperset(context):
        return context
    fitted = {}
    for keyword, value in context.items():
        if keyword in named:
            fitted[keyword] = value
        elif not _DROPPABLE.get(keyword, _is_none)(value):
            what, how = _HOW.get(
                keyword,
                (
                    f"`{keyword}`",
                    f"give it {keyword}=None, or add `{keyword}=None` to its forward's keywords",
                ),
            )
            raise TypeError(
                f"{keyword}: {name} cannot take {what}: "
                f"its forward has no `{keyword}` keyword; {how}"
            )
    return fitted


def call_forward(layer: Layer, params, x, **context) -> tuple[Any, Any]:
    """`layer.forward(params, x, **context)`, passing only the keywords its
    forward names: how combinators, `backprop`, `objective`, the training loops
    and the gradient checks call a layer (DESIGN.md, "Inputs and context").

    So a layer names only the context it uses: `forward(params, x)` is a whole
    layer, and one written before a keyword existed keeps working. A forward
    with `**context` gets everything. For a keyword the forward does not name:

    * `train` and `key` are dropped (a layer without them has no mode and no
      randomness);
    * `state` is dropped when it carries nothing (`()`), else refused;
    * `mask` is dropped when it is None, else refused: a layer that cannot
      take a padding mask must not ignore one silently;
    * any other keyword (one the contract may add later) is dropped when it
      is None, else refused.

    The signature is read once per forward function (memoized). A refusal is
    raised before the forward runs; under `jit`, at trace time.

    Args:
      layer: a [`Layer`][purenet.layers.core.Layer].
      params: its params.
      x: its input.
      **context: `state=`, `train=`, `key=`, `mask=`.

    Returns:
      `(y, cache)`, as `layer.forward` returns them.

    Raises:
      TypeError: a `mask` (not None), a `state` that is not empty, or another
        keyword that is not None given to a layer whose forward does not name
        it; the message names the keyword and the layer.
    """
    return layer.forward(params, x, **_fitted(layer.forward, layer.name, context))


def make_layer(
    init: Callable,
    forward: Callable,
    backward: Callable,
    update_state: Callable = _keep_state,
    *,
    name: str,
    children: tuple = (),
    transport: str | None = None,
    per_example: Callable | None = None,
    sq_norms: Callable | None = None,
) -> Layer:
    """A [`Layer`][purenet.layers.core.Layer] whose `forward` checks its
    params against `init` (see [`check_params`][purenet.layers.checking.check_params])
    when called from outside any other checked call, and takes any context:
    `forward` needs to name only the keywords it uses (see
    [`call_forward`][purenet.layers.core.call_forward]). `transport`,
    `per_example` and `sq_norms` are the optional `Layer` fields of the same names."""
    layer = Layer(
        init,
        forward,
        backward,
        update_state,
        name,
        tuple(children),
        transport=transport,
        per_example=per_example,
        sq_norms=sq_norms,
    )

    @functools.wraps(forward)  # its signature is forward's: call_forward reads it
    def checked_forward(params, x, **context):
        context = _fitted(forward, name, context)
        return checked_call(layer, params, x, lambda: forward(params, x, **context))

    return layer._replace(forward=checked_forward)


def _check_context(layers: Sequence[Layer], segments: Sequence[str], contexts: Sequence[dict]):
    """Every sub-layer's context checked before any of them runs."""
    for layer, segment, context in zip(layers, segments, contexts, strict=True):
        with within(segment, layer):
            _fitted(layer.forward, layer.name, context)


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

    # mask: taken and ignored, as every layer that treats each position on its own
    def forward(params, x, *, mask=None):
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
        transport="W",
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

    def forward(params, x, *, mask=None):  # each entry on its own: a mask changes nothing
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

    # no mask: flattening a sequence mixes its positions, so a mask is refused
    def forward(params, x):
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
        segments = [f"serial[{i}]" for i in range(count)]
        contexts = [
            dict(state=s, train=train, key=k, mask=mask)
            for s, k in zip(state, split_key(key, count), strict=True)
        ]
        _check_context(layers, segments, contexts)
        caches = []
        for layer, segment, p, context in zip(layers, segments, params, contexts, strict=True):
            with within(segment, layer):
                x, cache = call_forward(layer, p, x, **context)
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
        segments = [f"parallel[{i}]" for i in range(count)]
        contexts = [
            dict(state=s, train=train, key=k, mask=mask)
            for s, k in zip(state, split_key(key, count), strict=True)
        ]
        _check_context(layers, segments, contexts)
        pairs = []
        for layer, segment, p, xi, context in zip(
            layers, segments, params, x, contexts, strict=True
        ):
            with within(segment, layer):
                pairs.append(call_forward(layer, p, xi, **context))
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

    def forward(params, x, *, mask=None):  # copies each position: a mask changes nothing
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

    def forward(params, x, *, mask=None):  # sums position by position: a mask changes nothing
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

    # mask: taken and ignored (joining features keeps each position on its own)
    def forward(params, x, *, mask=None):
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
            y, cache = call_forward(layer, params, x, state=state, train=train, key=key, mask=mask)
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
