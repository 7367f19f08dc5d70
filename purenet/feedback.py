"""Learning rules other than backprop: feedback alignment, sign symmetry, DFA.

Backprop sends the error at a layer's output back to its input through the
transpose of the layer's forward weights, `dx = dy W^T`: the feedback
pathway must know the forward weights exactly, which a brain cannot do (the
"weight transport" problem, Grossberg 1987). Each rule here keeps every
layer's own update, `dW = x^T dy`, and changes what the error is sent back
through:

| rule | the error sent to a layer's input | reference |
| --- | --- | --- |
| feedback alignment | `dx = dy B^T`, `B` fixed and random | Lillicrap et al. 2016 |
| sign symmetry | `dx = dy (M * sign(W))^T` | Liao, Leibo & Poggio 2016 |
| direct feedback alignment | `dx = e B_l`, `e` the output error | Noekland 2016 |

Each returns a [`Layer`][purenet.layers.core.Layer] with the model's params
(`rule.init(key, shape)` gives the params of `model.init(key, shape)` for
the same key), so `purenet.backprop(rule, loss)`, `make_train` and `fit`
train with it unchanged, and every optimizer, penalty and checkpoint applies.
The feedback matrices are not trained: they are drawn in `init` and kept in
the rule's state, `{"feedback": (one entry per transport layer), "model":
model's own state}` (or `()` when both are empty), which training loops
carry and `update_state` keeps.

**How.** A layer declares the params key that carries its error back,
`Layer.transport` (`"W"` for `dense`, `conv1d`, `conv2d`), and with it the
promise that its backward gives a `dx` linear in `params[transport]` and a
params gradient that does not read it. So the rule's backward is the
model's own backward with `B` in `W`'s place: `model.backward({..., "W": B},
cache, dy)` gives backprop's `dW = x^T dy` and `dx = dy B^T`. The output
layer's update is backprop's under every rule (it never reads `W`).

Models: layers with a transport, parameter-free layers and `batchnorm`
(whose params act per channel: its backward transports no matrix), through
`serial`, `parallel` and `residual` (DFA: nested `serial` chains only). Any
other layer with params (recurrent, attention, `layer_norm`, `embedding`)
or any other combinator raises a `ValueError` naming the layer and the rule.

**Feedback scale.** Each layer's update is linear in one feedback matrix
(DFA) or in a product of them (FA), so scaling a feedback matrix by `c`
scales the updates it reaches by `c`: under SGD a per-layer learning
rate, under Adam nothing at all (Adam's step is invariant to a constant
rescaling of a parameter's gradient, up to its `eps`). Sign symmetry's
`sign(W)` has entries of 1 where `W`'s are about `1/sqrt(n)`, which under
SGD amplifies the error sent back by about `sqrt(n)` per layer; Liao et al.
needed batch normalisation (or the sign of the gradient) for deep networks.

[`alignment`][purenet.feedback.alignment] measures, per layer, the angle
between the rule's update and the true gradient, and between `W` and its
feedback matrix (Lillicrap et al. 2016, Fig. 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks, _paths
from purenet.cost import backprop
from purenet.layers import Layer, call_forward, make_layer
from purenet.layers.checking import within
from purenet.layers.core import as_shape
from purenet.losses import Loss
from purenet.params import Initializer, get_initializer

# Feedback matrices are drawn from `fold_in(key, _FEEDBACK)`, so the params
# drawn from `key` itself are those of the model.
_FEEDBACK = 0xFEEDBAC

# Layers with params but no transport whose backward every rule keeps: their
# params act elementwise (per channel), so no matrix is transported.
_ELEMENTWISE_PARAMS = ("batchnorm",)

_SIGN_VARIANTS = ("uSF", "brSF", "frSF")
_COMBINATORS = ("serial", "parallel", "residual")


class _Leaf(NamedTuple):
    path: tuple  # keys from the root of params to the layer's params
    layer: Layer
    label: str  # "serial[2], dense(8)"
    where: str  # "serial[2]"


class Alignment(NamedTuple):
    """The angles of one layer, in degrees (see [`alignment`][purenet.feedback.alignment]).

    Attributes:
      update: between the rule's gradient of `W` and backprop's.
      feedback: between `W` and the feedback matrix standing in for it
        (NaN for direct feedback alignment, whose `B_l` has another shape).
    """

    update: jax.Array
    feedback: jax.Array


# ------------------------------------------------------------------ the model's tree


def _kind(layer: Layer) -> str | None:
    """Which public combinator `layer` is, from its name and children."""
    keys = tuple(k for k, _ in layer.children)
    if layer.name in ("serial", "parallel") and keys == tuple(range(len(keys))):
        return layer.name
    if layer.name == "residual" and keys == (None,):
        return "residual"
    return None


def _leaves(model: Layer, rule: str, kinds: tuple[str, ...]) -> list[_Leaf]:
    """Every layer without children, in forward order, with its params path;
    refuses any combinator not in `kinds`."""
    leaves = []

    def walk(layer, path, segments):
        where = ", ".join(segments) or "the top of the model"
        if not layer.children:
            leaves.append(_Leaf(path, layer, ", ".join([*segments, layer.name]), where))
            return
        if _kind(layer) not in kinds:
            _checks.fail(
                "model",
                f"layers combined by {', '.join(kinds)} for {rule}",
                f"{layer.name} at {where}, which {rule} is not defined for",
            )
        for key, child in layer.children:
            if key is None:
                walk(child, path, [*segments, layer.name])
            else:
                walk(child, path + (key,), [*segments, f"{layer.name}[{key}]"])

    walk(model, (), [])
    return leaves


def _matrix(params, site: _Leaf):
    """The transported matrix (`W`) of a transport layer."""
    return _paths.get(params, site.path, "params")[site.layer.transport]


def _check_model(model, rule: str) -> None:
    if not isinstance(model, Layer):
        _checks.fail_type(
            "model", f"a purenet Layer (e.g. purenet.layers.serial(...)) for {rule}", type(model)
        )


def _transports(leaves: list[_Leaf], rule: str, model: Layer) -> list[_Leaf]:
    sites = [leaf for leaf in leaves if leaf.layer.transport is not None]
    if not sites:
        _checks.fail(
            "model",
            f"a model with a dense or convolutional layer (a Layer with a transport) for {rule}",
            f"{model.name}, which has none",
        )
    return sites


def _check_leaf_params(leaves: list[_Leaf], params, rule: str) -> None:
    """Refuse a layer with params that the rule has no feedback for."""
    for leaf in leaves:
        if leaf.layer.transport is not None or leaf.layer.name in _ELEMENTWISE_PARAMS:
            continue
        # params checked against the model first (make_layer's forward, or init's own)
        if jax.tree.leaves(_paths.get(params, leaf.path, "params")):
            _checks.fail(
                "model",
                f"dense or convolutional layers (a Layer with a transport), parameter-free "
                f"layers or batchnorm for {rule}",
                f"{leaf.layer.name} at {leaf.where}, which has params but no weight transport, "
                f"so {rule} is not defined for it",
            )


def _split_state(state, rule: str, needs_feedback: bool, count: int):
    """`(feedback, model_state)` from the rule's state, checked."""
    if isinstance(state, tuple) and not state:
        if needs_feedback:
            _checks.fail(
                "state",
                f"the state from {rule}(model).init (its feedback matrices; pass state=...)",
                "()",
            )
        return (), ()
    if not isinstance(state, dict) or set(state) != {"feedback", "model"}:
        _checks.fail(
            "state",
            f"the state from {rule}(model).init: a dict with keys 'feedback' and 'model'",
            type(state).__name__ if not isinstance(state, dict) else f"keys {sorted(state)}",
        )
    feedback = state["feedback"]
    if not isinstance(feedback, tuple) or len(feedback) != count:
        _checks.fail(
            "state['feedback']",
            f"a tuple of {count} feedback matrices from {rule}(model).init",
            f"{type(feedback).__name__} of length {len(feedback)}"
            if isinstance(feedback, tuple | list)
            else type(feedback).__name__,
        )
    return feedback, state["model"]


def _join_state(feedback, model_state):
    if not feedback and isinstance(model_state, tuple) and not model_state:
        return ()
    return {"feedback": tuple(feedback), "model": model_state}


def _check_shapes(sites, feedback, want: Callable, rule: str) -> None:
    for i, (site, B) in enumerate(zip(sites, feedback, strict=True)):
        expected = want(site)
        if tuple(jnp.shape(B)) != tuple(expected):
            _checks.fail(
                f"state['feedback'][{i}]",
                f"shape {tuple(expected)} for {site.label} under {rule}",
                f"shape {tuple(jnp.shape(B))}",
            )


def _substitute(params, sites: list[_Leaf], feedback) -> Any:
    """params with each transport layer's matrix replaced by its feedback."""
    for site, B in zip(sites, feedback, strict=True):
        own, key = _paths.get(params, site.path, "params"), site.layer.transport
        params = _paths.replace(params, site.path, {**own, key: B.astype(own[key].dtype)})
    return params


def _input_shape(x):
    if isinstance(x, tuple | list):
        return tuple(_input_shape(xi) for xi in x)
    return tuple(jnp.shape(x)[1:])


def _redraw(model: Layer, sites, key, in_shape, dtype) -> tuple:
    """Each transport matrix of a fresh `model.init`: feedback drawn from the
    distribution of the forward weights at initialisation."""
    other = model.init(key, in_shape, dtype)[1]
    return tuple(_paths.get(other, s.path, "params")[s.layer.transport] for s in sites)


def _rule_layer(model, init, forward, backward, name):
    def update_state(state, cache):
        if isinstance(state, tuple) and not state:
            return state
        return {
            "feedback": state["feedback"],
            "model": model.update_state(state["model"], cache[0]),
        }

    return make_layer(
        init,
        forward,
        backward,
        update_state,
        name=name,
        children=((None, model),),
    )


# ------------------------------------------------------------------ feedback alignment


def feedback_alignment(model: Layer, B_init: str | Initializer | None = None) -> Layer:
    """Feedback alignment (Lillicrap, Cownden, Tweed & Akerman 2016, "Random
    synaptic feedback weights support error backpropagation for deep
    learning", Nature Communications 7:13276).

    Every transport layer (dense, conv) sends the error back through a fixed
    random matrix `B` of `W`'s shape instead of `W`:
    `dx = dy B^T` (for a convolution, the transposed convolution with kernel
    `B`), while its own update stays `dW = x^T dy`. The forward weights come
    to align with `B` so that `dy B^T` lies within 90 degrees of backprop's
    `dy W^T` (the paper's Fig. 2; measure it with
    [`alignment`][purenet.feedback.alignment]).

    Args:
      model: a [`Layer`][purenet.layers.core.Layer] made of dense and
        convolutional layers, parameter-free layers and batchnorm, through
        `serial`, `parallel` and `residual`.
      B_init: how each `B` is drawn: None (default) draws it from the
        distribution of the layer's own `W` at initialisation (a second
        `model.init` with another key; as biotorch, which initialises its
        feedback weights as the forward ones), else an initialiser name or
        function `(key, shape, dtype)` applied to `W`'s shape.

    Returns:
      a Layer with `model`'s params whose state is
      `{"feedback": (B for each transport layer, in forward order), "model": model's state}`.

    Raises:
      ValueError: for a layer with params but no transport (recurrent,
        attention, `layer_norm`, `embedding`), another combinator, or a
        model without a transport layer; naming the layer and the rule.
    """
    rule = "feedback_alignment"
    _check_model(model, rule)
    B_init = None if B_init is None else get_initializer(B_init)
    leaves = _leaves(model, rule, _COMBINATORS)
    sites = _transports(leaves, rule, model)

    def init(key, in_shape, dtype=jnp.float32):
        out, params, state = model.init(key, in_shape, dtype)
        _check_leaf_params(leaves, params, rule)
        key = jax.random.fold_in(key, _FEEDBACK)
        if B_init is None:
            feedback = _redraw(model, sites, key, in_shape, dtype)
        else:
            keys = jax.random.split(key, len(sites))
            feedback = tuple(
                B_init(k, _matrix(params, s).shape, dtype) for k, s in zip(keys, sites, strict=True)
            )
        return out, params, _join_state(feedback, state)

    def forward(params, x, *, state=(), **context):
        _check_leaf_params(leaves, params, rule)
        feedback, model_state = _split_state(state, rule, True, len(sites))
        _check_shapes(sites, feedback, lambda s: _matrix(params, s).shape, rule)
        y, cache = call_forward(model, params, x, state=model_state, **context)
        return y, (cache, feedback)

    def backward(params, cache, dy):
        cache, feedback = cache
        return model.backward(_substitute(params, sites, feedback), cache, dy)

    return _rule_layer(model, init, forward, backward, f"{rule}({model.name})")


# ------------------------------------------------------------------------ sign symmetry


def sign_symmetry(model: Layer, variant: str = "uSF") -> Layer:
    """Sign-concordant feedback (Liao, Leibo & Poggio 2016, "How important is
    weight symmetry in backpropagation?", AAAI).

    Every transport layer sends the error back through `V = M * sign(W)`,
    computed from the current `W` at each backward (the feedback's signs
    follow the forward weights'; its magnitudes do not), `dx = dy V^T`; its
    own update stays `dW = x^T dy`. The paper's variants:

    * `"uSF"` (uniform sign-concordant feedback): `M = 1`, `V = sign(W)`;
    * `"frSF"` (fixed random magnitude): `M` drawn once in `init` and
      kept in the state;
    * `"brSF"` (batchwise random magnitude): `M` drawn anew at every
      forward from its `key` (a forward without a key has no feedback: its
      backward raises).

    Random magnitudes are `|W'|` for `W'` a fresh draw of the layer's
    initialiser. The paper finds the signs matter and the magnitudes do not,
    and that deep networks need batch normalisation or its "Batch Manhattan"
    update (`sign` of the gradient) with this rule: `|V| = 1` need not
    match the scale of `W`.

    Args:
      model: as for [`feedback_alignment`][purenet.feedback.feedback_alignment].
      variant: `"uSF"` (default), `"frSF"` or `"brSF"`.

    Returns:
      a Layer with `model`'s params; its state holds `M` for `"frSF"`
      (`{"feedback": (M, ...), "model": ...}`), else only the model's state.

    Raises:
      ValueError: as [`feedback_alignment`][purenet.feedback.feedback_alignment],
        or for an unknown `variant`.
    """
    rule = "sign_symmetry"
    _check_model(model, rule)
    _checks.one_of("variant", variant, _SIGN_VARIANTS)
    leaves = _leaves(model, rule, _COMBINATORS)
    sites = _transports(leaves, rule, model)
    fixed = variant == "frSF"

    def init(key, in_shape, dtype=jnp.float32):
        out, params, state = model.init(key, in_shape, dtype)
        _check_leaf_params(leaves, params, rule)
        magnitudes = ()
        if fixed:
            drawn = _redraw(model, sites, jax.random.fold_in(key, _FEEDBACK), in_shape, dtype)
            magnitudes = tuple(jnp.abs(M) for M in drawn)
        return out, params, _join_state(magnitudes, state)

    def forward(params, x, *, state=(), key=None, **context):
        _check_leaf_params(leaves, params, rule)
        magnitudes, model_state = _split_state(state, rule, fixed, len(sites) if fixed else 0)
        if fixed:
            _check_shapes(sites, magnitudes, lambda s: _matrix(params, s).shape, rule)
        elif variant == "brSF":
            magnitudes = None
            if key is not None:
                dtype = _paths.get(params, sites[0].path, "params")[sites[0].layer.transport].dtype
                drawn = _redraw(
                    model, sites, jax.random.fold_in(key, _FEEDBACK), _input_shape(x), dtype
                )
                magnitudes = tuple(jnp.abs(M) for M in drawn)
        y, cache = call_forward(model, params, x, state=model_state, key=key, **context)
        return y, (cache, magnitudes)

    def backward(params, cache, dy):
        cache, magnitudes = cache
        if magnitudes is None:
            _checks.fail(
                "key",
                "a key in the forward of sign_symmetry(model, 'brSF'), which draws new "
                "feedback magnitudes for every batch",
                "None",
            )
        signs = [jnp.sign(_matrix(params, s)) for s in sites]
        if magnitudes:
            signs = [M * S for M, S in zip(magnitudes, signs, strict=True)]
        return model.backward(_substitute(params, sites, signs), cache, dy)

    return _rule_layer(model, init, forward, backward, f"{rule}({model.name}, {variant})")


# ---------------------------------------------------------- direct feedback alignment


def direct_feedback_alignment(model: Layer, B_init: str | Initializer | None = None) -> Layer:
    """Direct feedback alignment (Noekland 2016, "Direct Feedback Alignment
    Provides Learning in Deep Neural Networks", NeurIPS).

    The error at the output, `e = dJ/dy` (for softmax cross-entropy
    `(p - t) / m`), is sent straight to every hidden layer: each transport
    layer but the first receives, at its input, `e B_l` with its own fixed
    random `B_l` of shape `(n_out, *in_shape_l)` (`n_out` the size of the
    model's output, `in_shape_l` that of the layer's input) in place of the
    error its backward would send; the layers below turn it into their updates
    as backprop does (an activation multiplies it by `f'`: the paper's
    `delta a_l = (B_l e) * f'(a_l)`). The top layer's update is backprop's
    (it receives `e` itself); the first transport layer's `dx`, sent to the
    model's input, is its backprop one (no hidden layer receives it).

    Args:
      model: a `serial` chain (serials may nest) of dense and convolutional
        layers, parameter-free layers (activations, flatten, pooling,
        dropout) and batchnorm.
      B_init: how each `B_l` is drawn: None (default) uniform on
        `[-1/sqrt(n_out), 1/sqrt(n_out)]` (unit-scale rows for `e`'s
        `n_out` entries: our choice), else an initialiser name or function
        applied to the shape `(n_out, prod(in_shape_l))`.

    Returns:
      a Layer with `model`'s params whose state is
      `{"feedback": (B_l for each transport layer after the first), "model": model's state}`.

    Raises:
      ValueError: for any combinator but `serial`, a layer with params but
        no transport, or a model without a transport layer, naming the layer
        and the rule.
    """
    rule = "direct_feedback_alignment"
    _check_model(model, rule)
    B_init = None if B_init is None else get_initializer(B_init)
    leaves = _leaves(model, rule, ("serial",))
    sites = _transports(leaves, rule, model)
    fed = sites[1:]

    def shapes(in_shape, dtype):
        """The input shape of every leaf and the model's output shape."""
        seen = []

        def run(key):
            shape = in_shape
            for leaf in leaves:
                seen.append(shape)
                shape = leaf.layer.init(key, shape, dtype)[0]
            seen.append(shape)
            return jnp.zeros(())

        jax.eval_shape(run, jax.random.key(0))
        return dict(zip((leaf.path for leaf in leaves), seen, strict=False)), seen[-1]

    def init(key, in_shape, dtype=jnp.float32):
        out, params, state = model.init(key, in_shape, dtype)
        _check_leaf_params(leaves, params, rule)
        inputs, _ = shapes(in_shape, dtype)
        n_out = math.prod(as_shape(out, "the model's output shape"))
        keys = jax.random.split(jax.random.fold_in(key, _FEEDBACK), max(len(fed), 1))
        feedback = []
        for k, site in zip(keys, fed, strict=False):
            shape = as_shape(inputs[site.path], f"the input shape of {site.label}")
            if B_init is None:
                bound = 1 / math.sqrt(n_out)
                B = jax.random.uniform(k, (n_out, *shape), dtype, -bound, bound)
            else:
                B = B_init(k, (n_out, math.prod(shape)), dtype).reshape(n_out, *shape)
            feedback.append(B)
        return out, params, _join_state(tuple(feedback), state)

    def forward(params, x, *, state=(), **context):
        _check_leaf_params(leaves, params, rule)
        feedback, model_state = _split_state(state, rule, bool(fed), len(fed))
        if feedback:
            inputs, out = shapes(_input_shape(x), feedback[0].dtype)
            n_out = math.prod(out)
            _check_shapes(fed, feedback, lambda s: (n_out, *inputs[s.path]), rule)
        y, cache = call_forward(model, params, x, state=model_state, **context)
        return y, (cache, feedback)

    def backward(params, cache, dy):
        cache, feedback = cache
        by_path = {site.path: B for site, B in zip(fed, feedback, strict=True)}
        e = dy.reshape(dy.shape[0], -1)

        def back(layer, params, cache, dy, path):
            if layer.children:  # a serial (the only combinator allowed)
                grads = [None] * len(layer.children)
                for i in reversed(range(len(layer.children))):
                    child = layer.children[i][1]
                    with within(f"serial[{i}]", child):
                        grads[i], dy = back(child, params[i], cache[i], dy, path + (i,))
                return tuple(grads), dy
            grads, dx = layer.backward(params, cache, dy)
            if path in by_path:
                B = by_path[path]
                dx = jnp.tensordot(e, B.astype(e.dtype), axes=1)
            return grads, dx

        return back(model, params, cache, dy, ())

    return _rule_layer(model, init, forward, backward, f"{rule}({model.name})")


# ---------------------------------------------------------------------- alignment


_RULES = ("feedback_alignment", "sign_symmetry", "direct_feedback_alignment")


def _angle(a, b):
    """The angle between two arrays as vectors, in degrees (NaN if one is zero).

    `2 atan2(|u - v|, |u + v|)` of the unit vectors `u`, `v` (Kahan): exact
    near 0 and 180 degrees, where `arccos` of the cosine loses half the digits."""
    u = a.ravel() / jnp.linalg.norm(a)
    v = b.ravel() / jnp.linalg.norm(b)
    return jnp.degrees(2 * jnp.arctan2(jnp.linalg.norm(u - v), jnp.linalg.norm(u + v)))


def alignment(rule_model: Layer, loss: Loss) -> Callable:
    """How closely a rule follows the gradient, per layer.

    For each transport layer, the angle between the rule's update of `W`
    and the true gradient of the original model (from
    [`purenet.backprop`][purenet.cost.backprop] of the model the rule was
    built from; its hand-written backward is checked against `jax.grad`),
    and the angle between `W` and the feedback matrix that stands in for it
    (`B` for feedback alignment; `M * sign(W)` for sign symmetry, `sign(W)`
    for its `"uSF"` and `"brSF"` variants, whose `M` is constant or drawn
    anew). Lillicrap et al. (2016, Fig. 2) plot the first falling below 90
    degrees as training aligns `W` with `B`: the rule's update is then a
    descent direction. Angles of the whole flattened arrays, in degrees.

    Args:
      rule_model: a model from [`feedback_alignment`][purenet.feedback.feedback_alignment],
        [`sign_symmetry`][purenet.feedback.sign_symmetry] or
        [`direct_feedback_alignment`][purenet.feedback.direct_feedback_alignment].
      loss: a [`purenet.losses.Loss`][purenet.losses.Loss].

    Returns:
      `f(params, x, t, *, state=(), **ctx) -> {label: Alignment}`, one
      [`Alignment`][purenet.feedback.Alignment] per transport layer keyed by
      its path (`"serial[2], dense(8)"`), in forward order; pure, so it runs
      under `jit` and `vmap`.
    """
    rule = rule_model.name.split("(")[0] if isinstance(rule_model, Layer) else None
    if rule not in _RULES or len(rule_model.children) != 1:
        _checks.fail(
            "rule_model",
            "a model from purenet.feedback (feedback_alignment, sign_symmetry or "
            "direct_feedback_alignment)",
            getattr(rule_model, "name", type(rule_model).__name__),
        )
    model = rule_model.children[0][1]
    kinds = (
        ("serial",) if rule == "direct_feedback_alignment" else ("serial", "parallel", "residual")
    )
    sites = _transports(_leaves(model, rule, kinds), rule, model)
    rule_grads = backprop(rule_model, loss)
    true_grads = backprop(model, loss)

    def f(params, x, t, *, state=(), **ctx):
        _, grads = rule_grads(params, x, t, state=state, **ctx)
        model_state = () if isinstance(state, tuple) and not state else state["model"]
        feedback = () if isinstance(state, tuple) and not state else state["feedback"]
        _, true = true_grads(params, x, t, state=model_state, **ctx)
        angles = {}
        for i, site in enumerate(sites):
            key = site.layer.transport
            W = _paths.get(params, site.path, "params")[key]
            if rule == "feedback_alignment":
                fb = _angle(W, feedback[i])
            elif rule == "sign_symmetry":
                fb = _angle(W, jnp.sign(W) * (feedback[i] if feedback else 1.0))
            else:
                fb = jnp.full((), jnp.nan, W.dtype)
            update = _angle(
                _paths.get(grads, site.path, "grads")[key],
                _paths.get(true, site.path, "grads")[key],
            )
            angles[site.label] = Alignment(update, fb)
        return angles

    return f
