"""purenet.per_example: each example's gradient and its squared norm from the
hand-written backward, against `jax.vmap(jax.grad(objective))` on batches of
one and against `jax.jacrev` of each example's loss through the batch's forward
(the reference that also holds for dropout, whose mask is the batch's), in
float64, eagerly and under `jit`; the gradient noise scale's estimates
against a problem whose `G` and `Sigma` are known exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet
from purenet import layers as L
from purenet import losses
from purenet import per_example as pe
from purenet.layers import per_example_rules as rules

KEY = jax.random.key(0)
M, T = 4, 5
RTOL = 1e-10


def _x(seed, *shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float64)


def _params(model, x, seed=3):
    """Params of model's structure drawn from NumPy (biases and gains not 0 and 1)."""
    shape = tuple(a.shape[1:] for a in x) if isinstance(x, tuple) else x.shape[1:]
    shapes = jax.eval_shape(lambda: model.init(KEY, shape, jnp.float64)[1])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape)), shapes)


IDS = jnp.asarray(np.random.default_rng(0).integers(0, 7, (M, T)))
LABELS = jnp.asarray(np.random.default_rng(1).integers(0, 3, (M, T))).at[1, 3:].set(-1)
MASK = jnp.arange(T)[None, :] < jnp.array([T, T, 2, 4])[:, None]
CLASSES = jnp.array([0, 2, 1, 1])
EMBEDDING = L.embedding(7, 4)._replace(
    per_example=rules.embedding_per_example, sq_norms=rules.embedding_sq_norms
)
SEQ = losses.sequence_softmax_cross_entropy
CE = losses.softmax_cross_entropy
BN_STATE = {"mean": _x(5, 3), "var": 1.0 + _x(6, 3) ** 2}

# name -> (model, x, t, loss, context); the context's arrays with a batch axis
# (mask) are sliced with x in the batch-of-one reference
CASES = {
    "dense_rows": (L.serial(L.dense(5), L.tanh(), L.dense(3)), _x(1, M, 6), CLASSES, CE, {}),
    "dense_mse": (L.dense(2), _x(1, M, 3), _x(2, M, 2), losses.mse, {}),
    "dense_sequences_mask": (
        L.serial(L.dense(6), L.tanh(), L.dense(3)),
        _x(1, M, T, 4),
        (LABELS, MASK),
        SEQ,
        {"mask": MASK},
    ),
    "dense_rank4": (
        L.serial(L.dense(3), L.relu(), L.flatten(), L.dense(3)),
        _x(1, M, 2, 3, 4),
        CLASSES,
        CE,
        {},
    ),
    "conv1d": (
        L.serial(L.conv1d(3, 3, stride=2, padding="SAME"), L.relu(), L.flatten(), L.dense(3)),
        _x(1, M, 7, 2),
        CLASSES,
        CE,
        {},
    ),
    "conv2d": (
        L.serial(L.conv2d(2, 2), L.tanh(), L.max_pool2d(2), L.flatten(), L.dense(3)),
        _x(1, M, 5, 4, 2),
        CLASSES,
        CE,
        {},
    ),
    "conv2d_im2col": (
        L.serial(L.conv2d(3, (3, 2), padding="SAME", method="im2col"), L.global_avg_pool()),
        _x(1, M, 5, 4, 2),
        CLASSES,
        CE,
        {},
    ),
    "layer_norm": (
        L.serial(L.dense(4), L.layer_norm(), L.dense(3)),
        _x(1, M, T, 3),
        LABELS,
        SEQ,
        {},
    ),
    "batchnorm_eval": (
        L.serial(L.dense(3), L.batchnorm(), L.tanh(), L.dense(3)),
        _x(1, M, 4),
        CLASSES,
        CE,
        {"state": ((), BN_STATE, (), ())},
    ),
    "embedding": (L.serial(EMBEDDING, L.tanh(), L.dense(3)), IDS, LABELS, SEQ, {}),
    "parallel_concat": (
        L.serial(L.parallel(L.dense(3), L.serial(L.dense(2), L.sigmoid())), L.fan_in_concat()),
        (_x(1, M, 4), _x(2, M, 3)),
        _x(3, M, 5),
        losses.mse,
        {},
    ),
    "fan_out_sum": (
        L.serial(L.fan_out(2), L.parallel(L.dense(3), L.dense(3)), L.fan_in_sum()),
        _x(1, M, 4),
        CLASSES,
        CE,
        {},
    ),
    "nested_residual": (
        L.serial(
            L.dense(4),
            L.residual(L.serial(L.dense(3), L.tanh(), L.residual(L.dense(3)), L.dense(4))),
            L.dense(3),
        ),
        _x(1, M, 2),
        CLASSES,
        CE,
        {},
    ),
    "tied": (
        L.tied(L.serial(L.dense(4), L.tanh(), L.dense(4)), [((0, "W"), (2, "W"))]),
        _x(1, M, 4),
        _x(2, M, 4),
        losses.mse,
        {},
    ),
}


def _one(tree, i):
    return jax.tree.map(lambda a: a[i : i + 1], tree)


def _lead(tree):
    return jax.tree.map(lambda a: a[None], tree)


def _batch_of_one_reference(model, loss, params, x, t, context):
    """`jax.grad(objective)` on each batch of one, examples stacked by `vmap`."""
    J = purenet.objective(model, loss)
    per_row = {k: v for k, v in context.items() if k == "mask"}
    shared = {k: v for k, v in context.items() if k != "mask"}

    def one(xi, ti, rows):
        return jax.value_and_grad(J)(params, _lead(xi), _lead(ti), **_lead(rows), **shared)

    # vmap slices a row without its axis; _lead puts a leading 1 back
    return jax.vmap(one)(x, t, per_row)


def _through_the_batch_reference(model, loss, params, x, t, context):
    """`jax.jacrev` of the vector of each example's loss through the batch's forward."""

    def each_loss(params):
        y, _ = model.forward(params, x, **context)
        return pe.example_losses_and_grads(loss, y, t)[0]

    return each_loss(params), jax.jacrev(each_loss)(params)


def _close(a, b, rtol=RTOL, atol=1e-13):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", CASES)
def test_grads_and_norms_equal_jax_grad_on_batches_of_one(name):
    model, x, t, loss, context = CASES[name]
    params = _params(model, x)
    ref_losses, ref = jax.jit(_batch_of_one_reference, static_argnums=(0, 1))(
        model, loss, params, x, t, context
    )
    ref_sq = rules.sq_norms_of(ref)
    for f in (pe.grads(model, loss), jax.jit(pe.grads(model, loss))):
        losses_, grads = f(params, x, t, **context)
        _close(losses_, ref_losses)
        _close(grads, ref)
    for f in (pe.norms(model, loss), jax.jit(pe.norms(model, loss))):
        losses_, sq = f(params, x, t, **context)
        _close(losses_, ref_losses)
        _close(sq, ref_sq)
    # and through the batch's forward: the same (no layer here couples examples)
    _, jac = jax.jit(_through_the_batch_reference, static_argnums=(0, 1))(
        model, loss, params, x, t, context
    )
    _close(grads, jac)


def test_the_mean_of_per_example_grads_is_backprops_gradient():
    model, x, t, loss, _ = CASES["dense_rows"]
    params = _params(model, x)
    _, grads = pe.grads(model, loss)(params, x, t)
    _, batch = purenet.backprop(model, loss)(params, x, t)
    _close(jax.tree.map(lambda g: jnp.mean(g, axis=0), grads), batch)


def test_dropout_uses_the_batchs_mask():
    """With `train=True, key=k` example i's gradient goes through the mask
    that the batch drew for row i (jacrev through the batch's forward), which
    a batch of one with the same key would not draw."""
    model = L.serial(L.dense(8), L.relu(), L.dropout(0.5), L.dense(3))
    x = _x(1, M, 4)
    params = _params(model, x)
    context = {"train": True, "key": jax.random.key(3)}
    ref_losses, ref = _through_the_batch_reference(model, CE, params, x, CLASSES, context)
    for f in (pe.grads(model, CE), jax.jit(pe.grads(model, CE), static_argnames="train")):
        losses_, grads = f(params, x, CLASSES, **context)
        _close(losses_, ref_losses)
        _close(grads, ref)
    _, sq = pe.norms(model, CE)(params, x, CLASSES, **context)
    _close(sq, rules.sq_norms_of(ref))
    _, other = jax.jit(
        lambda key: _batch_of_one_reference(
            model, CE, params, x, CLASSES, {"train": True, "key": key}
        )
    )(context["key"])
    assert not np.allclose(other[0]["W"], grads[0]["W"]), "the masks should differ"


@pytest.mark.parametrize("method", ["ghost", "form", "auto"])
@pytest.mark.parametrize("shape", [(M, 6), (M, T, 6), (M, 2, 3, 6), (M, 1, 6)])
def test_dense_sq_norms_every_form(method, shape):
    x, dy = _x(1, *shape), _x(2, *shape[:-1], 3)
    dW, db = rules.dense_per_example(x, dy)
    params = {"W": jnp.zeros((6, 3)), "b": jnp.zeros(3)}
    want = jax.vmap(lambda xi, di: L.dense(3).backward(params, xi[None], di[None])[0])(x, dy)
    _close({"W": dW, "b": db}, want)
    sq_W, sq_b = jax.jit(rules.dense_sq_norms, static_argnames="method")(x, dy, method=method)
    np.testing.assert_allclose(sq_W, np.sum(np.asarray(dW) ** 2, axis=(1, 2)), rtol=RTOL)
    np.testing.assert_allclose(sq_b, np.sum(np.asarray(db) ** 2, axis=1), rtol=RTOL)


def test_ghost_is_chosen_when_cheaper():
    assert rules.ghost_is_cheaper(T=4, d=64, n=64)  # 4 * 128 < 4096
    assert not rules.ghost_is_cheaper(T=512, d=64, n=64)
    assert not rules.ghost_is_cheaper(T=1, d=1, n=1)


def test_embedding_norms_both_forms():
    params = _params(EMBEDDING, IDS)
    dy = _x(2, M, T, 4)
    cache = EMBEDDING.forward(params, IDS)[1]
    grads, _ = rules.embedding_per_example(params, cache, dy)
    ghost, _ = rules.embedding_sq_norms(params, cache, dy)  # T^2 = 25 < 7 + 5: no, formed
    assert not T * T < 7 + T
    long_vocab = {"W": jnp.zeros((40, 4))}  # 25 < 45: the Gram form
    gram, _ = rules.embedding_sq_norms(long_vocab, cache, dy)
    want = rules.sq_norms_of(grads)["W"]
    np.testing.assert_allclose(ghost["W"], want, rtol=RTOL)
    np.testing.assert_allclose(gram["W"], want, rtol=RTOL)


def test_per_example_from_backward_equals_the_layers_rule():
    layer = L.dense(3)
    x, dy = _x(1, M, T, 4), _x(2, M, T, 3)
    params = _params(layer, x)
    cache = layer.forward(params, x)[1]
    _close(
        rules.per_example_from_backward(layer.backward)(params, cache, dy),
        layer.per_example(params, cache, dy),
    )


# ------------------------------------------------------------------- refusals


def _no_rule_layer():
    def init(key, in_shape, dtype=jnp.float32):
        return in_shape, {"s": jnp.ones((), dtype)}, ()

    def forward(params, x, **context):
        return params["s"] * x, x

    def backward(params, cache, dy):
        return {"s": jnp.sum(cache * dy)}, params["s"] * dy

    return L.make_layer(init, forward, backward, name="scale")


def test_batchnorm_in_training_mode_is_refused_before_any_work():
    model = L.serial(L.dense(3), L.batchnorm(), L.dense(2))
    x = _x(1, M, 4)
    params = _params(model, x)
    for f in (pe.grads, pe.norms, pe.noise_scale):
        with pytest.raises(ValueError, match=r"serial\[1\] \(batchnorm\): .*training mode"):
            f(model, losses.mse)(params, x, _x(2, M, 2), train=True)


def test_a_layer_with_params_and_no_rule_is_refused_by_name():
    model = L.serial(L.dense(3), _no_rule_layer())
    x = _x(1, M, 2)
    params = _params(model, x)
    for f in (pe.grads, pe.norms):
        with pytest.raises(ValueError, match=r"serial\[1\] \(scale\): .*no per-example rule"):
            f(model, losses.mse)(params, x, _x(2, M, 3))
        with pytest.raises(ValueError, match=r"no per-example rule"):
            jax.jit(f(model, losses.mse))(params, x, _x(2, M, 3))


def test_bad_model_loss_and_params():
    with pytest.raises(TypeError, match="model: expected a purenet Layer"):
        pe.grads(lambda x: x, losses.mse)
    with pytest.raises(TypeError, match="loss: expected a purenet Loss"):
        pe.norms(L.dense(2), "mse")
    model = L.serial(L.dense(3), L.dense(2))
    x = _x(1, M, 4)
    bad = _params(model, _x(1, M, 5))
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] \(serial\[0\], dense\(3\)\)"):
        pe.grads(model, losses.mse)(bad, x, _x(2, M, 2))
    with pytest.raises(ValueError, match="sq_norms: expected leaves of one length B >= 2"):
        pe.gradient_noise(jnp.ones(1), {"W": jnp.ones(3)})


# ---------------------------------------------------------- gradient noise


def test_noise_scale_estimates_are_unbiased():
    """Linear regression on a finite population of N examples: batches of B
    drawn with replacement, so `G` (the population's mean gradient) and
    `Sigma` (its covariance) are known exactly; the mean of the estimates
    over many batches approaches them within a few standard errors, closer
    than the naive estimates' bias (`|G_B|^2` overstates `|G|^2` by
    `tr(Sigma) / B`)."""
    N, B, d, batches = 64, 8, 3, 4000
    model, loss = L.dense(1), losses.mse
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((N, d)))
    Y = X @ jnp.asarray(rng.standard_normal((d, 1))) + 0.5 * jnp.asarray(
        rng.standard_normal((N, 1))
    )
    params = {"W": jnp.asarray(rng.standard_normal((d, 1))), "b": jnp.asarray([0.3])}
    J = purenet.objective(model, loss)
    each = jax.vmap(lambda xi, ti: jax.grad(J)(params, xi[None], ti[None]))(X, Y)
    flat = jnp.concatenate([g.reshape(N, -1) for g in jax.tree.leaves(each)], axis=1)
    G = flat.mean(0)
    true_g_sq = float(G @ G)
    true_trace = float(jnp.sum(jnp.var(flat, axis=0)))  # population covariance (1/N)

    f = pe.noise_scale(model, loss)
    rows = jnp.asarray(rng.integers(0, N, (batches, B)))
    estimates = jax.jit(jax.vmap(lambda r: f(params, X[r], Y[r])[1]))(rows)
    for got, want in ((estimates.grad_sq, true_g_sq), (estimates.trace_sigma, true_trace)):
        err = float(jnp.std(got) / np.sqrt(batches))
        assert abs(float(jnp.mean(got)) - want) < 4 * err
        assert 4 * err < true_trace / B / 3, "the test could not see the naive estimate's bias"
    # one batch: the pieces as gradient_noise takes them from norms and backprop
    x, t = X[rows[0]], Y[rows[0]]
    _, sq = pe.norms(model, loss)(params, x, t)
    _, batch = purenet.backprop(model, loss)(params, x, t)
    direct = pe.gradient_noise(sq, batch)
    _close(direct, jax.tree.map(lambda a: a[0], estimates))
    np.testing.assert_allclose(direct.b_simple, direct.trace_sigma / direct.grad_sq)
