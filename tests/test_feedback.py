"""purenet.feedback: each rule computes its formula (NumPy and jax.grad references
built from the feedback matrices in the rule's state), its special cases are
backprop, it trains, and bad models fail clearly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import purenet
from purenet import datasets, losses, optim
from purenet import feedback as F
from purenet import layers as L
from purenet.train import fit, make_step

LOSS = losses.softmax_cross_entropy
KEY = jax.random.key(3)
X = jax.random.normal(jax.random.key(4), (7, 6), jnp.float64)
T = jnp.arange(7) % 3
MLP = L.serial(L.dense(5), L.tanh(), L.dense(4), L.tanh(), L.dense(3))
CNN = L.serial(L.conv2d(2, 3, padding="SAME"), L.relu(), L.flatten(), L.dense(3))
XI = jax.random.normal(jax.random.key(5), (4, 5, 5, 1), jnp.float64)
TI = jnp.arange(4) % 3
RULES = {
    "fa": F.feedback_alignment,
    "usf": F.sign_symmetry,
    "frsf": lambda m: F.sign_symmetry(m, "frSF"),
    "dfa": F.direct_feedback_alignment,
}


def _setup(rule, model=MLP, shape=(6,)):
    return rule(model).init(KEY, shape, jnp.float64)[1:]


def _assert_tree_close(a, b, **tol):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **tol), a, b)


# ------------------------------------------------------------------ NumPy references


def _np_softmax_error(y, t):
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p - np.eye(y.shape[1])[t]) / len(t)


def _np_mlp(params, x, t, feedback_in):
    """Grads of the tanh MLP where layer l sends `delta_l` back as `feedback_in(l, delta)`
    (backprop: `delta @ W_l.T`)."""
    W = [np.asarray(params[i]["W"]) for i in (0, 2, 4)]
    b = [np.asarray(params[i]["b"]) for i in (0, 2, 4)]
    h = [np.asarray(x)]
    for i in range(3):
        a = h[-1] @ W[i] + b[i]
        h.append(np.tanh(a) if i < 2 else a)
    e = _np_softmax_error(h[-1], np.asarray(t))
    delta, grads = e, [None] * 3
    for i in reversed(range(3)):
        grads[i] = {"W": h[i].T @ delta, "b": delta.sum(0)}
        if i:
            delta = feedback_in(i, delta, e) * (1 - h[i] ** 2)
    return (grads[0], (), grads[1], (), grads[2])


def test_feedback_alignment_is_its_formula():
    params, state = _setup(F.feedback_alignment)
    B = [np.asarray(b) for b in state["feedback"]]
    want = _np_mlp(params, X, T, lambda i, delta, e: delta @ B[i].T)
    _, got = purenet.backprop(F.feedback_alignment(MLP), LOSS)(params, X, T, state=state)
    _assert_tree_close(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("variant", ["uSF", "frSF"])
def test_sign_symmetry_is_its_formula(variant):
    params, state = _setup(lambda m: F.sign_symmetry(m, variant))
    M = [np.asarray(m) for m in state["feedback"]] if variant == "frSF" else [1.0] * 3
    assert variant == "uSF" or all((m >= 0).all() for m in M)
    W = [np.asarray(params[i]["W"]) for i in (0, 2, 4)]
    want = _np_mlp(params, X, T, lambda i, delta, e: delta @ (M[i] * np.sign(W[i])).T)
    _, got = purenet.backprop(F.sign_symmetry(MLP, variant), LOSS)(params, X, T, state=state)
    _assert_tree_close(got, want, rtol=1e-10, atol=1e-13)


def test_brsf_draws_magnitudes_from_the_forward_key():
    rule = F.sign_symmetry(MLP, "brSF")
    params, state = _setup(lambda m: F.sign_symmetry(m, "brSF"))
    assert state == ()
    key = jax.random.key(11)
    drawn = MLP.init(jax.random.fold_in(key, F._FEEDBACK), (6,), jnp.float64)[1]
    M = [np.abs(np.asarray(drawn[i]["W"])) for i in (0, 2, 4)]
    W = [np.asarray(params[i]["W"]) for i in (0, 2, 4)]
    want = _np_mlp(params, X, T, lambda i, delta, e: delta @ (M[i] * np.sign(W[i])).T)
    _, got = purenet.backprop(rule, LOSS)(params, X, T, key=key)
    _assert_tree_close(got, want, rtol=1e-10, atol=1e-13)
    _, other = purenet.backprop(rule, LOSS)(params, X, T, key=jax.random.key(12))
    assert not np.allclose(other[0]["W"], got[0]["W"])
    with pytest.raises(ValueError, match=r"key: expected a key in the forward of sign_symmetry"):
        purenet.backprop(rule, LOSS)(params, X, T)


def test_direct_feedback_alignment_is_its_formula():
    params, state = _setup(F.direct_feedback_alignment)
    B = [None] + [np.asarray(b) for b in state["feedback"]]  # B_l for dense l = 1, 2
    assert [b.shape for b in B[1:]] == [(3, 5), (3, 4)]
    want = _np_mlp(params, X, T, lambda i, delta, e: e @ B[i])
    _, got = purenet.backprop(F.direct_feedback_alignment(MLP), LOSS)(params, X, T, state=state)
    _assert_tree_close(got, want, rtol=1e-10, atol=1e-13)


# ------------------------------------------------------------ convolutions (jax.grad)


def _transported(W, B, x, layer_fn):
    """`layer_fn(x, W)` in value, whose gradient is `x^T dy` for W and goes
    back through B for x: `f(sg(x), W) + f(x, B) - sg(f(x, B))`."""
    sg = jax.lax.stop_gradient
    return layer_fn(sg(x), W) + layer_fn(x, B) - sg(layer_fn(x, B))


def _conv(x, W):
    return L.conv_forward(x, W, padding="SAME")


def _cnn_objective(params, feedback, x, t):
    (c, _, _, d), (B0, B1) = params, feedback
    h = jax.nn.relu(_transported(c["W"], B0, x, _conv) + c["b"])
    h = h.reshape(h.shape[0], -1)
    return LOSS.value(_transported(d["W"], B1, h, jnp.matmul) + d["b"], t)


@pytest.mark.parametrize("variant", ["fa", "frsf"])
def test_rules_on_a_conv_net_match_jax_grad(variant):
    rule = RULES[variant](CNN)
    params, state = _setup(RULES[variant], CNN, (5, 5, 1))
    feedback = state["feedback"]
    if variant == "frsf":
        feedback = tuple(
            M * jnp.sign(params[i]["W"]) for M, i in zip(feedback, (0, 3), strict=True)
        )
    want = jax.grad(_cnn_objective)(params, feedback, XI, TI)
    _, got = purenet.backprop(rule, LOSS)(params, XI, TI, state=state)
    _assert_tree_close(got, want, rtol=1e-10, atol=1e-13)


def test_dfa_on_a_conv_net_sends_the_output_error_to_the_dense_input():
    params, state = _setup(F.direct_feedback_alignment, CNN, (5, 5, 1))
    (B,) = state["feedback"]
    assert B.shape == (3, 50)
    c, d = params[0], params[3]
    a, conv_vjp = jax.vjp(lambda W, b: _conv(XI, W) + b, c["W"], c["b"])
    h = jax.nn.relu(a).reshape(4, -1)
    e = LOSS.grad(h @ d["W"] + d["b"], TI)
    dW0, db0 = conv_vjp((e @ B).reshape(a.shape) * (a > 0))
    _, got = purenet.backprop(F.direct_feedback_alignment(CNN), LOSS)(params, XI, TI, state=state)
    _assert_tree_close(got[3], {"W": h.T @ e, "b": e.sum(0)}, rtol=1e-10, atol=1e-13)
    _assert_tree_close(got[0], {"W": dW0, "b": db0}, rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------- special cases: backprop

RESNET = L.serial(L.dense(4), L.residual(L.serial(L.dense(4), L.relu(), L.dense(4))), L.dense(3))


@pytest.mark.parametrize(
    ("model", "x", "t", "shape"),
    [(MLP, X, T, (6,)), (RESNET, X, T, (6,)), (CNN, XI, TI, (5, 5, 1))],
    ids=["mlp", "residual", "cnn"],
)
def test_feedback_alignment_with_B_equal_W_is_backprop(model, x, t, shape):
    rule = F.feedback_alignment(model)
    params, state = rule.init(KEY, shape, jnp.float64)[1:]
    sites = [s for s in F._leaves(model, "fa", F._COMBINATORS) if s.layer.transport]
    state = {**state, "feedback": tuple(F._matrix(params, s) for s in sites)}
    J, got = purenet.backprop(rule, LOSS)(params, x, t, state=state)
    J0, want = purenet.backprop(model, LOSS)(params, x, t)
    assert J == J0
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_sign_symmetry_with_weights_of_plus_minus_one_is_backprop():
    params = MLP.init(KEY, (6,), jnp.float64)[1]
    params = jax.tree.map(lambda p: jnp.where(p >= 0, 1.0, -1.0), params)
    for variant in ("uSF", "frSF"):
        rule = F.sign_symmetry(MLP, variant)
        state = rule.init(KEY, (6,), jnp.float64)[2]
        if variant == "frSF":
            state = {**state, "feedback": tuple(jnp.ones_like(m) for m in state["feedback"])}
        _, got = purenet.backprop(rule, LOSS)(params, X, T, state=state)
        _, want = purenet.backprop(MLP, LOSS)(params, X, T)
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_dfa_on_one_hidden_layer_is_feedback_alignment():
    model = L.serial(L.dense(5), L.tanh(), L.dense(3))
    params, state = _setup(F.direct_feedback_alignment, model)
    (B,) = state["feedback"]
    fa_state = F.feedback_alignment(model).init(KEY, (6,), jnp.float64)[2]
    fa_state = {**fa_state, "feedback": (fa_state["feedback"][0], B.T)}
    _, dfa = purenet.backprop(F.direct_feedback_alignment(model), LOSS)(params, X, T, state=state)
    _, fa = purenet.backprop(F.feedback_alignment(model), LOSS)(params, X, T, state=fa_state)
    _assert_tree_close(dfa, fa, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(RULES))
def test_params_are_the_models(name):
    for model, shape in ((MLP, (6,)), (CNN, (5, 5, 1)), (RESNET, (6,))):
        if name == "dfa" and model is RESNET:
            continue
        got = RULES[name](model).init(KEY, shape)[1]
        jax.tree.map(np.testing.assert_array_equal, got, model.init(KEY, shape)[1])


# ----------------------------------------------------------------------- jit and vmap


@pytest.mark.parametrize("name", sorted(RULES))
def test_jit_and_vmap_over_feedback_matrices(name):
    rule = RULES[name](MLP)
    params = MLP.init(KEY, (6,), jnp.float64)[1]
    states = [rule.init(k, (6,), jnp.float64)[2] for k in jax.random.split(KEY, 3)]
    grad_fn = purenet.backprop(rule, LOSS)
    eager = [grad_fn(params, X, T, state=s)[1] for s in states]
    jitted = jax.jit(grad_fn)(params, X, T, state=states[0])[1]
    _assert_tree_close(jitted, eager[0], rtol=1e-12, atol=1e-15)
    if states[0] == ():
        return
    stacked = jax.tree.map(lambda *s: jnp.stack(s), *states)
    batched = jax.vmap(lambda s: grad_fn(params, X, T, state=s)[1])(stacked)
    _assert_tree_close(batched, jax.tree.map(lambda *g: jnp.stack(g), *eager), rtol=1e-12)


def test_alignment_angles():
    rule = F.feedback_alignment(MLP)
    params, state = _setup(F.feedback_alignment)
    angles = jax.jit(F.alignment(rule, LOSS))(params, X, T, state=state)
    assert list(angles) == ["serial[0], dense(5)", "serial[2], dense(4)", "serial[4], dense(3)"]
    _, g = purenet.backprop(rule, LOSS)(params, X, T, state=state)
    true = jax.grad(purenet.objective(MLP, LOSS))(params, X, T)

    def degrees(a, b):
        a, b = np.ravel(a), np.ravel(b)
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        return np.degrees(np.arccos(np.clip(cos, -1, 1)))

    for angle, i, B in zip(angles.values(), (0, 2, 4), state["feedback"], strict=True):
        np.testing.assert_allclose(angle.update, degrees(g[i]["W"], true[i]["W"]), atol=1e-6)
        np.testing.assert_allclose(angle.feedback, degrees(params[i]["W"], B), atol=1e-6)
    assert float(angles["serial[4], dense(3)"].update) < 1e-6  # the output layer is backprop's
    dfa = F.direct_feedback_alignment(MLP)
    d_params, d_state = _setup(F.direct_feedback_alignment)
    d_angles = F.alignment(dfa, LOSS)(d_params, X, T, state=d_state)
    assert np.isnan(d_angles["serial[0], dense(5)"].feedback)
    assert float(d_angles["serial[4], dense(3)"].update) < 1e-6


# ------------------------------------------------------------------------- training


def test_training_threads_batchnorm_state_and_keeps_feedback():
    model = L.serial(L.dense(5), L.batchnorm(), L.relu(), L.dense(3))
    rule = F.feedback_alignment(model)
    params, state = rule.init(KEY, (6,), jnp.float64)[1:]
    sgd = optim.sgd(0.1)
    step = jax.jit(make_step(rule, LOSS, sgd))
    new_params, _, new_state, _ = step(params, sgd.init(params), state, X, T, KEY)
    jax.tree.map(np.testing.assert_array_equal, new_state["feedback"], state["feedback"])
    assert not np.allclose(new_state["model"][1]["mean"], state["model"][1]["mean"])
    assert not np.allclose(new_params[0]["W"], params[0]["W"])


def test_feedback_alignment_learns_the_digits_nearly_as_well_as_backprop():
    x, t = datasets.digits()
    x = (x / 16.0).astype(jnp.float32)
    model = L.serial(L.dense(64), L.tanh(), L.dense(10))
    rule = F.feedback_alignment(model)
    params, state = rule.init(KEY, (64,))[1:]
    args = {"key": KEY, "epochs": 10, "batch_size": 64, "metric": None, "nan_guard": False}
    adam = optim.adam(0.01)
    fa = fit(rule, LOSS, adam, params, x, t, state=state, **args)
    bp = fit(model, LOSS, adam, params, x, t, **args)
    J = purenet.objective(model, LOSS)
    start, J_fa, J_bp = (float(J(p, x, t)) for p in (params, fa.params, bp.params))
    assert J_fa < 0.1 * start and J_fa < J_bp + 0.1, (start, J_fa, J_bp)
    measure = jax.jit(F.alignment(rule, LOSS))
    before = measure(params, x, t, state=state)["serial[0], dense(64)"].update
    after = measure(fa.params, x, t, state=fa.state)["serial[0], dense(64)"].update
    assert after < 90 and after < before, (before, after)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_layer_without_a_rule_is_refused_naming_it(name):
    model = L.serial(L.dense(4), L.lstm(3), L.last_step(), L.dense(2))
    rule = RULES[name](model)
    with pytest.raises(ValueError, match=r"model: .*got lstm\(3\) at serial\[1\].*has params"):
        rule.init(KEY, (5, 4))


def test_attention_is_refused_and_other_combinators_at_construction():
    rule = F.feedback_alignment(L.serial(L.multi_head_attention(2), L.dense(2)))
    with pytest.raises(ValueError, match=r"multi_head_attention\(2\) at serial\[0\].*feedback_al"):
        rule.init(KEY, (3, 4))
    with pytest.raises(ValueError, match=r"model: .*got transformer_block\(4, 2\) at serial\[0\]"):
        F.sign_symmetry(L.serial(L.transformer_block(4, 2), L.dense(2)))
    with pytest.raises(ValueError, match=r"got residual at serial\[1\].*direct_feedback_align"):
        F.direct_feedback_alignment(RESNET)
    with pytest.raises(ValueError, match=r"model: expected a model with a dense or conv"):
        F.feedback_alignment(L.serial(L.relu()))
    with pytest.raises(TypeError, match=r"model: expected a purenet Layer"):
        F.feedback_alignment(lambda x: x)
    with pytest.raises(ValueError, match=r"variant: expected one of"):
        F.sign_symmetry(MLP, "SF")
    with pytest.raises(ValueError, match=r"rule_model: expected a model from purenet.feedback"):
        F.alignment(MLP, LOSS)


@pytest.mark.parametrize("name", ["fa", "frsf", "dfa"])
def test_missing_or_wrong_state_is_refused(name):
    rule = RULES[name](MLP)
    params, state = _setup(RULES[name])
    with pytest.raises(ValueError, match=r"state: expected the state from .*init .* got \(\)"):
        purenet.backprop(rule, LOSS)(params, X, T)
    short = {**state, "feedback": state["feedback"][1:]}
    with pytest.raises(ValueError, match=r"state\['feedback'\]: expected a tuple of"):
        purenet.backprop(rule, LOSS)(params, X, T, state=short)
    wrong = {**state, "feedback": tuple(b[:1] for b in state["feedback"])}
    with pytest.raises(ValueError, match=r"state\['feedback'\]\[0\]: expected shape"):
        purenet.backprop(rule, LOSS)(params, X, T, state=wrong)
