"""The forward's context (DESIGN.md, "Inputs and context"): a layer names only
the keywords it uses, and `call_forward` passes it those.

A user's layer written as `forward(params, x)` works in every combinator, in
`backprop`, `objective`, `fit`, `custom_vjp` and the gradient checks, eagerly
and under `jit`; a padding mask or a state it cannot take is a `TypeError`
naming the layer and the keyword, raised before any layer runs; a forward
with `**context` gets everything; a keyword it does not know (one the
contract may add later) is dropped when it is None.
"""

from __future__ import annotations

import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet.layers as L
from purenet import backprop, losses, objective, optim, train
from purenet.interop import custom_vjp
from purenet.layers import core
from purenet.testing import assert_gradients, assert_layer

pytestmark = pytest.mark.usefixtures("x64")

M, T, D = 3, 4, 5
X = jnp.asarray(np.random.default_rng(0).standard_normal((M, D)))
SEQ = jnp.asarray(np.random.default_rng(1).standard_normal((M, T, D)))
TARGETS = jnp.asarray(np.random.default_rng(2).standard_normal((M, 2)))
MASK = jnp.arange(T)[None, :] < jnp.array([4, 2, 3])[:, None]
NO_MASK = "mask: old_scale cannot take a padding mask: its forward has no `mask` keyword"


def old_scale(factor: float = 3.0) -> L.Layer:
    """A layer written before any context keyword existed: `y = factor * x`."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), (), ()

    def forward(params, x):
        return factor * x, ()

    def backward(params, cache, dy):
        return (), factor * dy

    return L.Layer(init, forward, backward, name="old_scale")


def recorder(calls: list) -> L.Layer:
    """An identity layer that appends its context to `calls` when its forward runs."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), (), ()

    def forward(params, x, **context):
        calls.append(context)
        return x, ()

    def backward(params, cache, dy):
        return (), dy

    return L.Layer(init, forward, backward, name="recorder")


def _init(model, shape=(D,)):
    return model.init(jax.random.key(0), shape, jnp.float64)[1]


# ----------------------------------------------------------- without a mask: works


def test_an_old_layer_works_in_every_combinator_eagerly_and_under_jit():
    """serial, parallel, residual and tied give the known answers with a layer
    whose forward names no keyword, in training mode with a key as well."""
    dense = L.dense(2)
    W = _init(dense)
    tied = L.tied(L.serial(L.dense(D), old_scale(), L.dense(D)), [((0, "W"), (2, "W"))])
    A, _, B = _init(tied)
    cases = [
        (L.serial(dense, old_scale()), (W, ()), X, 3 * (X @ W["W"] + W["b"])),
        (L.residual(old_scale()), (), X, 4 * X),
        (L.parallel(old_scale(), old_scale(2.0)), ((), ()), (X, X), (3 * X, 2 * X)),
        (tied, (A, (), B), X, (3 * (X @ A["W"] + A["b"])) @ A["W"] + B["b"]),
    ]
    context = dict(state=(), train=True, key=jax.random.key(1), mask=None)
    for model, params, x, want in cases:
        for run in (model.forward, jax.jit(model.forward)):
            y, _ = run(params, x, **context)
            for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-12)


def test_an_old_layer_works_in_backprop_objective_and_fit():
    model = L.serial(L.dense(2), old_scale(), L.tanh())
    params = _init(model)
    J = objective(model, losses.mse)
    ctx = dict(train=True, key=jax.random.key(3))
    value, grads = jax.jit(lambda p: backprop(model, losses.mse)(p, X, TARGETS, **ctx))(params)
    np.testing.assert_allclose(value, J(params, X, TARGETS), rtol=1e-12)
    want = jax.grad(J)(params, X, TARGETS)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert_gradients(model, losses.mse, params, X, TARGETS)
    result = train.fit(
        model,
        losses.mse,
        optim.sgd(0.1),
        params,
        X,
        TARGETS,
        key=jax.random.key(4),
        epochs=2,
        batch_size=M,
        metric=None,
    )
    assert J(result.params, X, TARGETS) < J(params, X, TARGETS)


def test_an_old_layer_works_in_custom_vjp_and_the_layer_check():
    f = custom_vjp(L.serial(old_scale(), L.relu()))
    np.testing.assert_allclose(jax.grad(lambda x: f(((), ()), x).sum())(X), 3.0 * (X > 0))
    assert_layer(old_scale(), (), X)


# --------------------------------------------------- a mask it cannot take: refused


def test_a_mask_for_a_layer_without_mask_is_refused_before_any_work():
    """In serial, the check runs before the first layer does (eagerly and under
    jit); the message names the path, the layer and `mask`."""
    calls = []
    model = L.serial(L.dense(D), recorder(calls), old_scale())
    params = _init(model, (T, D))
    runs = {
        "forward": lambda: model.forward(params, SEQ, mask=MASK),
        "jit(forward)": lambda: jax.jit(lambda p: model.forward(p, SEQ, mask=MASK))(params),
        "backprop": lambda: backprop(model, losses.mse)(params, SEQ, SEQ, mask=MASK),
        "jit(objective)": lambda: jax.jit(objective(model, losses.mse))(
            params, SEQ, SEQ, mask=MASK
        ),
        "call_forward": lambda: L.call_forward(old_scale(), (), SEQ, mask=MASK),
        "custom_vjp": lambda: custom_vjp(old_scale())((), SEQ, mask=MASK),
    }
    for what, run in runs.items():
        with pytest.raises(TypeError, match=NO_MASK) as error:
            run()
        if what != "call_forward" and what != "custom_vjp":
            assert str(error.value).startswith("serial[2] (old_scale): mask:"), what
        assert calls == [], f"{what}: a layer ran before the refusal"
    # the same model without the mask runs, and the recorder sees the mask=None
    model.forward(params, SEQ)
    assert calls == [dict(state=(), train=False, key=None, mask=None)]


def test_nested_combinators_and_parallel_refuse_a_mask_with_the_path():
    model = L.serial(L.relu(), L.fan_out(2), L.parallel(L.relu(), L.residual(old_scale())))
    with pytest.raises(TypeError, match=NO_MASK) as error:
        model.forward(((), (), ((), ())), SEQ, mask=MASK)
    assert str(error.value).startswith("serial[2], parallel[1], residual (old_scale): mask:")


def test_fit_with_a_mask_refuses_an_old_layer():
    model = L.serial(L.dense(2), old_scale())
    params = _init(model, (T, D))
    with pytest.raises(TypeError, match=NO_MASK):
        train.fit(
            model,
            losses.mse,
            optim.sgd(0.1),
            params,
            SEQ,
            jnp.zeros((M, T, 2)),
            key=jax.random.key(0),
            epochs=1,
            batch_size=M,
            mask=MASK,
            validation=(SEQ, jnp.zeros((M, T, 2)), MASK),
            metric=None,
        )


def test_a_state_for_a_layer_without_state_is_refused():
    message = "serial[0] (old_scale): state: old_scale cannot take state: its forward has no"
    with pytest.raises(TypeError, match=re.escape(message)):
        L.serial(old_scale(), L.relu()).forward(((), ()), X, state=({"mean": X}, ()))
    # an empty state carries nothing: dropped
    L.call_forward(old_scale(), (), X, state=((), ()))


def test_library_layers_that_mix_positions_refuse_a_mask_and_position_wise_ones_take_it():
    for layer, shape in [
        (L.conv1d(2, 3), (T, D)),
        (L.max_pool1d(2), (T, D)),
        (L.global_avg_pool(), (T, D)),
        (L.flatten(), (T, D)),
        (L.batchnorm(), (T, D)),
    ]:
        _, params, state = layer.init(jax.random.key(0), shape, jnp.float64)
        with pytest.raises(TypeError, match=f"mask: {re.escape(layer.name)} cannot take"):
            L.call_forward(layer, params, SEQ, state=state, mask=MASK)
        with pytest.raises(TypeError, match=f"mask: {re.escape(layer.name)} cannot take"):
            layer.forward(params, SEQ, state=state, mask=MASK)  # make_layer's forward too
    for layer in [L.dense(3), L.relu(), L.layer_norm(), L.dropout(0.5), L.fan_out(2)]:
        params = _init(layer, (T, D))
        y, _ = L.call_forward(layer, params, SEQ, train=True, key=jax.random.key(0), mask=MASK)
        want, _ = layer.forward(params, SEQ, train=True, key=jax.random.key(0))
        for a, b in zip(jax.tree.leaves(y), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------- what each forward is given


def test_a_forward_with_var_keywords_gets_everything():
    calls = []
    key = jax.random.key(5)
    L.call_forward(recorder(calls), (), X, state=(), train=True, key=key, mask=MASK, extra=7)
    assert calls == [dict(state=(), train=True, key=key, mask=MASK, extra=7)]


def test_a_forward_is_given_exactly_the_keywords_it_names():
    seen = {}

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape), (), ()

    def forward(params, x, *, train=False, mask=None):
        seen.update(train=train, mask=mask)
        return x, ()

    layer = L.Layer(init, forward, lambda p, c, dy: ((), dy), name="some")
    L.serial(layer).forward(((),), SEQ, train=True, key=jax.random.key(0), mask=MASK)
    assert seen["train"] is True and seen["mask"] is MASK
    # a make_layer layer called directly with the whole context: the same
    wrapped = L.make_layer(init, forward, lambda p, c, dy: ((), dy), name="some")
    assert tuple(inspect.signature(wrapped.forward).parameters) == ("params", "x", "train", "mask")
    wrapped.forward((), SEQ, state=(), train=False, key=jax.random.key(0), mask=None)
    assert seen == dict(train=False, mask=None)


def test_a_keyword_added_later_is_dropped_for_old_layers_when_none():
    """A keyword the contract does not know yet (`segment_ids` here): given
    to a layer that names it, passed; to one that does not, dropped when
    None, refused otherwise."""
    y, _ = L.call_forward(old_scale(), (), X, segment_ids=None)
    np.testing.assert_allclose(y, 3 * X)
    with pytest.raises(TypeError, match="segment_ids: old_scale cannot take `segment_ids`"):
        L.call_forward(old_scale(), (), X, segment_ids=jnp.zeros((M,), int))
    calls = []
    L.call_forward(recorder(calls), (), X, segment_ids=1)
    assert calls == [dict(segment_ids=1)]


def test_the_signature_is_read_once_per_forward():
    layer = old_scale()
    before = core._named_cached.cache_info()
    for _ in range(3):
        L.call_forward(layer, (), X, mask=None, train=True)
    after = core._named_cached.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 2
