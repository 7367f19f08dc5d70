"""The layer contract, checked for every public layer factory of purenet.

`REGISTRY` holds small cases for every factory that `purenet.layers` exports
and every Layer factory of `purenet.models`;
`test_registry_covers_every_public_factory` fails when one has no case. Each
case is checked in float64:

1. the cache crosses `jit`: `jit(backward)(params, jit(forward)(params, x)[1], dy)`
   equals the eager backward, and a cache's leaves are arrays (what is static
   lives in its structure, `purenet.layers.core.Static`);
2. `vmap` over an extra leading axis equals each slice on its own, forward and
   backward;
3. NaN in is NaN out: a NaN in `x` gives NaN in `y`, and in the gradients
   wherever `jax.vjp` of the forward has one (and somewhere in `dx`, unless
   the case says why not); a NaN in `dy` likewise;
4. params that do not fit (another instance's, an extra or a missing key, a
   list for a tuple, params for a parameter-free layer) raise one
   `ValueError` that names the path in params and the layer, eagerly and
   under `jit`;
5. the hand-written backward equals `jax.vjp` of the forward (params and `x`
   cotangents, rtol 1e-10) and a central difference along a random direction
   (1e-6).

Other tests may use the registry (`REGISTRY`, `setup`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import activations, feedback, models
from purenet import layers as L
from purenet.layers.core import Layer, call_forward
from purenet.layers.per_example_rules import layer_grads, layer_sq_norms, sq_norms_of

pytestmark = pytest.mark.usefixtures("x64")

KEY = jax.random.key(0)
M, T, D, H = 2, 5, 4, 3  # batch, steps, features, hidden units


def _x(seed: int, *shape: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float64)


# example 1 has 3 valid positions; example 0 (where the NaN test puts its NaN) all
MASK = jnp.arange(T)[None, :] < jnp.array([T, 3])[:, None]
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 7, (M, T)))
SOFTPLUS = activations.Activation(
    f=jax.nn.softplus, df=lambda x, y: jax.nn.sigmoid(x), name="softplus"
)


class Case(NamedTuple):
    """One registry entry.

    `build(s)` gives `(layer, x, context)`: `context` holds the forward's
    keywords (`train`, `key`, `mask`, `state`). `s = 1` builds a differently
    sized instance (a wider layer, or the same layer on wider inputs) whose
    params must not fit the `s = 0` one. `nan` says why no NaN can be put in
    `x` (empty: one must reach `y`)."""

    factory: str
    build: Callable[[int], tuple[Layer, Any, dict]]
    nan: str = ""


def _seq(s=0):
    return _x(1, M, T, D + s)


REGISTRY: dict[str, Case] = {
    # core: dense, activations, flatten, combinators
    "dense": Case("dense", lambda s: (L.dense(3 + s), _x(1, M, D), {})),
    "elementwise": Case("elementwise", lambda s: (L.elementwise(SOFTPLUS), _x(1, M, D), {})),
    "identity": Case("identity", lambda s: (L.identity(), _x(1, M, D), {})),
    "sigmoid": Case("sigmoid", lambda s: (L.sigmoid(), _x(1, M, D), {})),
    "tanh": Case("tanh", lambda s: (L.tanh(), _x(1, M, D), {})),
    "relu": Case("relu", lambda s: (L.relu(), _x(1, M, D), {})),
    "gelu": Case("gelu", lambda s: (L.gelu(), _x(1, M, D), {})),
    "gelu_tanh": Case("gelu_tanh", lambda s: (L.gelu_tanh(), _x(1, M, D), {})),
    "leaky_relu": Case("leaky_relu", lambda s: (L.leaky_relu(0.1), _x(1, M, D), {})),
    "flatten": Case("flatten", lambda s: (L.flatten(), _x(1, M, 3, 2), {})),
    "serial": Case(
        "serial", lambda s: (L.serial(L.dense(3 + s), L.tanh(), L.dense(2)), _x(1, M, D), {})
    ),
    "parallel": Case(
        "parallel", lambda s: (L.parallel(L.dense(3 + s), L.tanh()), (_x(1, M, D), _x(2, M, 3)), {})
    ),
    "fan_out": Case("fan_out", lambda s: (L.fan_out(2), _x(1, M, D), {})),
    "fan_in_sum": Case(
        "fan_in_sum", lambda s: (L.fan_in_sum(), (_x(1, M, 3), _x(2, M, 3), _x(3, M, 3)), {})
    ),
    "fan_in_concat": Case(
        "fan_in_concat", lambda s: (L.fan_in_concat(), (_x(1, M, 3), _x(2, M, 2)), {})
    ),
    "fan_in_concat_time": Case(
        "fan_in_concat", lambda s: (L.fan_in_concat(axis=1), (_x(1, M, 3, 2), _x(2, M, 1, 2)), {})
    ),
    "residual": Case(
        "residual",
        lambda s: (L.residual(L.serial(L.dense(3), L.tanh(), L.dense(D + s))), _x(1, M, D + s), {}),
    ),
    # conv and pooling
    "conv1d": Case("conv1d", lambda s: (L.conv1d(2 + s, 3), _x(1, M, 6, 2), {})),
    "conv1d_strided": Case(
        "conv1d",
        lambda s: (L.conv1d(2 + s, 3, stride=2, padding="SAME", dilation=2), _x(1, M, 7, 2), {}),
    ),
    "conv2d": Case("conv2d", lambda s: (L.conv2d(2 + s, 2), _x(1, M, 4, 3, 2), {})),
    "conv2d_strided": Case(
        "conv2d",
        lambda s: (
            L.conv2d(2 + s, (3, 2), stride=2, padding="SAME", method="im2col"),
            _x(1, M, 5, 4, 2),
            {},
        ),
    ),
    "max_pool1d": Case("max_pool1d", lambda s: (L.max_pool1d(2), _x(1, M, 6, 2), {})),
    "max_pool2d_same": Case(
        "max_pool2d", lambda s: (L.max_pool2d(3, stride=2, padding="SAME"), _x(1, M, 5, 4, 2), {})
    ),
    "avg_pool1d": Case("avg_pool1d", lambda s: (L.avg_pool1d(2), _x(1, M, 6, 2), {})),
    "avg_pool2d_excluding_pad": Case(
        "avg_pool2d",
        lambda s: (
            L.avg_pool2d(3, stride=2, padding="SAME", count_include_pad=False),
            _x(1, M, 5, 4, 2),
            {},
        ),
    ),
    "global_avg_pool": Case(
        "global_avg_pool", lambda s: (L.global_avg_pool(), _x(1, M, 3, 3, 2), {})
    ),
    # normalization and dropout
    "batchnorm_train": Case(
        "batchnorm", lambda s: (L.batchnorm(), _x(1, 3, D + s), {"train": True})
    ),
    "batchnorm_images": Case(
        "batchnorm", lambda s: (L.batchnorm(), _x(1, M, 2, 2, 3 + s), {"train": True})
    ),
    "batchnorm_eval": Case(
        "batchnorm",
        lambda s: (
            L.batchnorm(),
            _x(1, M, D + s),
            {"state": {"mean": _x(5, D + s), "var": 1.0 + _x(6, D + s) ** 2}},
        ),
    ),
    "layer_norm": Case("layer_norm", lambda s: (L.layer_norm(), _seq(s), {})),
    "dropout_train": Case(
        "dropout", lambda s: (L.dropout(0.5), _x(1, M, 8), {"train": True, "key": KEY})
    ),
    "dropout_eval": Case("dropout", lambda s: (L.dropout(0.5), _x(1, M, D), {})),
    # recurrent
    "rnn": Case("rnn", lambda s: (L.rnn(H + s), _seq(), {})),
    "rnn_h0": Case("rnn", lambda s: (L.rnn(H + s), (_seq(), _x(2, M, H + s)), {})),
    "lstm": Case("lstm", lambda s: (L.lstm(H + s), _seq(), {})),
    "lstm_h0_c0": Case(
        "lstm", lambda s: (L.lstm(H + s), (_seq(), (_x(2, M, H + s), _x(3, M, H + s))), {})
    ),
    "gru": Case("gru", lambda s: (L.gru(H + s), _seq(), {})),
    "gru_h0": Case("gru", lambda s: (L.gru(H + s), (_seq(), _x(2, M, H + s)), {})),
    "last_step": Case("last_step", lambda s: (L.last_step(), _seq(), {})),
    "bidirectional": Case("bidirectional", lambda s: (L.bidirectional(L.gru(H + s)), _seq(), {})),
    "bidirectional_h0": Case(
        "bidirectional",
        lambda s: (L.bidirectional(L.rnn(H + s)), (_seq(), (_x(2, M, H + s), _x(3, M, H + s))), {}),
    ),
    # recurrent with a padding mask: MASK pads example 1 last, MASK[:, ::-1] first
    "rnn_mask": Case("rnn", lambda s: (L.rnn(H + s), _seq(), {"mask": MASK})),
    "lstm_h0_c0_mask": Case(
        "lstm",
        lambda s: (
            L.lstm(H + s),
            (_seq(), (_x(2, M, H + s), _x(3, M, H + s))),
            {"mask": MASK[:, ::-1]},
        ),
    ),
    "gru_mask": Case("gru", lambda s: (L.gru(H + s), _seq(), {"mask": MASK[:, ::-1]})),
    "last_step_mask": Case("last_step", lambda s: (L.last_step(), _seq(), {"mask": MASK})),
    "bidirectional_mask": Case(
        "bidirectional", lambda s: (L.bidirectional(L.lstm(H + s)), _seq(), {"mask": MASK})
    ),
    "bidirectional_h0_mask": Case(
        "bidirectional",
        lambda s: (
            L.bidirectional(L.gru(H + s)),
            (_seq(), (_x(2, M, H + s), _x(3, M, H + s))),
            {"mask": MASK[:, ::-1]},
        ),
    ),
    "embedding": Case(
        "embedding",
        lambda s: (L.embedding(7, D + s), IDS, {}),
        nan="integer ids: no NaN can be put in x",
    ),
    # attention
    "multi_head_attention": Case(
        "multi_head_attention", lambda s: (L.multi_head_attention(2), _seq(2 * s), {"mask": MASK})
    ),
    "multi_head_attention_causal": Case(
        "multi_head_attention", lambda s: (L.multi_head_attention(2, causal=True), _seq(2 * s), {})
    ),
    "multi_head_attention_flash": Case(
        "multi_head_attention",
        lambda s: (L.multi_head_attention(2, causal=True, flash=True), _seq(2 * s), {"mask": MASK}),
    ),
    "scaled_dot_product_attention": Case(
        "scaled_dot_product_attention",
        lambda s: (
            L.scaled_dot_product_attention(causal=True),
            (_seq(), _x(2, M, T, D), _x(3, M, T, 2)),
            {"mask": MASK},
        ),
    ),
    "scaled_dot_product_attention_heads_flash": Case(
        "scaled_dot_product_attention",
        lambda s: (
            L.scaled_dot_product_attention(flash=True),
            (_x(1, M, 3, 2, 2), _x(2, M, T, 2, 2), _x(3, M, T, 2, 3)),
            {"mask": MASK},
        ),
    ),
    "position_embedding": Case(
        "position_embedding", lambda s: (L.position_embedding(7), _seq(s), {})
    ),
    "sinusoidal_positions": Case(
        "sinusoidal_positions", lambda s: (L.sinusoidal_positions(), _seq(), {})
    ),
    "transformer_block": Case(
        "transformer_block",
        lambda s: (
            L.transformer_block(D + 2 * s, 2, mlp_dim=8, causal=True),
            _seq(2 * s),
            {"mask": MASK},
        ),
    ),
    # sharing
    "tied": Case(
        "tied",
        lambda s: (
            L.tied(L.serial(L.dense(D + s), L.tanh(), L.dense(D + s)), [((0, "W"), (2, "W"))]),
            _x(1, M, D + s),
            {},
        ),
    ),
    # models
    "gpt": Case(
        "models.gpt",
        lambda s: (models.gpt(7, T, 1, 2, D + 2 * s, mlp_ratio=2), IDS, {"mask": MASK}),
        nan="integer ids: no NaN can be put in x",
    ),
    # (dropout in a model costs seconds of compilation here; test_models trains with it)
    "gpt_untied_flash": Case(
        "models.gpt",
        lambda s: (models.gpt(7, T, 1, 2, D + 2 * s, mlp_ratio=2, tied=False, flash=True), IDS, {}),
        nan="integer ids: no NaN can be put in x",
    ),
}

# Names `purenet.layers` exports that are not layer factories.
NOT_LAYER_FACTORIES = {
    # the contract and its machinery (every case above goes through them)
    "Layer": "the NamedTuple of the contract",
    "Static": "a cache's static node",
    "make_layer": "builds a Layer from a user's functions; every library layer is made by it",
    "call_forward": "how every caller passes a layer its context",
    "check_params": "the params check behind make_layer",
    "checked_call": "the params check behind make_layer",
    # array functions behind layers, tested in their own modules
    "attention_forward": "attention on arrays (the layers above call it)",
    "attention_backward": "attention on arrays (the layers above call it)",
    "conv_forward": "convolution on arrays (conv1d, conv2d)",
    "conv_backward": "convolution on arrays (conv1d, conv2d)",
    "im2col": "convolution's patches on arrays",
    "col2im": "convolution's patches on arrays",
    "sinusoids": "the table of sinusoidal_positions",
}

# (by name: `purenet.layers.dropout` is the function the package re-exports)
LAYER_MODULES = [
    importlib.import_module(f"purenet.layers.{name}")
    for name in (
        "core",
        "conv",
        "pooling",
        "normalization",
        "dropout",
        "recurrent",
        "attention",
        "sharing",
    )
]


def _returns_layer(fn) -> bool:
    try:
        return typing.get_type_hints(fn).get("return") is Layer
    except Exception:  # an annotation that does not resolve at run time
        return inspect.signature(fn).return_annotation in (Layer, "Layer")


def test_registry_covers_every_public_factory():
    covered = {case.factory for case in REGISTRY.values()}
    model_factories = {
        f"models.{name}" for name in models.__all__ if _returns_layer(getattr(models, name))
    }
    assert model_factories, "models.gpt is not seen as a Layer factory"
    factories = (set(L.__all__) - set(NOT_LAYER_FACTORIES)) | model_factories
    assert not factories - covered, (
        f"public layer factories without a case: {sorted(factories - covered)}"
    )
    assert not covered - factories, f"cases of no public factory: {sorted(covered - factories)}"
    assert set(NOT_LAYER_FACTORIES) <= set(L.__all__), "stale NOT_LAYER_FACTORIES entries"
    for name in set(NOT_LAYER_FACTORIES) - {"make_layer"}:
        assert not _returns_layer(getattr(L, name)), f"{name} returns a Layer: register it"
    # every public function of the layer modules that returns a Layer is exported
    for module in LAYER_MODULES:
        for name, fn in vars(module).items():
            if (
                inspect.isfunction(fn)
                and fn.__module__ == module.__name__
                and not name.startswith("_")
                and _returns_layer(fn)
            ):
                assert name in L.__all__, f"{module.__name__}.{name} is not in layers.__all__"


# ----------------------------------------------------------------------- set-up


def _in_shape(x):
    return tuple(_in_shape(a) for a in x) if isinstance(x, tuple) else tuple(x.shape[1:])


def _is_float(a) -> bool:
    return jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)


def _params_like(layer: Layer, x, seed: int, scale: float | None = 0.5):
    """Params of ``layer``'s structure for inputs like ``x``, drawn from NumPy:
    ``scale`` times standard normal (zeros for ``scale=None``). Not ``init``'s
    draws: initial biases are 0 and gains 1, where a missing term would go
    unseen, and eager ``jax.random`` compiles a program for every new shape.
    ``jax.eval_shape`` gives the structure without running ``init``."""
    shapes = jax.eval_shape(lambda: layer.init(KEY, _in_shape(x), jnp.float64)[1])
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jnp.asarray(
            np.zeros(a.shape) if scale is None else scale * rng.standard_normal(a.shape), a.dtype
        ),
        shapes,
    )


def _random_like(tree, seed: int):
    """Standard normal noise shaped as the floating leaves of ``tree`` (others kept)."""
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    leaves = [rng.standard_normal(a.shape) if _is_float(a) else a for a in leaves]
    return treedef.unflatten(leaves)


# XLA's cheapest compilation: these programs are tiny, compiling them is the cost
_O0 = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class Setup(NamedTuple):
    layer: Layer
    params: Any
    x: Any
    train: bool
    context: dict  # the array keywords (key, mask, state)
    dy: Any
    y: Any  # eager forward
    cache: Any
    grads: Any  # eager backward: (dparams, dx)
    forward: Callable  # jit: (params, x, context) -> (y, cache)
    backward: Callable  # jit: (params, cache, dy) -> (dparams, dx)
    vjp: Callable  # jit: (params, x, context, dy) -> (y, (dparams, dx of the float leaves of x))


@functools.cache
def setup(name: str) -> Setup:
    layer, x, context = REGISTRY[name].build(0)
    context = dict(context)
    train = context.pop("train", False)
    params = _params_like(layer, x, seed=7)

    def forward(params, x, context):
        return layer.forward(params, x, train=train, **context)

    def vjp(params, x, context, dy):
        leaves, treedef = jax.tree.flatten(x)
        where = [i for i, a in enumerate(leaves) if _is_float(a)]

        def f(params, floats):
            full = list(leaves)
            for i, a in zip(where, floats, strict=True):
                full[i] = a
            return forward(params, treedef.unflatten(full), context)[0]

        y, pullback = jax.vjp(f, params, [leaves[i] for i in where])
        return y, pullback(dy)

    y, cache = forward(params, x, context)
    dy = jax.tree.map(lambda a: _x(9, *a.shape), y)
    grads = layer.backward(params, cache, dy)
    return Setup(
        layer,
        params,
        x,
        train,
        context,
        dy,
        y,
        cache,
        grads,
        jax.jit(forward, compiler_options=_O0),
        jax.jit(layer.backward, compiler_options=_O0),
        jax.jit(vjp, compiler_options=_O0),
    )


def _assert_close(a, b, rtol, atol=0.0, what=""):
    assert jax.tree.structure(a) == jax.tree.structure(b), what
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol, err_msg=what)


def _float_leaves(x):
    return [a for a in jax.tree.leaves(x) if _is_float(a)]


def _dx_of_floats(dx, x):
    """The leaves of ``dx`` that belong to the floating leaves of ``x``."""
    return [d for d, a in zip(jax.tree.leaves(dx), jax.tree.leaves(x), strict=True) if _is_float(a)]


# ------------------------------------------------------------------- the checks


@pytest.mark.parametrize("name", REGISTRY)
def test_cache_crosses_jit(name):
    s = setup(name)
    for leaf in jax.tree.leaves(s.cache):
        assert isinstance(leaf, jax.Array), (
            f"a cache leaf is {type(leaf).__name__}, not an array: static things go in Static"
        )
    dparams, dx = s.grads
    assert jax.tree.structure(dparams) == jax.tree.structure(s.params)
    assert jax.tree.structure(dx) == jax.tree.structure(s.x)
    y, cache = s.forward(s.params, s.x, s.context)
    _assert_close(y, s.y, rtol=1e-12, what="jit(forward)")
    _assert_close(
        s.backward(s.params, cache, s.dy),
        s.grads,
        rtol=1e-12,
        atol=1e-14,
        what="jit(backward) of jit(forward)'s cache",
    )


@pytest.mark.parametrize("name", REGISTRY)
def test_vmap_equals_each_slice(name):
    s = setup(name)
    layer, params, context = s.layer, s.params, s.context

    def both(x, dy):
        y, cache = layer.forward(params, x, train=s.train, **context)
        return y, layer.backward(params, cache, dy)

    # another input of the same shape: the batch reversed (and scaled)
    # (NumPy, not eager jax: an eager op compiles a program for every new shape)
    other = jax.tree.map(lambda a: (1.5 if _is_float(a) else 1) * np.asarray(a)[::-1], s.x)
    dy_other = jax.tree.map(lambda a: -2.0 * np.asarray(a), s.dy)
    stacked = jax.tree.map(lambda a, b: np.stack([a, b]), (s.x, s.dy), (other, dy_other))
    ys, grads = jax.jit(jax.vmap(both), compiler_options=_O0)(*stacked)
    first = jax.tree.map(lambda a: a[0], (ys, grads))
    second = jax.tree.map(lambda a: a[1], (ys, grads))
    _assert_close(first, (s.y, s.grads), rtol=1e-12, atol=1e-14, what="vmap, slice 0")
    y, cache = s.forward(params, other, context)
    _assert_close(
        second,
        (y, s.backward(params, cache, dy_other)),
        rtol=1e-12,
        atol=1e-14,
        what="vmap, slice 1",
    )


def _with_nan(tree):
    """``tree`` with a NaN in the last entry of example 0 of its first floating leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    i = next(i for i, a in enumerate(leaves) if _is_float(a))
    leaves[i] = np.array(leaves[i])
    leaves[i][(0,) + (-1,) * (leaves[i].ndim - 1)] = np.nan
    return treedef.unflatten(leaves)


def _nan_where_jax_has(ours, referee, what):
    """Every NaN of ``referee`` (jax.vjp of the forward) is a NaN of ``ours``."""
    for i, (a, b) in enumerate(zip(jax.tree.leaves(ours), jax.tree.leaves(referee), strict=True)):
        missed = np.isnan(b) & ~np.isnan(a)
        assert not missed.any(), (
            f"{what}, leaf {i}: {int(missed.sum())} entries where jax.vjp gives NaN are "
            f"{np.asarray(a)[missed][:3]} here"
        )


def _any_nan(tree) -> bool:
    return any(np.isnan(a).any() for a in _float_leaves(tree))


@pytest.mark.parametrize("name", REGISTRY)
def test_nan_propagates(name):
    s, case = setup(name), REGISTRY[name]
    # a NaN in dy reaches the gradient (dx, or dparams for integer inputs)
    dy_nan = _with_nan(s.dy)
    dparams, dx = s.backward(s.params, s.cache, dy_nan)
    _, (ref_dparams, ref_dx) = s.vjp(s.params, s.x, s.context, dy_nan)
    _nan_where_jax_has(dparams, ref_dparams, "NaN in dy: dparams")
    _nan_where_jax_has(_dx_of_floats(dx, s.x), ref_dx, "NaN in dy: dx")
    assert bool(case.nan) == (not _float_leaves(s.x)), "nan: only for inputs without floats"
    if case.nan:
        return
    x_nan = _with_nan(s.x)
    y, cache = s.forward(s.params, x_nan, s.context)
    assert _any_nan(y), "forward swallowed a NaN in x"
    dparams, dx = s.backward(s.params, cache, s.dy)
    ref_y, (ref_dparams, ref_dx) = s.vjp(s.params, x_nan, s.context, s.dy)
    _nan_where_jax_has(y, ref_y, "NaN in x: y")
    _nan_where_jax_has(dparams, ref_dparams, "NaN in x: dparams")
    _nan_where_jax_has(_dx_of_floats(dx, s.x), ref_dx, "NaN in x: dx")


def _add_key(tree):
    """``tree`` with an extra key in its first dict (depth first), or None."""
    if isinstance(tree, dict):
        return {**tree, "extra": np.zeros(1)}
    if isinstance(tree, tuple | list):
        for i, p in enumerate(tree):
            changed = _add_key(p)
            if changed is not None:
                return type(tree)([*tree[:i], changed, *tree[i + 1 :]])
    return None


def _drop_key(tree):
    """``tree`` with the first key of its first dict removed, or None."""
    if isinstance(tree, dict):
        return {k: v for k, v in list(tree.items())[1:]}
    if isinstance(tree, tuple | list):
        for i, p in enumerate(tree):
            changed = _drop_key(p)
            if changed is not None:
                return type(tree)([*tree[:i], changed, *tree[i + 1 :]])
    return None


def _listify(tree):
    """``tree`` with its first non-empty tuple (depth first) a list, or None."""
    if isinstance(tree, tuple) and tree:
        return list(tree)
    if isinstance(tree, dict):
        for k, v in tree.items():
            changed = _listify(v)
            if changed is not None:
                return {**tree, k: changed}
    return None


def _shapes(tree):
    return jax.tree.map(lambda a: jnp.shape(a), tree)


@pytest.mark.parametrize("name", REGISTRY)
def test_params_that_do_not_fit_name_the_path_and_the_layer(name):
    s = setup(name)
    layer, x, params = s.layer, s.x, s.params
    wrong = {}
    if jax.tree.leaves(params):
        other_layer, other_x, _ = REGISTRY[name].build(1)
        other = _params_like(other_layer, other_x, seed=0, scale=None)
        assert _shapes(other) != _shapes(params), "build(1) must give params of other shapes"
        wrong["another instance's"] = other
    else:
        wrong["a one-entry tuple, for a parameter-free layer"] = (np.zeros(1),)
    dense_params = {"W": np.zeros((3, 3)), "b": np.zeros(3)}  # another layer's (dense(3))
    if _shapes(dense_params) != _shapes(params):
        wrong["dense(3)'s"] = dense_params
    for what, change in (
        ("an extra key", _add_key),
        ("a missing key", _drop_key),
        ("a list for a tuple", _listify),
    ):
        changed = change(params)
        if changed is not None:
            wrong[what] = changed
    eager = functools.partial(layer.forward, train=s.train, **s.context)
    jitted = functools.partial(s.forward, context=s.context)  # raises at trace time
    for i, (what, bad) in enumerate(wrong.items()):
        for run in (eager, jitted) if i == 0 else (eager,):
            with pytest.raises(ValueError) as info:
                run(bad, x)
            message = str(info.value)
            assert re.search(r"(^|: )params\S* \(", message), f"{what} params: {message}"
            assert layer.name in message, f"{what} params: {message}"


def _directional(s: Setup, seed: int, h: float = 1e-5):
    """``(central difference, hand-written, scale)`` of ``<dy, forward>`` along a
    random direction of params and of ``x``'s floating leaves."""
    u_params, u_x = _random_like(s.params, seed), _random_like(s.x, seed + 1)

    def phi(t):
        moved = jax.tree.map(
            lambda a, u: np.asarray(a) + t * np.asarray(u) if _is_float(a) else a,
            (s.params, s.x),
            (u_params, u_x),
        )
        y, _ = s.forward(*moved, s.context)
        return sum(
            np.vdot(a, b) for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(s.dy), strict=True)
        )

    numerical = (phi(h) - phi(-h)) / (2 * h)
    dparams, dx = s.grads
    terms = [
        np.vdot(g, u)
        for g, u in zip(jax.tree.leaves(dparams), jax.tree.leaves(u_params), strict=True)
    ]
    terms += [
        np.vdot(g, u) for g, u in zip(_dx_of_floats(dx, s.x), _float_leaves(u_x), strict=True)
    ]
    return numerical, float(sum(terms)), float(sum(abs(t) for t in terms))


@pytest.mark.parametrize("name", REGISTRY)
def test_backward_is_the_vjp_and_matches_finite_differences(name):
    s = setup(name)
    dparams, dx = s.grads
    y, (ref_dparams, ref_dx) = s.vjp(s.params, s.x, s.context, s.dy)
    _assert_close(y, s.y, rtol=1e-12)
    scale = max(
        [float(np.max(np.abs(a))) for a in jax.tree.leaves((ref_dparams, ref_dx)) if a.size],
        default=1.0,
    )
    _assert_close(dparams, ref_dparams, rtol=1e-10, atol=1e-12 * scale, what="dparams vs jax.vjp")
    _assert_close(
        _dx_of_floats(dx, s.x), ref_dx, rtol=1e-10, atol=1e-12 * scale, what="dx vs jax.vjp"
    )
    for d, a in zip(jax.tree.leaves(dx), jax.tree.leaves(s.x), strict=True):
        if not _is_float(a):  # integer inputs have no gradient: zeros
            assert not np.any(d)
    numerical, analytic, magnitude = _directional(s, seed=11)
    assert magnitude > 0
    assert abs(numerical - analytic) <= 1e-6 * magnitude, (
        f"directional derivative: central difference {numerical}, backward {analytic}"
    )


# ------------------------------------------------------ names through combinators


def test_names_and_children():
    x = _seq()
    assert L.lstm(32).name == "lstm(32)"
    assert L.multi_head_attention(4).name == "multi_head_attention(4)"
    assert L.embedding(97, 64).name == "embedding(97, 64)"
    assert L.position_embedding(16).name == "position_embedding(16)"
    bi = L.bidirectional(L.gru(6))
    assert [k for k, _ in bi.children] == ["forward", "backward"]
    params = _params_like(bi, x, seed=0)
    bad = {
        "forward": params["forward"],
        "backward": {**params["backward"], "Wh": jnp.zeros((6, 1))},
    }
    with pytest.raises(
        ValueError,
        match=r"^params\['backward'\]\['Wh'\] "
        r"\(bidirectional\[backward\], gru\(6\)\)",
    ):
        bi.forward(bad, x)
    block = L.transformer_block(D, 2)
    params = _params_like(block, x, seed=0)
    params = ((params[0][0], {**params[0][1], "Wq": jnp.zeros((D, 1))}), params[1])
    with pytest.raises(ValueError, match=r"multi_head_attention\(2\)"):
        block.forward(params, x)


# ------------------------------------------------------- per-example gradients

# Cases whose layer has params somewhere without a per-example rule (see
# purenet.layers.per_example_rules): the gap, for the lead to see. A layer
# that gains a rule must leave this list (the test below fails until it does).
WITHOUT_PER_EXAMPLE: dict[str, str] = {}
# Cases where examples interact: the rules refuse, saying so.
COUPLED = {"batchnorm_train", "batchnorm_images"}


def _per_example_refusal(s: Setup) -> str | None:
    """The message of the refusal of a per-example rule on this case, or None."""
    try:
        jax.eval_shape(lambda: layer_grads(s.layer, s.params, s.cache, s.dy))
    except ValueError as error:
        return str(error)
    return None


def test_the_cases_without_per_example_gradients_are_listed():
    refused = {name: _per_example_refusal(setup(name)) for name in REGISTRY}
    without = {
        name for name, message in refused.items() if message and "no per-example rule" in message
    }
    coupled = {name for name, message in refused.items() if message and "training mode" in message}
    assert without == set(WITHOUT_PER_EXAMPLE), (
        f"listed but supported: {sorted(set(WITHOUT_PER_EXAMPLE) - without)}; "
        f"unsupported and not listed: {sorted(without - set(WITHOUT_PER_EXAMPLE))}"
    )
    assert coupled == COUPLED


def _per_example_reference(s: Setup):
    """Example i's gradient given row i of dy: jax.vjp of the forward on the
    batch of one (`x[i:i+1]`, `mask[i:i+1]`), stacked by vmap; with a `key`
    (dropout), jax.jacrev through the batch's forward, whose mask the
    per-example rules use (a batch of one would draw another)."""
    if not jax.tree.leaves(s.params):
        return s.params
    if "key" in s.context:

        def each(params):
            y = s.layer.forward(params, s.x, train=s.train, **s.context)[0]
            return sum(
                jnp.sum((a * d).reshape(a.shape[0], -1), axis=1)
                for a, d in zip(jax.tree.leaves(y), jax.tree.leaves(s.dy), strict=True)
            )

        return jax.jacrev(each)(s.params)
    rows = {k: v for k, v in s.context.items() if k == "mask"}
    shared = {k: v for k, v in s.context.items() if k != "mask"}

    def one(x, rows, dy):
        lead = functools.partial(jax.tree.map, lambda a: a[None])
        _, pullback = jax.vjp(
            lambda p: s.layer.forward(p, lead(x), train=s.train, **lead(rows), **shared)[0],
            s.params,
        )
        return pullback(lead(dy))[0]

    return jax.vmap(one)(s.x, rows, s.dy)


@pytest.mark.parametrize("name", REGISTRY)
def test_per_example_grads_and_norms_are_jax_grads_on_batches_of_one(name):
    if name in WITHOUT_PER_EXAMPLE:
        pytest.skip(WITHOUT_PER_EXAMPLE[name])
    s = setup(name)
    if name in COUPLED:
        for rule in (layer_grads, layer_sq_norms):
            with pytest.raises(ValueError, match="training mode"):
                rule(s.layer, s.params, s.cache, s.dy)
        return
    ref = jax.jit(lambda: _per_example_reference(s), compiler_options=_O0)()
    ref_sq = sq_norms_of(ref)
    dx = s.grads[1]
    for rule, want in ((layer_grads, ref), (layer_sq_norms, ref_sq)):
        jitted = jax.jit(functools.partial(rule, s.layer), compiler_options=_O0)
        for got in (rule(s.layer, s.params, s.cache, s.dy), jitted(s.params, s.cache, s.dy)):
            _assert_close(got[0], want, rtol=1e-10, atol=1e-13, what=rule.__name__)
            _assert_close(got[1], dx, rtol=1e-10, atol=1e-13, what=f"{rule.__name__}'s dx")


def _names(layer: Layer) -> set[str]:
    return {layer.name} | {n for _, child in layer.children for n in _names(child)}


RULES = ("feedback_alignment", "sign_symmetry", "direct_feedback_alignment")


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", REGISTRY)
def test_each_learning_rule_applies_or_refuses_by_name(name, rule):
    """Every public layer either trains under each rule of `purenet.feedback`
    (its forward, backward and params are the layer's, traced: no compile) or
    is refused when the rule is built, by a ValueError naming the rule and a
    layer of the model."""
    layer, x, context = REGISTRY[name].build(0)
    context = dict(context)
    train = context.pop("train", False)
    context.pop("state", None)
    try:
        model = getattr(feedback, rule)(layer)
    except ValueError as error:
        message = str(error)
        assert layer.transport is None, f"{layer.name} has a transport but {rule} refused it"
        assert rule in message and any(n in message for n in _names(layer)), message
        return
    _, params, state = jax.eval_shape(lambda: model.init(KEY, _in_shape(x), jnp.float64))
    _, own_params, _ = jax.eval_shape(lambda: layer.init(KEY, _in_shape(x), jnp.float64))
    assert jax.tree.structure(params) == jax.tree.structure(own_params)

    def passes(params, state):
        y, cache = call_forward(model, params, x, state=state, train=train, key=KEY, **context)
        return y, model.backward(params, cache, jax.tree.map(jnp.ones_like, y))

    y, (dparams, _) = jax.eval_shape(passes, params, state)
    expected = jax.eval_shape(lambda: call_forward(layer, _params_like(layer, x, 7), x, **context))
    assert jax.tree.map(lambda a: a.shape, y) == jax.tree.map(lambda a: a.shape, expected[0])
    assert jax.tree.structure(dparams) == jax.tree.structure(own_params)
