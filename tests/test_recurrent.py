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
    with np.errstate(over="ignore"):  # exp(1e3) = inf gives the right 0
        return 1.0 / (1.0 + np.exp(-a))


def numpy_reference(name, p, x, state=None, mask=None):
    """The recurrences of the docstrings as explicit loops over time; with a
    padding mask a masked step keeps the state and outputs zeros."""
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
        h_prev, c_prev = h, c
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
        if mask is None:
            out.append(h)
            continue
        valid = np.asarray(mask)[:, t, None]
        h, c = np.where(valid, h, h_prev), np.where(valid, c, c_prev)
        out.append(np.where(valid, h, 0.0))
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


# ----------------------------------------------------------------- padding masks

MASKED = {
    "rnn": L.rnn,
    "lstm": L.lstm,
    "gru": L.gru,
    "bidirectional_rnn": lambda h: L.bidirectional(L.rnn(h)),
    "bidirectional_lstm": lambda h: L.bidirectional(L.lstm(h)),
    "bidirectional_gru": lambda h: L.bidirectional(L.gru(h)),
}
LENGTHS = (5, 3, 1)  # the valid steps of three sequences padded to T = 6


def _cell(name):
    return name.removeprefix("bidirectional_")


def _masked_state(name, seed, m, h):
    """An initial state for layer `name`: a pair of them for bidirectional."""
    if name.startswith("bidirectional_"):
        return (
            _initial_state(_cell(name), seed, m, h),
            _initial_state(_cell(name), seed + 7, m, h),
        )
    return _initial_state(name, seed, m, h)


def _valid_steps(n, T, padding):
    return slice(0, n) if padding == "last" else slice(T - n, T)


def _padded(x_cut, lengths, T, padding, seed, garbage=1e3):
    """Sequence i's first `lengths[i]` steps of `x_cut` placed first or last
    in `T` steps, large random values at the padded steps, and the mask."""
    m, _, d = x_cut.shape
    x = garbage * np.random.default_rng(seed).standard_normal((m, T, d))
    mask = np.zeros((m, T), bool)
    for i, n in enumerate(lengths):
        x[i, _valid_steps(n, T, padding)] = np.asarray(x_cut)[i, :n]
        mask[i, _valid_steps(n, T, padding)] = True
    return jnp.asarray(x), jnp.asarray(mask)


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("padding", ["first", "last"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
def test_padded_sequences_give_the_cut_sequences(name, padding, with_state):
    """A padded sequence's outputs at its valid steps, and every gradient of
    `J = sum(y * dy)`, are those of the sequence cut to its valid steps and
    run alone (padding first or last, the initial state given or not, for
    both directions of bidirectional); outputs at padded steps are zero and
    the padded inputs (large garbage here) get no gradient."""
    m, T, d, h = len(LENGTHS), 6, 2, 3
    layer = MASKED[name](h)
    out_shape, params, _ = layer.init(KEY, (T, d), jnp.float64)
    x, mask = _padded(_sequence(1, m, T, d), LENGTHS, T, padding, seed=2)
    state = _masked_state(name, 3, m, h) if with_state else None
    dy = normal(4, (m, T, out_shape[-1]))  # padded steps too: dy there must not matter

    def run(x, mask, dy, state):
        y, cache = layer.forward(params, x if state is None else (x, state), mask=mask)
        dparams, dx = layer.backward(params, cache, dy)
        return y, dparams, (dx, None) if state is None else dx

    @jax.jit
    def padded_and_cut(x, mask, dy):
        cut = []
        for i, n in enumerate(LENGTHS):
            steps = _valid_steps(n, T, padding)
            s_i = None if state is None else jax.tree.map(lambda s, i=i: s[i : i + 1], state)
            cut.append(run(x[i : i + 1, steps], None, dy[i : i + 1, steps], s_i))
        return run(x, mask, dy, state), cut

    # (checked in NumPy: an eager jax op would compile a program per shape)
    (y, dparams, (dx, dstate)), cut = jax.tree.map(np.asarray, padded_and_cut(x, mask, dy))
    mask = np.asarray(mask)
    assert np.all(y[~mask] == 0.0) and np.all(dx[~mask] == 0.0)
    for i, (n, (y_i, _, (dx_i, dstate_i))) in enumerate(zip(LENGTHS, cut, strict=True)):
        steps = _valid_steps(n, T, padding)
        np.testing.assert_allclose(y[i, steps], y_i[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx[i, steps], dx_i[0], rtol=1e-12, atol=1e-14)
        if with_state:
            mine = jax.tree.map(lambda s, i=i: s[i : i + 1], dstate)
            assert purenet.gradcheck.rel_error(mine, dstate_i) < 1e-12
    # The params' gradient is the sum of the cut sequences' gradients.
    summed = jax.tree.map(lambda *g: sum(g), *[c[1] for c in cut])
    assert purenet.gradcheck.rel_error(dparams, summed) < 1e-12


@functools.partial(jax.jit, static_argnames="layer")
def _masked_manual_and_autodiff(params, x, mask, dy, *, layer):
    y, cache = layer.forward(params, x, mask=mask)
    manual = layer.backward(params, cache, dy)
    _, vjp = jax.vjp(lambda p, x: layer.forward(p, x, mask=mask)[0], params, x)
    return y, manual, vjp(dy)


@pytest.mark.parametrize("name", CELLS)
@settings(max_examples=6, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 5), min_size=3, max_size=3),
    padding=st.sampled_from(["first", "last", "holes"]),
    seed=st.integers(0, 2**16),
    with_state=st.booleans(),
)
@example(lengths=[0, 5, 2], padding="last", seed=0, with_state=True)
@example(lengths=[0, 0, 0], padding="first", seed=1, with_state=False)
def test_random_masks_follow_the_masked_recurrence(name, lengths, padding, seed, with_state):
    """Any mask (lengths 0 to T, padding first, last, or holes anywhere)
    against the NumPy loop that skips masked steps; BPTT against jax.vjp.
    A row with no valid step (length 0) outputs zeros everywhere, and its
    input and initial state get zero gradient."""
    m, T, d, h = 3, 5, 2, 3
    layer = CELLS[name](h)
    _, params, _ = layer.init(KEY, (T, d), jnp.float64)
    if padding == "holes":
        mask = np.random.default_rng(seed + 1).random((m, T)) < 0.5
        mask[0] &= lengths[0] > 0  # an empty row among the holes
        garbage = 1e3 * np.random.default_rng(seed).standard_normal((m, T, d))
        x = jnp.where(mask[..., None], _sequence(seed, m, T, d), garbage)
        mask = jnp.asarray(mask)
    else:
        x, mask = _padded(_sequence(seed, m, T, d), lengths, T, padding, seed + 1)
    state = _initial_state(name, seed + 2, m, h) if with_state else None
    dy = normal(seed + 3, (m, T, h))
    y, manual, autodiff = _masked_manual_and_autodiff(
        params, x if state is None else (x, state), mask, dy, layer=layer
    )
    expected = numpy_reference(name, params, np.asarray(x), state, np.asarray(mask))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-13)
    assert purenet.gradcheck.rel_error(manual, autodiff) < AUTODIFF_TOL
    y, (_, dx) = np.asarray(y), jax.tree.map(np.asarray, manual)
    empty = ~np.asarray(mask).any(axis=1)
    assert np.all(y[empty] == 0.0)
    for d_input in jax.tree.leaves(dx):  # dx, and dh0 (dc0) when given
        assert np.all(d_input[empty] == 0.0)


@pytest.mark.parametrize("name", [*MASKED, "last_step"])
def test_an_all_true_mask_is_no_mask(name):
    """An all-True mask gives the numbers of `mask=None` (which computes
    nothing of the masking), to rounding: the two are different XLA programs."""
    m, T, d = 2, 4, 3
    layer = L.last_step() if name == "last_step" else MASKED[name](2)
    out_shape, params, _ = layer.init(KEY, (T, d), jnp.float64)
    x = _sequence(0, m, T, d)
    dy = normal(1, (m, *out_shape))

    @jax.jit
    def both(x, dy, mask):
        y, cache = layer.forward(params, x, mask=mask)
        return y, layer.backward(params, cache, dy)

    without, with_mask = both(x, dy, None), both(x, dy, jnp.ones((m, T), bool))
    for a, b in zip(jax.tree.leaves(without), jax.tree.leaves(with_mask), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-17)


def test_last_step_takes_each_rows_last_valid_step():
    x = _sequence(0, 4, 5, 3)
    mask = jnp.array(
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0]], bool
    )  # full, padded last, holes, empty
    y, cache = L.last_step().forward((), x, mask=mask)
    np.testing.assert_array_equal(y, np.stack([x[0, 4], x[1, 1], x[2, 3], np.zeros(3)]))
    dy = normal(1, (4, 3))
    _, dx = L.last_step().backward((), cache, dy)
    expected = np.zeros((4, 5, 3))
    expected[0, 4], expected[1, 1], expected[2, 3] = dy[0], dy[1], dy[2]
    np.testing.assert_array_equal(dx, expected)
    _assert_checks(check_layer(L.last_step(), (), x, mask=mask, dy_key=jax.random.key(2)))
    # Any trailing feature axes: (m, T, 2, 2).
    x4 = _sequence(2, 4, 5, 4).reshape(4, 5, 2, 2)
    np.testing.assert_array_equal(L.last_step().forward((), x4, mask=mask)[0][1], x4[1, 1])


def _classifier(cell):
    return L.serial(L.bidirectional(CELLS[cell](3)), L.last_step(), L.dense(4))


def _tagger(cell):
    return L.serial(CELLS[cell](3), L.dense(4))


def _mixed_padding(m, T):
    """Half the rows padded last, half padded first, lengths 1 to T."""
    lengths = 1 + np.arange(m) % T
    t = np.arange(T)[None, :]
    last = t < lengths[:, None]
    first = t >= T - lengths[:, None]
    return jnp.asarray(np.where((np.arange(m) % 2 == 0)[:, None], last, first))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("head", ["classifier", "tagger"])
def test_masked_models_backprop_is_jax_grad_and_padding_changes_nothing(cell, head):
    """serial(bidirectional(cell), last_step, dense) with a softmax loss and
    serial(cell, dense) with a per-step loss whose padded steps are ignored:
    backprop equals jax.grad(objective) with the mask; whatever sits at the
    padded steps (large values, inf, NaN) changes neither the cost nor any
    gradient, exactly; a NaN at a valid step reaches both; under vmap over
    data sets (mask included) each slice is the single run."""
    m, T, d = 5, 6, 2
    model = _classifier(cell) if head == "classifier" else _tagger(cell)
    _, params, _ = model.init(KEY, (T, d), jnp.float64)
    # the data in NumPy: an eager jax op would compile a program per shape
    mask = np.asarray(_mixed_padding(m, T))
    x = np.asarray(_sequence(1, m, T, d))
    if head == "classifier":
        loss, t = losses.softmax_cross_entropy, np.arange(m) % 4
    else:
        loss = losses.sequence_softmax_cross_entropy
        t = np.where(mask, np.random.default_rng(2).integers(0, 4, (m, T)), losses.IGNORE_LABEL)

    def by_hand(params, x, t, mask):
        return purenet.backprop(model, loss)(params, x, t, mask=mask)

    by_hand_jit = jax.jit(by_hand)
    autodiff = jax.jit(
        lambda p, x, t, mask: jax.grad(purenet.objective(model, loss))(p, x, t, mask=mask)
    )
    J, g = by_hand_jit(params, x, t, mask)
    assert purenet.gradcheck.rel_error(g, autodiff(params, x, t, mask)) < AUTODIFF_TOL
    for garbage in (1e6, np.inf, np.nan):
        x_bad = np.where(mask[..., None], x, garbage)
        J_bad, g_bad = by_hand_jit(params, x_bad, t, mask)
        assert float(J_bad) == float(J), garbage
        for a, b in zip(jax.tree.leaves(g_bad), jax.tree.leaves(g), strict=True):
            np.testing.assert_array_equal(a, b)
        assert purenet.gradcheck.rel_error(autodiff(params, x_bad, t, mask), g) < AUTODIFF_TOL
    x_nan = x.copy()
    x_nan[1, np.argmax(mask[1]), 0] = np.nan  # a valid step of row 1
    J_nan, g_nan = by_hand_jit(params, x_nan, t, mask)
    assert math.isnan(float(J_nan))
    assert all(np.isnan(a).any() for a in jax.tree.leaves(g_nan))
    # vmap over two data sets, each with its own mask
    xs, ts, masks = np.stack([x, -0.5 * x]), np.stack([t, t[::-1]]), np.stack([mask, mask[::-1]])
    Js, gs = jax.jit(jax.vmap(by_hand, in_axes=(None, 0, 0, 0)))(params, xs, ts, masks)
    J1, g1 = by_hand_jit(params, xs[1], ts[1], masks[1])
    Js, gs = np.asarray(Js), jax.tree.map(np.asarray, gs)
    for i, single in enumerate([(J, g), (J1, g1)]):
        sliced = (Js[i], jax.tree.map(lambda a, i=i: a[i], gs))
        assert purenet.gradcheck.rel_error(sliced, single) < AUTODIFF_TOL


def _to_torch(torch, module, p, name, suffix=""):
    """Copy a cell's params into a PyTorch module (`suffix="_reverse"` for
    the backward direction of a bidirectional one)."""
    with torch.no_grad():
        getattr(module, f"weight_ih_l0{suffix}").copy_(torch.tensor(np.asarray(p["Wx"]).T))
        getattr(module, f"weight_hh_l0{suffix}").copy_(torch.tensor(np.asarray(p["Wh"]).T))
        b_ih, b_hh = (p["bx"], p["bh"]) if name == "gru" else (p["b"], jnp.zeros_like(p["b"]))
        getattr(module, f"bias_ih_l0{suffix}").copy_(torch.tensor(np.asarray(b_ih)))
        getattr(module, f"bias_hh_l0{suffix}").copy_(torch.tensor(np.asarray(b_hh)))


def _torch_grads(module, name, suffix=""):
    g = {
        "Wx": getattr(module, f"weight_ih_l0{suffix}").grad.numpy().T,
        "Wh": getattr(module, f"weight_hh_l0{suffix}").grad.numpy().T,
    }
    bias = getattr(module, f"bias_ih_l0{suffix}").grad.numpy()
    if name == "gru":
        return {**g, "bx": bias, "bh": getattr(module, f"bias_hh_l0{suffix}").grad.numpy()}
    return {**g, "b": bias}


@pytest.mark.parametrize("name", [*CELLS, "bidirectional_lstm", "bidirectional_gru"])
def test_against_pytorch_packed_sequences(name):
    """Padding last with the mask against `pack_padded_sequence`: outputs
    (zero at padded steps in both), the final hidden state (PyTorch's `h_n`,
    our last_step), and the gradients of the params and of the input."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    m, T, d, h = 3, 5, 2, 4
    lengths = [2, 5, 3]
    bidirectional = name.startswith("bidirectional_")
    layer = MASKED[name](h)
    _, p, _ = layer.init(KEY, (T, d), jnp.float64)
    x, mask = _padded(_sequence(0, m, T, d), lengths, T, "last", seed=1)
    dy = normal(2, (m, T, 2 * h if bidirectional else h))
    cell = _cell(name)
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        d, h, batch_first=True, bidirectional=bidirectional
    ).double()
    if bidirectional:
        _to_torch(torch, module, p["forward"], cell)
        _to_torch(torch, module, p["backward"], cell, "_reverse")
    else:
        _to_torch(torch, module, p, cell)
    x_torch = torch.tensor(np.asarray(x), requires_grad=True)
    packed = pack_padded_sequence(x_torch, lengths, batch_first=True, enforce_sorted=False)
    out_packed, final = module(packed)
    out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=T)
    out.backward(torch.tensor(np.asarray(dy)))
    h_n = (final[0] if cell == "lstm" else final).detach().numpy()

    y, cache = layer.forward(p, x, mask=mask)
    grads, dx = layer.backward(p, cache, dy)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)
    if bidirectional:  # h_n: the forward's last valid step, the reverse's first step
        np.testing.assert_allclose(y[:, 0, h:], h_n[1], rtol=1e-10, atol=1e-12)
        theirs = {
            "forward": _torch_grads(module, cell),
            "backward": _torch_grads(module, cell, "_reverse"),
        }
    else:
        theirs = _torch_grads(module, cell)
    last = L.last_step().forward((), y, mask=mask)[0]
    np.testing.assert_allclose(last[:, :h], h_n[0], rtol=1e-10, atol=1e-12)
    assert purenet.gradcheck.rel_error(grads, theirs) < 1e-10


@pytest.mark.parametrize("name", [*MASKED, "last_step"])
def test_bad_masks_name_the_argument(name):
    layer = L.last_step() if name == "last_step" else MASKED[name](3)
    _, params, _ = layer.init(KEY, (4, 2))
    x = jnp.ones((5, 4, 2))
    layer_name = "bidirectional" if name.startswith("bidirectional") else name
    shape = rf"mask: expected a boolean padding mask of shape \(m, T\) = \(5, 4\) for {layer_name}"
    with pytest.raises(ValueError, match=shape + ", got shape"):
        layer.forward(params, x, mask=jnp.ones((5, 3), bool))
    with pytest.raises(ValueError, match=shape + r" \(True at valid steps\), got dtype int32"):
        layer.forward(params, x, mask=jnp.ones((5, 4), jnp.int32))
    with pytest.raises(TypeError, match=shape + ", got list"):
        layer.forward(params, x, mask=[[True] * 4] * 5)
