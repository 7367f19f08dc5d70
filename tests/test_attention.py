"""purenet.layers.attention: forwards against a NumPy transcription of
torch.nn.MultiheadAttention and against jax.nn.dot_product_attention, every
hand-written backward against jax.vjp and central differences (float64),
masks (padding, causal, rows with no allowed key), large logits, whole
transformer models through backprop against jax.grad(objective) under jit
and vmap, PyTorch with copied weights when torch is installed, and a smoke
run of the attention_vs_recurrence experiment."""

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
from purenet.gradcheck import check_layer, numerical_gradient, rel_error
from tests.conftest import normal

KEY = jax.random.key(0)
# As tests/test_recurrent.py: float64 hand-written vs jax.vjp agree to
# rounding; central differences with the default step to about 1e-10.
AUTODIFF_TOL, NUMERIC_TOL = 1e-9, 1e-8


def _random_params(layer, in_shape, seed):
    """``layer``'s params with every leaf drawn from :func:`_normal` (no
    eager ``init``, whose random kernels compile per shape)."""
    shapes = jax.eval_shape(lambda k: layer.init(k, in_shape, jnp.float64)[1], KEY)
    leaves, treedef = jax.tree.flatten(shapes)
    return treedef.unflatten([normal(seed + i, leaf.shape, 0.5) for i, leaf in enumerate(leaves)])


def _padding(lengths, T):
    """A boolean (m, T) mask of valid positions: the first ``lengths[i]`` of row i."""
    return jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]


def _close(manual, autodiff):
    """rel_error with a floor of 1e-4 on ``|a| + |b|``: the gradients here are
    of order 0.1 to 10, and ``bk``'s is exactly zero by hand but rounding noise
    (1e-16 to 1e-15) in jax.vjp, which a smaller floor would count as error."""
    return rel_error(manual, autodiff, 1e-4) < AUTODIFF_TOL


# check_layer's reports floor |a| + |b| at 1e-6: bk's exact zero against
# jax.vjp's 1e-15 of rounding reads as 1e-9 there, hence 1e-8 for jax.vjp.
LAYER_TOL = {"autodiff": 1e-8, "numerical": NUMERIC_TOL}


def _assert_report(report):
    assert report.passed, report
    assert report.numerical_norm_ratio < NUMERIC_TOL, report


# ------------------------------------------------------ forward references


def torch_style_mha(p, x, heads, key_padding_mask=None, causal=False):
    """torch.nn.functional.multi_head_attention_forward transcribed in NumPy
    (batch_first, self-attention), fed with torch's parameter layout built
    from ours as the docstring says: in_proj_weight = [Wq^T; Wk^T; Wv^T]."""
    p = {k: np.asarray(v) for k, v in p.items()}
    x = np.asarray(x)
    m, T, d = x.shape
    dh = d // heads
    in_proj_weight = np.concatenate([p["Wq"].T, p["Wk"].T, p["Wv"].T])  # (3d, d)
    in_proj_bias = np.concatenate([p["bq"], p["bk"], p["bv"]])
    qkv = x @ in_proj_weight.T + in_proj_bias
    q, k, v = np.split(qkv, 3, axis=-1)
    out = np.zeros((m, T, d))
    for n in range(m):
        for h in range(heads):
            cols = slice(h * dh, (h + 1) * dh)
            logits = q[n, :, cols] @ k[n, :, cols].T / math.sqrt(dh)
            if key_padding_mask is not None:
                logits = np.where(np.asarray(key_padding_mask)[n][None, :], -np.inf, logits)
            if causal:
                logits = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, logits)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[n, :, cols] = (e / e.sum(axis=1, keepdims=True)) @ v[n, :, cols]
    return out @ p["Wo"] + p["bo"]  # out_proj.weight = Wo^T


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
def test_multi_head_attention_matches_torch_layout(causal, padded):
    layer = L.multi_head_attention(3, causal=causal)
    out_shape, p, state = layer.init(KEY, (5, 6), jnp.float64)
    assert out_shape == (5, 6) and state == ()
    assert set(p) == {"Wq", "Wk", "Wv", "Wo", "bq", "bk", "bv", "bo"}
    p = {k: v + 0.1 * normal(i, v.shape) for i, (k, v) in enumerate(p.items())}
    x = normal(9, (2, 5, 6))
    mask = _padding([5, 3], 5) if padded else None
    y, _ = layer.forward(p, x, mask=mask)
    expected = torch_style_mha(p, x, 3, None if mask is None else ~mask, causal)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_attention_forward_matches_jax_nn(causal):
    """jax.nn.dot_product_attention uses the same (B, T, N, H) layout; it takes
    the softmax in float32, so compare in float32."""
    k1, k2, k3 = jax.random.split(KEY, 3)
    q = jax.random.normal(k1, (2, 4, 3, 5), jnp.float32)
    k = jax.random.normal(k2, (2, 6, 3, 5), jnp.float32)
    v = jax.random.normal(k3, (2, 6, 3, 5), jnp.float32)  # jax.nn wants d_v = d_k
    mask = _padding([6, 4], 6)[:, None, None, :]
    out, cache = L.attention_forward(q, k, v, mask, causal=causal)
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert cache[3].shape == (2, 3, 4, 6)  # P: m * heads * Tq * Tk entries


def test_sinusoids_are_vaswanis_table():
    table = np.asarray(L.sinusoids(7, 6, jnp.float64))
    t, i = np.arange(7)[:, None], np.arange(3)[None, :]
    np.testing.assert_allclose(table[:, 0::2], np.sin(t / 10000 ** (2 * i / 6)), atol=1e-15)
    np.testing.assert_allclose(table[:, 1::2], np.cos(t / 10000 ** (2 * i / 6)), atol=1e-15)
    assert L.sinusoids(3, 5).shape == (3, 5)  # odd width: the last cosine is dropped


# --------------------------------------------- the function pair, any shape


def _jit(fn, **kwargs):
    """jax.jit at XLA's backend optimisation level 0: the hypothesis tests
    compile one small program per drawn shape, and optimising it costs more
    than running it (as experiments/_common.jit)."""
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0}, **kwargs)


def _pair_manual_and_autodiff(q, k, v, mask, dout, *, causal):
    out, cache = L.attention_forward(q, k, v, mask, causal=causal)
    manual = L.attention_backward(cache, dout)
    _, vjp = jax.vjp(lambda q, k, v: L.attention_forward(q, k, v, mask, causal=causal)[0], q, k, v)
    return out, manual, vjp(dout)


@settings(max_examples=8, deadline=None)
@given(
    m=st.integers(1, 3),
    Tq=st.integers(1, 5),
    Tk=st.integers(1, 5),
    heads=st.integers(1, 3),
    d_k=st.integers(1, 4),
    d_v=st.integers(1, 3),
    causal=st.booleans(),
    mask_seed=st.one_of(st.none(), st.integers(0, 2**16)),
)
def test_attention_backward_matches_vjp_for_any_shape(
    m, Tq, Tk, heads, d_k, d_v, causal, mask_seed
):
    q, k = normal(1, (m, Tq, heads, d_k)), normal(2, (m, Tk, heads, d_k))
    v, dout = normal(3, (m, Tk, heads, d_v)), normal(4, (m, Tq, heads, d_v))
    # a random (m, heads, Tq, Tk) mask: some rows end up with no allowed key
    mask = (
        None
        if mask_seed is None
        else jnp.asarray(np.random.default_rng(mask_seed).random((m, heads, Tq, Tk)) < 0.6)
    )
    out, manual, autodiff = _jit(_pair_manual_and_autodiff, static_argnames="causal")(
        q, k, v, mask, dout, causal=causal
    )
    assert bool(jnp.all(jnp.isfinite(out)))
    assert _close(manual, autodiff)


def test_attention_backward_matches_finite_differences():
    q, k, v = (normal(i, (2, 4, 2, 3)) for i in range(3))
    dout = normal(3, (2, 4, 2, 3))
    mask = _padding([4, 2], 4)[:, None, None, :]

    def probe(qkv):
        return jnp.sum(L.attention_forward(*qkv, mask, causal=True)[0] * dout)

    _, cache = L.attention_forward(q, k, v, mask, causal=True)
    manual = L.attention_backward(cache, dout)
    numeric = numerical_gradient(probe, (q, k, v))
    assert purenet.gradcheck.norm_ratio(manual, numeric) < NUMERIC_TOL


# ------------------------------------------------------- layers, one by one

X = normal(1, (3, 5, 4))
MASK = _padding([5, 3, 1], 5)

LAYERS = {
    "mha": (L.multi_head_attention(4), None),
    "mha_causal_padded": (L.multi_head_attention(2, causal=True), MASK),
    "position_embedding": (L.position_embedding(7), None),
    "sinusoidal_positions": (L.sinusoidal_positions(), None),
    # relu's backward is core's; the relu block is checked inside the
    # language model below, against jax.grad
    "block_gelu_causal_padded": (L.transformer_block(4, 2, mlp_dim=6, causal=True), MASK),
}


@pytest.mark.parametrize("name", LAYERS)
def test_layers_match_vjp_and_finite_differences(name):
    layer, mask = LAYERS[name]
    params = _random_params(layer, (5, 4), seed=20)
    _assert_report(
        check_layer(layer, params, X, dy_key=jax.random.key(3), tolerance=LAYER_TOL, mask=mask)
    )


def test_scaled_dot_product_layer_matches_vjp_and_finite_differences():
    layer = L.scaled_dot_product_attention(causal=True)
    q, k, v = normal(1, (2, 4, 3)), normal(2, (2, 4, 3)), normal(3, (2, 4, 2))
    assert layer.init(KEY, ((4, 3), (4, 3), (4, 2)))[0] == (4, 2)
    _assert_report(check_layer(layer, (), (q, k, v), dy_key=KEY, tolerance=LAYER_TOL))
    mask = _padding([4, 2], 4)
    _assert_report(check_layer(layer, (), (q, k, v), dy_key=KEY, tolerance=LAYER_TOL, mask=mask))
    y, cache = layer.forward((), (q, k, v), mask=mask)
    _, (dq, dk, dv) = layer.backward((), cache, jnp.ones_like(y))
    assert float(jnp.max(jnp.abs(dk[1, 2:]))) == 0.0  # padded keys get no gradient


@settings(max_examples=8, deadline=None)
@given(
    m=st.integers(1, 3),
    T=st.integers(1, 6),
    heads=st.integers(1, 3),
    head_size=st.integers(1, 3),
    causal=st.booleans(),
    padded=st.booleans(),
)
@example(m=2, T=4, heads=2, head_size=2, causal=True, padded=True)
def test_multi_head_attention_matches_vjp_for_any_shape(m, T, heads, head_size, causal, padded):
    d = heads * head_size
    layer = L.multi_head_attention(heads, causal=causal)
    p = _random_params(layer, (T, d), seed=10)
    x = normal(m, (m, T, d))
    lengths = np.random.default_rng(d).integers(0, T + 1, m)  # 0: all padding
    mask = _padding(lengths, T) if padded else None
    dy = normal(7, (m, T, d))

    @_jit
    def both(p, x):
        _, cache = layer.forward(p, x, mask=mask)
        grads, dx = layer.backward(p, cache, dy)
        _, vjp = jax.vjp(lambda p, x: layer.forward(p, x, mask=mask)[0], p, x)
        return (grads, dx), vjp(dy)

    manual, autodiff = both(p, x)
    assert _close(manual, autodiff)


# ----------------------------------------------- stability and masked rows


def test_large_logits_and_fully_masked_rows_stay_finite_in_float32():
    """Logits of order 1e4 and rows with no allowed key: no NaN or inf
    anywhere, forward or backward; fully masked rows give zeros."""
    layer = L.multi_head_attention(2, causal=True)
    _, p, _ = layer.init(KEY, (4, 6))
    p = {k: 30.0 * v for k, v in p.items()}  # logits ~ 1e4
    x = 10.0 * jax.random.normal(KEY, (3, 4, 6), jnp.float32)
    mask = jnp.array([[1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0]], bool)

    @jax.jit
    def both(p, x):
        y, cache = layer.forward(p, x, mask=mask)
        return y, cache, layer.backward(p, cache, jnp.ones_like(y))

    y, cache, grads = both(p, x)
    for leaf in jax.tree.leaves((y, grads)):
        assert leaf.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(leaf)))
    P = cache[2][3]
    assert float(jnp.max(jnp.abs(P[2]))) == 0.0  # an all-padding example
    assert float(jnp.max(jnp.abs(P[1, :, 0]))) == 0.0  # query 0: its only key is padding
    np.testing.assert_allclose(jnp.sum(P[0], axis=-1), 1.0, rtol=1e-6)
    # the attention output of an all-padding example is zero: y = bo there
    np.testing.assert_allclose(y[2], jnp.broadcast_to(p["bo"], (4, 6)), rtol=1e-6)


def test_masked_keys_do_not_matter():
    """Changing a padded position changes no output at a valid position."""
    layer = L.multi_head_attention(2)
    _, p, _ = layer.init(KEY, (5, 4), jnp.float64)
    x = normal(0, (2, 5, 4))
    mask = _padding([3, 5], 5)
    y1, _ = layer.forward(p, x, mask=mask)
    y2, _ = layer.forward(p, x.at[0, 3:].set(1e3), mask=mask)
    np.testing.assert_allclose(y1[0, :3], y2[0, :3], rtol=1e-12)


# ------------------------------------------------------- whole transformers

VOCAB, T_SEQ, WIDTH = 7, 6, 8


def _language_model(causal=True):
    return L.serial(
        L.embedding(VOCAB, WIDTH),
        L.position_embedding(T_SEQ),
        L.transformer_block(WIDTH, 2, mlp_dim=16, causal=causal),
        L.transformer_block(WIDTH, 2, mlp_dim=16, causal=causal, activation="relu"),
        L.layer_norm(),
        L.dense(VOCAB),
    )


def _padded_model():
    return L.serial(
        L.embedding(VOCAB, WIDTH),
        L.sinusoidal_positions(),
        L.transformer_block(WIDTH, 4, mlp_dim=16),
        L.dense(VOCAB),
    )


def _tokens(key, m):
    k1, k2 = jax.random.split(key)
    return (
        jax.random.randint(k1, (m, T_SEQ), 0, VOCAB),
        jax.random.randint(k2, (m, T_SEQ), 0, VOCAB),
    )


def test_transformer_backprop_matches_jax_grad_under_jit_and_vmap():
    """embedding -> positions -> two causal blocks -> layer norm -> dense, the
    sequence loss with ignored steps; several seeds at once under jit(vmap)."""
    model, loss = _language_model(), losses.sequence_softmax_cross_entropy
    params = jax.tree.map(
        lambda *a: jnp.stack(a), *(_random_params(model, (T_SEQ,), seed=s) for s in (0, 100))
    )
    x, t = _tokens(jax.random.key(1), 4)
    t = t.at[0, -2:].set(losses.IGNORE_LABEL)
    J = purenet.objective(model, loss)
    manual = jax.jit(jax.vmap(lambda p: purenet.backprop(model, loss)(p, x, t)))(params)
    reference = jax.jit(jax.vmap(jax.value_and_grad(lambda p: J(p, x, t))))(params)
    np.testing.assert_allclose(manual[0], reference[0], rtol=1e-12)
    assert _close(manual[1], reference[1])


def test_padded_transformer_backprop_matches_jax_grad():
    """ids and the keyword mask through embedding / transformer_block; padded steps
    carry IGNORE_LABEL; padded tokens change neither the loss nor its gradient."""
    model, loss = _padded_model(), losses.sequence_softmax_cross_entropy
    _, params, _ = model.init(KEY, (T_SEQ,), jnp.float64)
    ids, t = _tokens(jax.random.key(2), 3)
    mask = _padding([6, 4, 2], T_SEQ)
    t = jnp.where(mask, t, losses.IGNORE_LABEL)
    grad_fn = jax.jit(purenet.backprop(model, loss))
    J, grads = grad_fn(params, ids, t, mask=mask)
    reference = jax.jit(jax.value_and_grad(purenet.objective(model, loss)))
    J_ref, grads_ref = reference(params, ids, t, mask=mask)
    np.testing.assert_allclose(J, J_ref, rtol=1e-12)
    assert _close(grads, grads_ref)
    J2, grads2 = grad_fn(params, jnp.where(mask, ids, 0), t, mask=mask)
    np.testing.assert_allclose(J2, J, rtol=1e-12)
    # the embedding rows of padding tokens get no gradient from padded steps
    assert _close(grads2[1:], grads[1:])


def test_against_pytorch_with_copied_weights():
    torch = pytest.importorskip("torch")
    d, heads = 6, 3
    layer = L.multi_head_attention(heads)
    _, p, _ = layer.init(KEY, (5, d), jnp.float64)
    p = {k: v + 0.1 * normal(i, v.shape) for i, (k, v) in enumerate(p.items())}
    module = torch.nn.MultiheadAttention(d, heads, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        module.in_proj_weight.copy_(
            torch.tensor(np.concatenate([np.asarray(p[w]).T for w in ("Wq", "Wk", "Wv")]))
        )
        module.in_proj_bias.copy_(
            torch.tensor(np.concatenate([np.asarray(p[b]) for b in ("bq", "bk", "bv")]))
        )
        module.out_proj.weight.copy_(torch.tensor(np.asarray(p["Wo"]).T))
        module.out_proj.bias.copy_(torch.tensor(np.asarray(p["bo"])))
    x = normal(5, (2, 5, d))
    mask = _padding([5, 3], 5)
    xt = torch.tensor(np.asarray(x))
    expected, _ = module(
        xt, xt, xt, key_padding_mask=torch.tensor(np.asarray(~mask)), need_weights=False
    )
    y, _ = layer.forward(p, x, mask=mask)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, pattern",
    [
        (
            lambda: L.multi_head_attention(3).init(KEY, (5, 8)),
            r"heads: expected a number of heads that divides the model width d = 8",
        ),
        (lambda: L.transformer_block(8, 3), r"heads: expected a number of heads that divides"),
        (
            lambda: L.transformer_block(8, 2).init(KEY, (5, 4)),
            r"in_shape: expected a sequence shape \(T, 8\) for transformer_block\(8, 2\)",
        ),
        (
            lambda: L.multi_head_attention(2).forward(
                L.multi_head_attention(2).init(KEY, (5, 4))[1], X, mask=MASK[:, :4]
            ),
            r"mask: expected a boolean padding mask of shape \(m, T\) = \(3, 5\)",
        ),
        (
            lambda: L.multi_head_attention(2).forward(
                L.multi_head_attention(2).init(KEY, (5, 4))[1], X, mask=MASK.astype(jnp.int32)
            ),
            r"mask: expected a boolean mask",
        ),
        (
            lambda: L.transformer_block(4, 2).forward(
                L.transformer_block(4, 2).init(KEY, (5, 4))[1], X, mask=MASK[:2]
            ),
            r"^transformer_block\(4, 2\), serial\[0\], residual, serial\[1\] "
            r"\(multi_head_attention\(2\)\): mask: expected",
        ),
        (
            lambda: L.scaled_dot_product_attention().forward((), (X, X, X, MASK)),
            r"x: expected a tuple \(q, k, v\) for scaled_dot_product_attention",
        ),
        (
            lambda: L.attention_forward(
                X[..., None], X[..., None], X[..., None], jnp.ones((2, 5), bool)
            ),
            r"mask: expected a boolean mask broadcastable to \(m, heads, Tq, Tk\)",
        ),
        (
            lambda: L.position_embedding(4).init(KEY, (5, 8)),
            r"in_shape: expected a sequence of at most max_len = 4 positions",
        ),
        (
            lambda: L.position_embedding(4).forward({"W": jnp.zeros((4, 4))}, X),
            r"x: expected a sequence of at most max_len = 4 positions for position_embedding, "
            r"got T = 5",
        ),
        (
            lambda: L.transformer_block(4, 2, activation="tanh"),
            r"activation: expected one of \['gelu', 'gelu_tanh', 'relu'\]",
        ),
    ],
    ids=[
        "heads_mha",
        "heads_block",
        "width_block",
        "mask_shape",
        "mask_dtype",
        "mask_block",
        "mask_in_x",
        "mask_broadcast",
        "positions_init",
        "positions_forward",
        "activation",
    ],
)
def test_bad_input_names_the_argument(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------------ the experiment


def test_attention_vs_recurrence_smoke_run_and_replot(tmp_path, monkeypatch):
    from tests.test_experiments_a import _finite_numbers, check_smoke_and_replot

    record = check_smoke_and_replot("attention_vs_recurrence", tmp_path, monkeypatch)
    _finite_numbers(record["numbers"])
    P = np.asarray(record["numbers"]["attention"]["query_rows"])
    assert P.shape == (8, 2, 4)  # examples, heads, T = n + 1
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-5)


# ----------------------------------------------------- the flash option


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash_cache_gives_the_same_gradients(causal, x64):
    """flash=True keeps the row log-sum-exps, (m, heads, T), not P, and its
    backward (P recomputed, Dao et al. 2022) equals the default and jax.vjp
    to float64 rounding, with a padding mask and an all-padding example."""
    plain = L.multi_head_attention(2, causal=causal)
    flash = L.multi_head_attention(2, causal=causal, flash=True)
    p = _random_params(plain, (5, 4), seed=30)
    x, dy = normal(31, (3, 5, 4)), normal(32, (3, 5, 4))
    mask = _padding([5, 2, 0], 5)

    @jax.jit
    def all_three(p, x):
        y, cache = plain.forward(p, x, mask=mask)
        y_f, cache_f = flash.forward(p, x, mask=mask)
        _, vjp = jax.vjp(lambda p, x: flash.forward(p, x, mask=mask)[0], p, x)
        return (
            y,
            y_f,
            plain.backward(p, cache, dy),
            flash.backward(p, cache_f, dy),
            vjp(dy),
            cache_f,
        )

    y, y_f, manual, manual_f, autodiff, cache_f = all_three(p, x)
    np.testing.assert_allclose(y_f, y, rtol=1e-13, atol=1e-14)
    assert _close(manual_f, manual) and _close(manual_f, autodiff)
    assert cache_f[2]["lse"].shape == (3, 2, 5, 1)  # m, heads, T: no T^2 entry
    assert max(a.size for a in jax.tree.leaves(cache_f[2])) < 3 * 2 * 5 * 5  # P's size


def test_flash_scaled_dot_product_layer_matches_finite_differences(x64):
    layer = L.scaled_dot_product_attention(causal=True, flash=True)
    q, k, v = normal(1, (2, 4, 3)), normal(2, (2, 4, 3)), normal(3, (2, 4, 2))
    _assert_report(
        check_layer(layer, (), (q, k, v), dy_key=KEY, tolerance=LAYER_TOL, mask=_padding([4, 2], 4))
    )
