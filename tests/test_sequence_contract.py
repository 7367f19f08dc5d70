"""The layer contract for every layer of purenet.layers.recurrent and
purenet.layers.attention: the cache crosses jit (jit(backward) of jit(forward)'s
cache equals the eager result), vmap over an extra leading axis, NaN in is NaN
out (forward, and backward from dy), and params that do not fit the model give
one ValueError that names the path and the layer (make_layer's check)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purenet import layers as L

KEY = jax.random.key(0)
M, T, D, H = 2, 5, 4, 3


def _normal(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


X = _normal(1, (M, T, D))
MASK = jnp.arange(T)[None, :] < jnp.array([T, 3])[:, None]  # example 0 is all valid
IDS = jax.random.randint(KEY, (M, T), 0, 7)

# name: (layer, x, mask); x may be a tuple of inputs
CASES = {
    "rnn": (L.rnn(H), X, None),
    "rnn_h0": (L.rnn(H), (X, _normal(2, (M, H))), None),
    "lstm": (L.lstm(H), X, None),
    "lstm_h0_c0": (L.lstm(H), (X, (_normal(2, (M, H)), _normal(3, (M, H)))), None),
    "gru": (L.gru(H), X, None),
    "gru_h0": (L.gru(H), (X, _normal(2, (M, H))), None),
    "last_step": (L.last_step(), X, None),
    "bidirectional": (L.bidirectional(L.gru(H)), X, None),
    "embedding": (L.embedding(7, D), IDS, None),
    "multi_head_attention": (L.multi_head_attention(2), X, MASK),
    "multi_head_attention_causal": (L.multi_head_attention(2, causal=True), X, None),
    "multi_head_attention_flash": (L.multi_head_attention(2, causal=True, flash=True), X, MASK),
    "scaled_dot_product_attention": (
        L.scaled_dot_product_attention(causal=True),
        (X, _normal(2, (M, T, D)), _normal(3, (M, T, 2))),
        MASK,
    ),
    "position_embedding": (L.position_embedding(7), X, None),
    "sinusoidal_positions": (L.sinusoidal_positions(), X, None),
    "transformer_block": (L.transformer_block(D, 2, mlp_dim=8, causal=True), X, MASK),
}


def _in_shape(x):
    return tuple(_in_shape(a) for a in x) if isinstance(x, tuple) else tuple(x.shape[1:])


def _setup(name):
    layer, x, mask = CASES[name]
    out_shape, params, _ = layer.init(KEY, _in_shape(x))
    y = jax.eval_shape(lambda p, x: layer.forward(p, x, mask=mask)[0], params, x)
    assert tuple(y.shape[1:]) == tuple(out_shape)
    dy = _normal(9, y.shape)
    return layer, params, x, mask, dy


def _first_float(tree, fn):
    """``tree`` with ``fn`` applied to its first floating leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    i = next(i for i, a in enumerate(leaves) if jnp.issubdtype(a.dtype, jnp.floating))
    leaves[i] = fn(leaves[i])
    return treedef.unflatten(leaves)


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", CASES)
def test_cache_crosses_jit_vmap_and_nan_propagates(name):
    layer, params, x, mask, dy = _setup(name)
    y, cache = layer.forward(params, x, mask=mask)
    eager = layer.backward(params, cache, dy)
    assert jax.tree.structure(eager[0]) == jax.tree.structure(params)

    # jit(backward) on the cache from jit(forward): the cache is arrays + Static
    forward = jax.jit(lambda p, x, mask: layer.forward(p, x, mask=mask))
    backward = jax.jit(layer.backward)
    y_jit, cache_jit = forward(params, x, mask)
    _assert_trees_close(y_jit, y)
    _assert_trees_close(backward(params, cache_jit, dy), eager)

    # vmap over an extra leading axis (the mask closed over): each slice as alone
    def both(x, dy):
        y, cache = layer.forward(params, x, mask=mask)
        return y, layer.backward(params, cache, dy)

    xs = jax.tree.map(lambda a: jnp.stack([a, a[::-1]]), x)
    dys = jnp.stack([dy, 2 * dy])
    ys, grads = jax.vmap(both)(xs, dys)
    _assert_trees_close(jax.tree.map(lambda a: a[0], (ys, grads)), (y, eager))
    _assert_trees_close(
        jax.tree.map(lambda a: a[1], (ys, grads)), both(jax.tree.map(lambda a: a[::-1], x), 2 * dy)
    )

    # NaN in x (example 0, last step) gives NaN out; NaN in dy gives NaN in dx
    # (or, for integer ids, which have no gradient, in dparams)
    ids = jnp.issubdtype(jax.tree.leaves(x)[0].dtype, jnp.integer)
    if not ids:
        x_nan = _first_float(x, lambda a: a.at[0, -1].set(jnp.nan))
        y_nan, _ = forward(params, x_nan, mask)
        assert bool(jnp.any(jnp.isnan(y_nan))), "forward swallowed a NaN in x"
    dy_nan = dy.reshape(-1).at[0].set(jnp.nan).reshape(dy.shape)
    dparams, dx = backward(params, cache_jit, dy_nan)
    target = dparams if ids else dx
    assert any(bool(jnp.any(jnp.isnan(a))) for a in jax.tree.leaves(target)), (
        "backward swallowed a NaN in dy"
    )


def _drop_key(params):
    """params with one dict key removed (the first dict found, depth first)."""
    if isinstance(params, dict):
        return {k: v for k, v in list(params.items())[1:]}
    if isinstance(params, tuple | list):
        for i, p in enumerate(params):
            dropped = _drop_key(p)
            if dropped is not None:
                return (
                    type(params)(params[:i])
                    + type(params)((dropped,))
                    + type(params)(params[i + 1 :])
                )
    return None


OTHER = {"W": jnp.zeros((3, 3)), "b": jnp.zeros((3,))}  # dense(3)'s params


@pytest.mark.parametrize("name", CASES)
def test_wrong_params_name_the_path_and_the_layer(name):
    layer, params, x, mask, _ = _setup(name)
    wrong = [OTHER if params != OTHER else {"W": jnp.zeros((1,))}]
    dropped = _drop_key(params)
    if dropped is not None:
        wrong.append(dropped)
    if isinstance(params, tuple) and params:
        wrong.append(list(params))
    for bad in wrong:
        with pytest.raises(ValueError, match=r"^params\S* \(.*\): expected") as info:
            layer.forward(bad, x, mask=mask)
        assert layer.name.split("(")[0] in str(info.value)


def test_names_and_children():
    assert L.lstm(32).name == "lstm(32)"
    assert L.multi_head_attention(4).name == "multi_head_attention(4)"
    assert L.embedding(97, 64).name == "embedding(97, 64)"
    assert L.position_embedding(16).name == "position_embedding(16)"
    bi = L.bidirectional(L.gru(6))
    assert [k for k, _ in bi.children] == ["forward", "backward"]
    _, params, _ = bi.init(KEY, (T, D))
    bad = {
        "forward": params["forward"],
        "backward": {**params["backward"], "Wh": jnp.zeros((6, 1))},
    }
    with pytest.raises(
        ValueError,
        match=r"^params\['backward'\]\['Wh'\] "
        r"\(bidirectional\[backward\], gru\(6\)\)",
    ):
        bi.forward(bad, X)
    block = L.transformer_block(D, 2)
    _, params, _ = block.init(KEY, (T, D))
    params = ((params[0][0], {**params[0][1], "Wq": jnp.zeros((D, 1))}), params[1])
    with pytest.raises(ValueError, match=r"multi_head_attention\(2\)"):
        block.forward(params, X)
