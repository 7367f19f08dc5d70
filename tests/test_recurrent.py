"""purenet.layers.recurrent (and layer_norm): forwards against plain NumPy
loops, hand-written BPTT against jax.vjp and central differences (float64),
whole sequence models through backprop against jax.grad(objective), under jit
and vmap, the unfolding argument of Rumelhart, Hinton & Williams (1986), and
PyTorch's modules with copied weights when torch is installed."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import purenet
from purenet import layers as L
from purenet import losses
from purenet.gradcheck import check_layer
from tests.conftest import normal

KEY = jax.random.key(0)
CELLS = {"rnn": L.rnn, "lstm": L.lstm, "gru": L.gru}
# Tolerances of tests/test_layers.py: float64 hand-written vs jax.vjp agree to
# rounding; central differences with the default step to about 1e-10.
AUTODIFF_TOL, NUMERIC_TOL = 1e-9, 1e-8


def _sequence(seed, m, T, d, dtype=jnp.float64):
    return normal(seed, (m, T, d), dtype=dtype)


def _initial_state(name, seed, m, h, dtype=jnp.float64):
    h0 = 0.5 * normal(seed, (m, h), dtype=dtype)
    return (h0, 0.5 * normal(seed + 1000, (m, h), dtype=dtype)) if name == "lstm" else h0


def _assert_checks(report):
    assert report.autodiff_rel_error < AUTODIFF_TOL, report
    assert report.numerical_norm_ratio < NUMERIC_TOL, report


# ------------------------------------------------- forwards against NumPy loops


def _sigma(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_reference(name, p, x, state=None):
    """The recurrences of the docstrings as explicit loops over time."""
    p = {k: np.asarray(v) for k, v in p.items()}
    x = np.asarray(x)
    m, T, _ = x.shape
    h_size = p["Wh"].shape[0]
    h = np.zeros((m, h_size))
    if state is not None:
        h = np.asarray(state[0] if name == "lstm" else state)
    c = np.zeros((m, h_size)) if state is None or name != "lstm" else np.asarray(state[1])
    out = []
    for t in range(T):
        if name == "rnn":
            h = np.tanh(x[:, t] @ p["Wx"] + h @ p["Wh"] + p["b"])
        elif name == "lstm":
            a = x[:, t] @ p["Wx"] + h @ p["Wh"] + p["b"]
            i, f, g, o = np.split(a, 4, axis=1)
            c = _sigma(f) * c + _sigma(i) * np.tanh(g)
            h = _sigma(o) * np.tanh(c)
        else:
            gx = x[:, t] @ p["Wx"] + p["bx"]
            gh = h @ p["Wh"] + p["bh"]
            r = _sigma(gx[:, :h_size] + gh[:, :h_size])
            z = _sigma(gx[:, h_size : 2 * h_size] + gh[:, h_size : 2 * h_size])
            n = np.tanh(gx[:, 2 * h_size :] + r * gh[:, 2 * h_size :])
            h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
def test_forward_matches_the_recurrence(name, with_state):
    layer = CELLS[name](5)
    out_shape, params, state = layer.init(KEY, (6, 3), jnp.float64)
    assert out_shape == (6, 5) and state == ()
    x = _sequence(1, 4, 6, 3)
    s = _initial_state(name, 2, 4, 5) if with_state else None
    y, _ = layer.forward(params, x if s is None else (x, s))
    np.testing.assert_allclose(y, numpy_reference(name, params, x, s), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", CELLS)
def test_parameter_shapes_and_pytorch_initialisation(name):
    h, d = 8, 3
    blocks = {"rnn": 1, "lstm": 4, "gru": 3}[name]
    _, p, _ = CELLS[name](h).init(KEY, (5, d))
    assert p["Wx"].shape == (d, blocks * h) and p["Wh"].shape == (h, blocks * h)
    bound = 1 / math.sqrt(h)
    assert float(jnp.max(jnp.abs(p["Wx"]))) <= bound and float(jnp.max(jnp.abs(p["Wh"]))) <= bound
    if name == "gru":
        assert set(p) == {"Wx", "Wh", "bx", "bh"} and p["bh"].shape == (3 * h,)
        assert float(jnp.max(jnp.abs(p["bx"]))) <= bound
    else:  # b = b_ih + b_hh: the sum of two U(-bound, bound) draws
        assert set(p) == {"Wx", "Wh", "b"} and p["b"].shape == (blocks * h,)
        assert float(jnp.max(jnp.abs(p["b"]))) <= 2 * bound
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p))


def test_lstm_forget_bias_shifts_only_the_forget_gate_block():
    _, p0, _ = L.lstm(3).init(KEY, (2, 2))
    _, p1, _ = L.lstm(3, forget_bias=1.0).init(KEY, (2, 2))
    np.testing.assert_allclose(p1["b"] - p0["b"], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_array_equal(p1["Wh"], p0["Wh"])


# --------------------------------------------------------------- hand-written BPTT


@functools.partial(jax.jit, static_argnames="layer")
def _manual_and_autodiff(params, x, dy, *, layer):
    """The hand-written backward and jax.vjp of the forward, in one program
    (one compilation per drawn shape: eager scans compile op by op)."""
    _, cache = layer.forward(params, x)
    manual = layer.backward(params, cache, dy)
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x)[0], params, x)
    return manual, vjp(dy)


@pytest.mark.parametrize("name", CELLS)
@settings(max_examples=3, deadline=None)
@given(
    m=st.integers(1, 3),
    T=st.integers(1, 6),
    d=st.integers(1, 3),
    h=st.integers(1, 4),
    with_state=st.booleans(),
)
@example(m=1, T=1, d=1, h=1, with_state=False)
@example(m=2, T=1, d=2, h=3, with_state=True)
def test_bptt_matches_vjp_for_any_shape(name, m, T, d, h, with_state):
    layer = CELLS[name](h)
    _, params, _ = layer.init(jax.random.key(T), (T, d), jnp.float64)
    x = _sequence(m, m, T, d)
    if with_state:
        x = (x, _initial_state(name, 7, m, h))
    dy = normal(d, (m, T, h))
    manual, autodiff = _manual_and_autodiff(params, x, dy, layer=layer)
    assert jax.tree.structure(manual) == jax.tree.structure(autodiff)
    assert purenet.gradcheck.rel_error(manual, autodiff) < AUTODIFF_TOL


@pytest.mark.parametrize("name", CELLS)
def test_bptt_matches_vjp_and_finite_differences(name):
    """check_layer's report (jax.vjp and central differences), with a given
    initial state so that its gradient is checked too."""
    layer = CELLS[name](3)
    _, params, _ = layer.init(KEY, (4, 2), jnp.float64)
    x = (_sequence(1, 2, 4, 2), _initial_state(name, 2, 2, 3))
    report = check_layer(layer, params, x, dy_key=jax.random.key(3))
    assert report.passed, report
    _assert_checks(report)


@pytest.mark.parametrize("name", CELLS)
def test_given_state_gets_a_gradient_of_its_structure(name):
    layer = CELLS[name](3)
    _, params, _ = layer.init(KEY, (4, 2), jnp.float64)
    x = _sequence(0, 2, 4, 2)
    s = _initial_state(name, 0, 2, 3)
    y, cache = layer.forward(params, (x, s))
    _, (dx, ds) = layer.backward(params, cache, jnp.ones_like(y))
    assert dx.shape == x.shape
    assert jax.tree.structure(ds) == jax.tree.structure(s)
    # Without a given state the backward returns dx alone.
    y, cache = layer.forward(params, x)
    assert layer.backward(params, cache, jnp.ones_like(y))[1].shape == x.shape


@pytest.mark.parametrize("name", CELLS)
def test_saturated_gates_stay_finite_in_float32(name):
    """Pre-activations of +-1e4: exact 0/1 gates, no NaN, forward or backward."""
    layer = CELLS[name](4)
    _, params, _ = layer.init(KEY, (5, 2))
    params = jax.tree.map(lambda p: jnp.sign(p) * 1e4, params)
    x = jnp.concatenate([jnp.full((2, 5, 2), 1.0), jnp.full((2, 5, 2), -1.0)]).astype(jnp.float32)

    @jax.jit
    def both(params, x):
        y, cache = layer.forward(params, x)
        return y, layer.backward(params, cache, jnp.ones_like(y))

    for leaf in jax.tree.leaves(both(params, x)):
        assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))


LAYERS = {
    "last_step": (L.last_step(), (4, 2)),
    "layer_norm": (L.layer_norm(), (4, 5)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_other_layers_match_vjp_and_finite_differences(name):
    layer, in_shape = LAYERS[name]
    _, params, _ = layer.init(KEY, in_shape, jnp.float64)
    x = _sequence(1, 3, *in_shape)
    _assert_checks(check_layer(layer, params, x, dy_key=jax.random.key(2)))


def test_bidirectional_is_a_forward_and_a_reversed_run():
    cell = L.gru(3)
    layer = L.bidirectional(cell)
    out_shape, params, _ = layer.init(KEY, (5, 2), jnp.float64)
    assert out_shape == (5, 6) and set(params) == {"forward", "backward"}
    x = _sequence(0, 2, 5, 2)
    y, _ = layer.forward(params, x)
    y_fwd = cell.forward(params["forward"], x)[0]
    y_bwd = cell.forward(params["backward"], x[:, ::-1])[0][:, ::-1]
    np.testing.assert_allclose(y, jnp.concatenate([y_fwd, y_bwd], -1), rtol=1e-14)
    # The backward direction's state at step 0 has read the whole sequence.
    np.testing.assert_allclose(y[:, 0, 3:], cell.forward(params["backward"], x[:, ::-1])[0][:, -1])


def test_bidirectional_with_initial_states():
    layer = L.bidirectional(L.lstm(2))
    _, params, _ = layer.init(KEY, (3, 2), jnp.float64)
    x = _sequence(0, 2, 3, 2)
    states = (_initial_state("lstm", 1, 2, 2), _initial_state("lstm", 2, 2, 2))
    _assert_checks(check_layer(layer, params, (x, states), dy_key=jax.random.key(3)))


def test_last_step_and_its_backward():
    x = _sequence(0, 2, 4, 3)
    y, cache = L.last_step().forward((), x)
    np.testing.assert_array_equal(y, x[:, -1])
    _, dx = L.last_step().backward((), cache, jnp.ones((2, 3)))
    assert float(jnp.sum(dx[:, :-1] ** 2)) == 0.0 and bool(jnp.all(dx[:, -1] == 1))


def test_layer_norm_forward_and_constant_rows():
    layer = L.layer_norm()
    _, params, state = layer.init(KEY, (3, 5))
    assert state == () and params["gamma"].shape == (5,)
    x = jax.random.normal(KEY, (2, 3, 5), jnp.float64)
    y, _ = layer.forward(jax.tree.map(lambda p: p.astype(jnp.float64), params), x)
    xn = np.asarray(x)
    ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-12)
    # A constant row normalises to beta, and its gradient is finite.
    const = jnp.full((2, 3, 5), 7.0, jnp.float32)
    y, cache = layer.forward(params, const)
    grads, dx = layer.backward(params, cache, jnp.ones_like(y))
    np.testing.assert_array_equal(y, 0.0)
    for leaf in jax.tree.leaves((grads, dx)):
        assert bool(jnp.all(jnp.isfinite(leaf)))


# ------------------------------------------------------------------- embedding


def test_embedding_lookup_and_scatter_add():
    layer = L.embedding(5, 3)
    out_shape, params, _ = layer.init(KEY, (4,), jnp.float64)
    assert out_shape == (4, 3) and params["W"].shape == (5, 3)
    ids = jnp.array([[0, 2, 2, 4], [2, 0, 1, 1]])
    y, cache = layer.forward(params, ids)
    np.testing.assert_array_equal(y, np.asarray(params["W"])[np.asarray(ids)])
    dy = jax.random.normal(KEY, y.shape, jnp.float64)
    grads, dx = layer.backward(params, cache, dy)
    expected = np.zeros((5, 3))
    np.add.at(expected, np.asarray(ids), np.asarray(dy))  # repeated ids accumulate
    np.testing.assert_allclose(grads["W"], expected, rtol=1e-14)
    assert dx.shape == ids.shape and float(jnp.sum(jnp.abs(dx))) == 0.0
    _assert_checks(check_layer(layer, params, ids, dy_key=KEY))


def test_embedding_under_jit_clamps_out_of_range_ids_consistently():
    layer = L.embedding(4, 2)
    _, params, _ = layer.init(KEY, (2,), jnp.float64)
    ids = jnp.array([[-3, 9]])
    y, cache = jax.jit(layer.forward)(params, ids)
    np.testing.assert_array_equal(y[0], params["W"][jnp.array([0, 3])])
    grads, _ = layer.backward(params, cache, jnp.ones_like(y))
    np.testing.assert_array_equal(grads["W"][jnp.array([0, 3])], 1.0)


# ------------------------------------------------------- whole sequence models


def _language_model(vocab=6, dim=3, h=4):
    return L.serial(L.embedding(vocab, dim), L.lstm(h), L.dense(vocab))


def _tokens(key, m, T, vocab=6):
    k1, k2 = jax.random.split(key)
    x = jax.random.randint(k1, (m, T), 0, vocab)
    t = jax.random.randint(k2, (m, T), 0, vocab)
    return x, t.at[0, -2:].set(losses.IGNORE_LABEL)  # a padded tail


def test_embedding_lstm_dense_backprop_matches_autodiff_and_finite_differences():
    model = _language_model()
    _, params, _ = model.init(KEY, (5,), jnp.float64)
    x, t = _tokens(jax.random.key(1), 3, 5)
    loss = losses.sequence_softmax_cross_entropy
    report = purenet.gradcheck.check_gradients(model, loss, params, x, t)
    assert report.autodiff_rel_error < AUTODIFF_TOL, report
    assert report.numerical_norm_ratio < NUMERIC_TOL, report


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_classifier_through_last_step_matches_autodiff(cell):
    model = L.serial(L.bidirectional(CELLS[cell](3)), L.layer_norm(), L.last_step(), L.dense(4))
    _, params, _ = model.init(KEY, (6, 2), jnp.float64)
    x = _sequence(0, 5, 6, 2)
    t = jnp.array([0, 1, 2, 3, 1])
    _, grads = jax.jit(purenet.backprop(model, losses.softmax_cross_entropy))(params, x, t)
    auto = jax.jit(jax.grad(purenet.objective(model, losses.softmax_cross_entropy)))(params, x, t)
    assert purenet.gradcheck.rel_error(grads, auto) < AUTODIFF_TOL


def test_jit_and_vmap_over_seeds():
    model = _language_model()
    loss = losses.sequence_softmax_cross_entropy
    x, t = _tokens(jax.random.key(1), 4, 5)
    keys = jax.random.split(KEY, 2)
    params = jax.vmap(lambda k: model.init(k, (5,), jnp.float64)[1])(keys)
    grad_fn = purenet.backprop(model, loss)
    J, grads = jax.jit(jax.vmap(grad_fn, in_axes=(0, None, None)))(params, x, t)
    auto = jax.jit(jax.vmap(jax.grad(purenet.objective(model, loss)), in_axes=(0, None, None)))(
        params, x, t
    )
    assert J.shape == (2,) and float(J[0]) != float(J[1])
    assert purenet.gradcheck.rel_error(grads, auto) < AUTODIFF_TOL


# ------------------------------------------- Rumelhart, Hinton & Williams 1986


def test_unrolled_rnn_gradient_is_the_sum_over_layers_of_a_tied_feedforward_net():
    """Rumelhart et al. (1986), "Recurrent nets": a recurrent net run for T
    steps is a T-layer feed-forward net whose layers share one set of weights;
    its gradient is the sum of the per-layer gradients of that net.

    Layer t of the feed-forward net is built from ordinary purenet layers,
    ``h_t = tanh(x_t Wx_t + b_t + h_{t-1} Wh_t)``, each with its own (untied)
    copy of the weights, all equal to the RNN's. Its per-layer gradients come
    from the layers' own hand-written backward (and are checked against
    jax.grad of the untied net), then summed over layers."""
    m, T, d, h = 3, 5, 2, 4
    recurrent = L.rnn(h)
    _, p, _ = recurrent.init(KEY, (T, d), jnp.float64)
    x = _sequence(1, m, T, d)
    dy = jax.random.normal(jax.random.key(2), (m, T, h), jnp.float64)  # J = sum(y * dy)
    y, cache = recurrent.forward(p, x)
    tied, _ = recurrent.backward(p, cache, dy)

    step = L.serial(L.parallel(L.dense(h), L.dense(h)), L.fan_in_sum(), L.tanh())
    untied = [
        ((({"W": p["Wx"], "b": p["b"]}, {"W": p["Wh"], "b": jnp.zeros(h)}), (), ()))
        for _ in range(T)
    ]

    def feedforward(untied):
        hs, caches, h_t = [], [], jnp.zeros((m, h))
        for t in range(T):
            h_t, c = step.forward(untied[t], (x[:, t], h_t))
            hs.append(h_t)
            caches.append(c)
        return jnp.stack(hs, axis=1), caches

    @jax.jit
    def layered_backprop(untied):
        ys, caches = feedforward(untied)
        per_layer, dh = [None] * T, jnp.zeros((m, h))
        for t in reversed(range(T)):  # the layered net's backward, top layer first
            per_layer[t], (_, dh) = step.backward(untied[t], caches[t], dy[:, t] + dh)
        return ys, per_layer

    ys, per_layer = layered_backprop(untied)
    np.testing.assert_allclose(ys, y, rtol=1e-13)
    auto = jax.jit(jax.grad(lambda u: jnp.sum(feedforward(u)[0] * dy)))(untied)
    assert purenet.gradcheck.rel_error(per_layer, auto) < AUTODIFF_TOL
    # The layers' gradients differ from one another; their sum is the RNN's.
    assert float(jnp.max(jnp.abs(per_layer[0][0][0]["W"] - per_layer[-1][0][0]["W"]))) > 1e-3
    summed = {
        "Wx": sum(g[0][0]["W"] for g in per_layer),
        "b": sum(g[0][0]["b"] for g in per_layer),
        "Wh": sum(g[0][1]["W"] for g in per_layer),
    }
    for name in ("Wx", "Wh", "b"):
        np.testing.assert_allclose(tied[name], summed[name], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("name", CELLS)
def test_against_pytorch_with_copied_weights(name):
    torch = pytest.importorskip("torch")
    m, T, d, h = 3, 4, 2, 5
    layer = CELLS[name](h)
    _, p, _ = layer.init(KEY, (T, d), jnp.float64)
    x = _sequence(0, m, T, d)
    dy = jax.random.normal(jax.random.key(1), (m, T, h), jnp.float64)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name](
        d, h, batch_first=True
    ).double()
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(np.asarray(p["Wx"]).T))
        module.weight_hh_l0.copy_(torch.tensor(np.asarray(p["Wh"]).T))
        b_ih, b_hh = (p["bx"], p["bh"]) if name == "gru" else (p["b"], jnp.zeros_like(p["b"]))
        module.bias_ih_l0.copy_(torch.tensor(np.asarray(b_ih)))
        module.bias_hh_l0.copy_(torch.tensor(np.asarray(b_hh)))
    x_torch = torch.tensor(np.asarray(x), requires_grad=True)
    out, _ = module(x_torch)
    out.backward(torch.tensor(np.asarray(dy)))
    y, cache = layer.forward(p, x)
    grads, dx = layer.backward(p, cache, dy)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        grads["Wx"], module.weight_ih_l0.grad.numpy().T, rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        grads["Wh"], module.weight_hh_l0.grad.numpy().T, rtol=1e-10, atol=1e-12
    )
    db = grads["bx"] if name == "gru" else grads["b"]
    np.testing.assert_allclose(db, module.bias_ih_l0.grad.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("name", CELLS)
def test_bad_inputs_name_the_argument(name):
    layer = CELLS[name](3)
    _, params, _ = layer.init(KEY, (4, 2))
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(m, T, d\)"):
        layer.forward(params, jnp.ones((5, 2)))
    with pytest.raises(ValueError, match=r"x: expected a batch of shape \(m, T, 2\)"):
        layer.forward(params, jnp.ones((5, 4, 3)))
    with pytest.raises(ValueError, match="hidden_size: expected a positive integer, got 0"):
        CELLS[name](0)
    with pytest.raises(ValueError, match=r"h0: expected an initial state of shape \(5, 3\)"):
        state = (jnp.ones((5, 2)), jnp.ones((5, 3))) if name == "lstm" else jnp.ones((5, 2))
        layer.forward(params, (jnp.ones((5, 4, 2)), state))
