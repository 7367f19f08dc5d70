"""Hypothesis strategies for random architectures and matching inputs.

Property tests of hand-written gradients want many small networks of many
shapes, not one hand-picked example. These strategies draw them:

* [`activations`][purenet.testing.strategies.activations]: one of purenet's activation layers;
* [`mlps`][purenet.testing.strategies.mlps]: `dense`/activation stacks of random depth and widths;
* [`chain_models`][purenet.testing.strategies.chain_models]: chains that also flatten 2-D inputs,
  apply `dense` to every step of a sequence and add residual blocks;
* [`non_chain_models`][purenet.testing.strategies.non_chain_models]: graphs built with `fan_out`,
  `parallel`, `fan_in_sum`, `fan_in_concat` and `residual`, nested, with one input
  or a tuple of inputs (the family-trees and residual-MLP shapes);
* [`inputs_for`][purenet.testing.strategies.inputs_for]: parameters and an input batch for a drawn
  model;
* [`problems`][purenet.testing.strategies.problems]: all of it together with a loss and matching
  targets, ready for [`purenet.testing.assert_gradients`][purenet.testing.assert_gradients].

Each model strategy draws an [`Architecture`][purenet.testing.strategies.Architecture], whose `repr`
is the expression that builds it, so hypothesis's report of a failing example reads
`serial(dense(3), tanh(), dense(2))` and can be pasted into a test.

Needs `hypothesis` (`pip install "purenet[dev]"`); the rest of
[`purenet.testing`][purenet.testing] does not.

Example:

```python
from hypothesis import given, settings
from purenet.testing import assert_gradients, strategies

@settings(max_examples=20, deadline=None)
@given(strategies.problems())
def test_backprop_is_the_gradient(problem):
    assert_gradients(problem.model, problem.loss, problem.params,
                     problem.x, problem.t, state=problem.state)
```
"""

from __future__ import annotations

from typing import Any, NamedTuple

try:
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "purenet.testing.strategies needs hypothesis: pip install hypothesis "
        '(or pip install "purenet[dev]"); the assertions in purenet.testing work without it'
    ) from error

import jax
import jax.numpy as jnp
import numpy as np

from purenet import layers as L
from purenet import losses as losses_module
from purenet.layers import Layer

__all__ = [
    "Architecture",
    "Inputs",
    "Problem",
    "activations",
    "chain_models",
    "inputs_for",
    "mlps",
    "non_chain_models",
    "problems",
]

Shape = tuple


class Architecture(NamedTuple):
    """A drawn model: the layer, the input shape it was drawn for (a tuple of
    shapes for several inputs), its output shape and the expression that
    builds it (its `repr`)."""

    model: Layer
    in_shape: Any
    out_shape: Shape
    expression: str

    def __repr__(self) -> str:
        return f"Architecture({self.expression}, in_shape={self.in_shape})"


class Inputs(NamedTuple):
    """`params` and `state` from `model.init` and an input batch `x`."""

    params: Any
    state: Any
    x: Any


class Problem(NamedTuple):
    """A model, a loss and a point: everything `assert_gradients` needs."""

    architecture: Architecture
    loss: losses_module.Loss
    loss_name: str
    params: Any
    state: Any
    x: Any
    t: Any

    @property
    def model(self) -> Layer:
        return self.architecture.model

    def __repr__(self) -> str:
        x = jax.tree.map(lambda a: a.shape, self.x)
        return f"Problem({self.architecture!r}, loss={self.loss_name}, x shape {x})"


class _Piece(NamedTuple):
    layer: Layer
    expression: str


# -------------------------------------------------------------------- pieces

_SMOOTH = {
    "sigmoid": L.sigmoid,
    "tanh": L.tanh,
    "identity": L.identity,
}
_KINKED = {
    "relu": L.relu,
    "leaky_relu": L.leaky_relu,
}


def activations(*, kinks: bool = False) -> st.SearchStrategy[_Piece]:
    """One activation layer, as a piece `(layer, expression)`.

    Args:
      kinks: also draw `relu` and `leaky_relu`. Off by default: at a kink
        central differences straddle two slopes, so a correct backward can
        disagree with finite differences (never with `jax.grad`).
    """
    names = sorted(_SMOOTH) + (sorted(_KINKED) if kinks else [])
    factories = {**_SMOOTH, **_KINKED}
    return st.sampled_from(names).map(lambda name: _Piece(factories[name](), f"{name}()"))


def _dense(n: int) -> _Piece:
    return _Piece(L.dense(n), f"dense({n})")


def _serial(pieces: list[_Piece]) -> _Piece:
    return _Piece(
        L.serial(*(p.layer for p in pieces)),
        f"serial({', '.join(p.expression for p in pieces)})",
    )


def _architecture(pieces: list[_Piece], in_shape, out_shape) -> Architecture:
    piece = _serial(pieces)
    return Architecture(piece.layer, in_shape, tuple(out_shape), piece.expression)


# Sizes come from a few fixed buckets, not every integer of a range: the edge
# case 1 and one or two larger values. A gradient check compiles its programs
# per shape, and eager operations (``init``'s random kernels, unravelling a
# flat gradient) compile per shape too, so examples that share shapes share
# programs; the structures drawn (depth, branches, activations, losses) are
# where the variety is. Pass your own strategies to widen the sizes.
_WIDTHS = st.sampled_from((1, 2, 5))
_DEPTHS = st.integers(0, 3)
_BATCH_SIZES = st.sampled_from((1, 4))
_OUTPUTS = st.sampled_from((1, 2, 4))
_LENGTHS = st.sampled_from((1, 3))  # sequence lengths T


@st.composite
def mlps(
    draw: st.DrawFn,
    in_features: st.SearchStrategy[int] = _WIDTHS,
    depth: st.SearchStrategy[int] = _DEPTHS,
    widths: st.SearchStrategy[int] = _WIDTHS,
    out_features: st.SearchStrategy[int] = _OUTPUTS,
    kinks: bool = False,
) -> Architecture:
    """A multilayer perceptron `dense(w1), act, ..., dense(out)` on `(d,)`
    inputs: `depth` hidden layers (0 is a linear model).

    Args:
      in_features, depth, widths, out_features: strategies for the sizes.
      kinks: allow ReLU-like activations (see
          [`activations`][purenet.testing.strategies.activations]).
    """
    d = draw(in_features)
    pieces = []
    for _ in range(draw(depth)):
        pieces += [_dense(draw(widths)), draw(activations(kinks=kinks))]
    k = draw(out_features)
    pieces.append(_dense(k))
    return _architecture(pieces, (d,), (k,))


@st.composite
def _residual_block(draw: st.DrawFn, width: int, kinks: bool) -> _Piece:
    inner = _serial([_dense(width), draw(activations(kinks=kinks))])
    return _Piece(L.residual(inner.layer), f"residual({inner.expression})")


@st.composite
def chain_models(
    draw: st.DrawFn, out_features: st.SearchStrategy[int] = _OUTPUTS, kinks: bool = False
) -> Architecture:
    """A chain (`serial`) of dense layers, activations and residual blocks,
    on a vector `(d,)`, a sequence `(T, d)` (`dense` on every step, then
    `flatten`) or a 2-D input flattened first. The output is `(k,)`.
    """
    kind = draw(st.sampled_from(["vector", "sequence", "flatten_first"]))
    d = draw(_WIDTHS)
    pieces: list[_Piece] = []
    if kind == "vector":
        in_shape = (d,)
    elif kind == "sequence":
        in_shape = (draw(_LENGTHS), d)
        pieces += [_dense(draw(_WIDTHS)), draw(activations(kinks=kinks))]
        pieces.append(_Piece(L.flatten(), "flatten()"))
    else:
        in_shape = (draw(_LENGTHS), d)
        pieces.append(_Piece(L.flatten(), "flatten()"))
    for _ in range(draw(st.integers(0, 3))):
        width = draw(_WIDTHS)
        pieces += [_dense(width), draw(activations(kinks=kinks))]
        if draw(st.booleans()):
            pieces.append(draw(_residual_block(width, kinks)))
    k = draw(out_features)
    pieces.append(_dense(k))
    return _architecture(pieces, in_shape, (k,))


@st.composite
def _block(draw: st.DrawFn, width: int, depth: int, kinks: bool) -> _Piece:
    """A layer `(width,) -> (width,)`: a dense layer with an activation, a
    residual block, or branches joined by a sum or a concatenation."""
    options = ["dense"] + (["residual", "branches_sum", "branches_concat"] if depth > 0 else [])
    kind = draw(st.sampled_from(options))
    if kind == "dense":
        return _serial([_dense(width), draw(activations(kinks=kinks))])
    if kind == "residual":
        inner = draw(_block(width, depth - 1, kinks))
        return _Piece(L.residual(inner.layer), f"residual({inner.expression})")
    n = draw(st.integers(2, 3))
    if kind == "branches_sum":
        branches = [draw(_block(width, depth - 1, kinks)) for _ in range(n)]
        join = _Piece(L.fan_in_sum(), "fan_in_sum()")
        return _serial([_Piece(L.fan_out(n), f"fan_out({n})"), _parallel(branches), join])
    widths = [draw(_WIDTHS) for _ in range(n)]
    branches = [_serial([_dense(w), draw(activations(kinks=kinks))]) for w in widths]
    join = _Piece(L.fan_in_concat(), "fan_in_concat()")
    return _serial(
        [_Piece(L.fan_out(n), f"fan_out({n})"), _parallel(branches), join, _dense(width)]
    )


def _parallel(pieces: list[_Piece]) -> _Piece:
    return _Piece(
        L.parallel(*(p.layer for p in pieces)),
        f"parallel({', '.join(p.expression for p in pieces)})",
    )


@st.composite
def non_chain_models(
    draw: st.DrawFn,
    out_features: st.SearchStrategy[int] = _OUTPUTS,
    max_nesting: int = 2,
    kinks: bool = False,
) -> Architecture:
    """A network that is not a chain: forks (`fan_out`), branches
    (`parallel`), joins (`fan_in_sum`, `fan_in_concat`) and skips
    (`residual`), nested up to `max_nesting` deep. Either one input
    `(d,)`, or a tuple of two or three inputs that `parallel` layers take
    apart and `fan_in_concat` joins (Rumelhart et al.'s family-trees shape).
    The output is `(k,)`.
    """
    width = draw(_WIDTHS)
    pieces: list[_Piece] = []
    if draw(st.booleans()):
        in_shape: Any = (draw(_WIDTHS),)
        pieces.append(_dense(width))
    else:
        count = draw(st.integers(2, 3))
        in_shape = tuple((draw(_WIDTHS),) for _ in range(count))
        groups = [
            _serial([_dense(draw(_WIDTHS)), draw(activations(kinks=kinks))]) for _ in range(count)
        ]
        pieces += [_parallel(groups), _Piece(L.fan_in_concat(), "fan_in_concat()"), _dense(width)]
    for _ in range(draw(st.integers(1, 2))):
        pieces.append(draw(_block(width, max_nesting, kinks)))
    k = draw(out_features)
    pieces.append(_dense(k))
    return _architecture(pieces, in_shape, (k,))


# -------------------------------------------------------------------- inputs


def _seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**31 - 1)


def _batch(rng: np.random.Generator, m: int, in_shape, dtype):
    # Data come from NumPy: a jax.random draw compiles a new XLA program for
    # every new shape (a few hundred ms each), and every example has new shapes.
    if in_shape and isinstance(in_shape[0], tuple):
        return tuple(_batch(rng, m, s, dtype) for s in in_shape)
    return jnp.asarray(rng.standard_normal((m, *in_shape)), dtype)


@st.composite
def inputs_for(
    draw: st.DrawFn,
    model: Layer | Architecture,
    in_shape: Any = None,
    *,
    batch_sizes: st.SearchStrategy[int] = _BATCH_SIZES,
    dtype: Any = jnp.float64,
) -> Inputs:
    """Parameters, state and an input batch for `model`.

    Args:
      model: a [`purenet.layers.Layer`][purenet.layers.core.Layer] or a drawn
        [`Architecture`][purenet.testing.strategies.Architecture] (whose `in_shape` is then the
        default).
      in_shape: the input shape without the batch axis (a tuple of shapes for
        a tuple input).
      batch_sizes: strategy for the batch size `m`.
      dtype: of the params and `x` (float64 by default: gradient checks
        are meant to run in float64, which needs `jax_enable_x64`).

    Returns:
      A strategy of [`Inputs`][purenet.testing.strategies.Inputs]: `params` and `state` from
      `model.init` with a drawn seed, and `x` standard normal (NumPy, from
      the same seed: no compilation per shape) of shape
      `(m, *in_shape)`.
    """
    if isinstance(model, Architecture):
        in_shape = model.in_shape if in_shape is None else in_shape
        model = model.model
    if in_shape is None:
        raise ValueError("in_shape: expected the model's input shape such as (3,), got None")
    seed = draw(_seeds())
    _, params, state = model.init(jax.random.key(seed), in_shape, dtype)
    x = _batch(np.random.default_rng(seed), draw(batch_sizes), in_shape, dtype)
    return Inputs(params, state, x)


_LOSS_NAMES = ("mse", "softmax_cross_entropy", "multilabel_sigmoid_cross_entropy")


@st.composite
def problems(
    draw: st.DrawFn,
    models: st.SearchStrategy[Architecture] | None = None,
    loss_names: tuple[str, ...] = _LOSS_NAMES,
    dtype: Any = jnp.float64,
) -> Problem:
    """A drawn model (default: any of [`mlps`][purenet.testing.strategies.mlps],
    [`chain_models`][purenet.testing.strategies.chain_models],
    [`non_chain_models`][purenet.testing.strategies.non_chain_models]), a loss, a point and targets
    that suit the loss: real targets for `mse`, integer labels or one-hot rows for softmax
    cross-entropy (which then needs two or more outputs), 0/1 for the sigmoid cross-entropies
    (binary cross-entropy then has one output).
    """
    if models is None:
        models = st.one_of(mlps(), chain_models(), non_chain_models())
    name = draw(st.sampled_from(list(loss_names)))
    arch = draw(models)
    k = arch.out_shape[-1]
    if (name == "softmax_cross_entropy" and k < 2) or (
        name == "sigmoid_binary_cross_entropy" and k != 1
    ):
        # Re-draw the head: a final dense layer of a size the loss accepts.
        k = 1 if name == "sigmoid_binary_cross_entropy" else max(k, 2)
        head = _dense(k)
        piece = _serial([_Piece(arch.model, arch.expression), head])
        arch = Architecture(piece.layer, arch.in_shape, (k,), piece.expression)
    inputs = draw(inputs_for(arch, dtype=dtype))
    m = jax.tree.leaves(inputs.x)[0].shape[0]
    rng = np.random.default_rng(draw(_seeds()))
    if name == "mse":
        t = jnp.asarray(rng.standard_normal((m, k)), dtype)
    elif name == "softmax_cross_entropy":
        labels = jnp.asarray(rng.integers(0, k, m), jnp.int32)
        t = labels if draw(st.booleans()) else jax.nn.one_hot(labels, k, dtype=dtype)
    else:
        t = jnp.asarray(rng.random((m, k)) < 0.5, dtype)
    loss = losses_module.LOSSES[name]
    return Problem(arch, loss, name, inputs.params, inputs.state, inputs.x, t)
