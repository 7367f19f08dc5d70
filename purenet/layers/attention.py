r"""Attention with a hand-written backward: scaled dot-product attention,
multi-head self-attention, position encodings and a pre-layer-norm
transformer block (Vaswani et al. 2017).

=================================  ==============================================
``attention_forward/backward``     the function pair: softmax(q k^T / sqrt(d_k)) v
``scaled_dot_product_attention``   the pair as a layer on ``(q, k, v[, mask])``
``multi_head_attention(heads)``    self-attention with ``Wq, Wk, Wv, Wo`` and biases
``position_embedding(max_len)``    a learned table added to the sequence
``sinusoidal_positions()``         Vaswani et al.'s fixed sines and cosines added
``transformer_block(heads, ...)``  pre-LN: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``
``masked(layer)``, ``drop_mask()``  carry a padding mask past layers that ignore it
=================================  ==============================================

**Layout.** Sequences are batch-major and channels-last, ``(m, T, d)``, as
everywhere in purenet. Inside attention the heads get their own axis after
time, ``(m, T, heads, d_head)``: the ``(B, T, N, H)`` layout of
``jax.nn.dot_product_attention``. A split into heads is then a reshape of the
last axis (head ``h`` owns features ``h * d_head : (h + 1) * d_head``, as in
``torch.nn.MultiheadAttention``) and no transpose is ever materialised: every
product is one ``einsum`` that names its axes.

**Forward**, per example and head, for queries ``q (Tq, d_k)``, keys
``k (Tk, d_k)``, values ``v (Tk, d_v)`` and a boolean ``allowed (Tq, Tk)``
(True where query ``i`` may look at key ``j``)::

    S = q k^T / sqrt(d_k)                                   logits (Tq, Tk)
    P_ij = allowed_ij exp(S_ij - M_i) / sum_j' allowed_ij' exp(S_ij' - M_i)
    out = P v                                               (Tq, d_v)

with ``M_i = max over allowed j of S_ij``. Subtracting the row maximum makes
every exponent ``<= 0`` (logits of ``1e4`` give exact probabilities, never
``inf / inf``). A masked entry never enters the exponential (its exponent is
set to ``-inf``, ``exp(-inf) = 0``), so it gets exactly ``P_ij = 0``. A row
with *no* allowed key (a query at a left-padded position under a causal
mask, an all-padding example) has ``sum = 0``: we define its probabilities
and its output as zeros (``sum`` is replaced by 1), in the forward and in the
backward. PyTorch returns NaN for such rows; the convention here keeps a
padded batch finite and differentiable.

**Backward**, given ``dout = dJ/dout``::

    dv = P^T dout                         dP = dout v^T
    dS = P * (dP - sum_j (dP * P)_j)      (the softmax's vector-Jacobian product)
    dq = dS k / sqrt(d_k)                 dk = dS^T q / sqrt(d_k)

The softmax row is ``P_j = e_j / Z``; its Jacobian is
``dP_j / dS_l = P_j (delta_jl - P_l)``, so
``dS_l = sum_j dP_j P_j (delta_jl - P_l) = P_l (dP_l - sum_j dP_j P_j)``.
Masking needs no term of its own: a masked entry has ``P_ij = 0``, so
``dS_ij = 0`` (its logit did not matter), and a fully masked row has
``P = 0`` and therefore ``dS = 0``. The row sum is computed without the
``(Tq, Tk)`` product: ``sum_j dP_ij P_ij = sum_j (dout_i . v_j) P_ij =
dout_i . out_i``, one dot product per query over ``d_v`` (the ``D = rowsum(dO
* O)`` of FlashAttention, Dao et al. 2022).

**Memory of the cache.** The backward needs the probabilities: a
multi-head layer on ``(m, T, d)`` keeps ``P`` of ``m * heads * T^2`` entries
(8 MiB in float32 for ``m = 32, heads = 4, T = 128``), plus ``x``, the
projected ``q, k, v`` and the attention output: ``5 m T d`` entries. The
``T^2`` term is the one that grows.

**Padding masks.** A batch of sequences of different lengths travels as a
pair ``x = (x, mask)`` with ``mask`` of shape ``(m, T)`` and dtype ``bool``,
True at the *valid* positions (Flax's convention; PyTorch's
``key_padding_mask`` is the complement, True at padding: pass
``~key_padding_mask``). A padded key is never attended to. Outputs at padded
*query* positions are computed like any other (from the valid keys) and
should be ignored by the loss: give those steps the label
:data:`purenet.losses.IGNORE_LABEL` in
:data:`purenet.losses.sequence_softmax_cross_entropy`. The attention layers
take ``x`` or ``(x, mask)``; :func:`transformer_block` returns ``(y, mask)``
for ``(x, mask)``, so blocks stack under ``serial``; :func:`masked` runs any
other layer (embedding, positions, dense) on the ``x`` of the pair and passes
the mask along, and :func:`drop_mask` ends the pair before the loss. The
mask is not differentiable: the backward hands back zeros of its shape (in
the input's float dtype) as its gradient, as :func:`purenet.layers.embedding`
does for ids. (:func:`purenet.train.make_train` slices ``x`` as one array;
train on padded batches with a loop of :func:`purenet.backprop` calls, or
use equal lengths.)

Nothing here calls ``jax.grad``, ``jax.vjp`` or ``jax.jvp``; the tests
compare every backward with ``jax.vjp`` and with central differences.

References: Vaswani et al. (2017), "Attention is all you need" (scaled
dot-product attention, multi-head attention, sinusoidal positions); Xiong et
al. (2020), "On layer normalization in the transformer architecture" (the
pre-LN block, as in GPT-2); Hendrycks & Gimpel (2016) (GELU); Dao et al.
(2022), "FlashAttention" (the row-sum identity of the backward).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet import _checks
from purenet.layers.core import (
    Layer,
    as_shape,
    check_rank,
    dense,
    gelu,
    gelu_tanh,
    relu,
    residual,
    serial,
)
from purenet.layers.normalization import layer_norm
from purenet.params import get_initializer, normal

# ------------------------------------------------------------------ masks


def _check_mask_dtype(mask) -> None:
    _checks.array("mask", mask)
    if jnp.dtype(mask.dtype) != jnp.dtype(bool):
        _checks.fail("mask", "a boolean mask (True where a position may be attended to)",
                     f"dtype {mask.dtype}")


def _allowed(mask, causal: bool, m: int, heads: int, Tq: int, Tk: int):
    """The boolean ``(m or 1, heads or 1, Tq, Tk)`` mask of allowed (query, key)
    pairs, or ``None`` when every pair is allowed."""
    allowed = None
    if mask is not None:
        _check_mask_dtype(mask)
        full = (m, heads, Tq, Tk)
        try:
            shape = np.broadcast_shapes(tuple(mask.shape), full)
        except ValueError:
            shape = None
        if shape != full:
            _checks.fail("mask", f"a boolean mask broadcastable to (m, heads, Tq, Tk) = {full}",
                         f"shape {tuple(mask.shape)}")
        allowed = mask
    if causal:
        # Query i sees keys j <= i (top-left aligned when Tq != Tk, as torch's is_causal).
        tril = np.arange(Tq)[:, None] >= np.arange(Tk)[None, :]
        allowed = tril if allowed is None else jnp.logical_and(allowed, tril)
    return allowed


def _softmax_rows(S, allowed):
    """``softmax(S)`` over the last axis restricted to ``allowed`` entries;
    zeros for a row with none (module docstring)."""
    if allowed is None:
        S_max = lax.stop_gradient(jnp.max(S, axis=-1, keepdims=True))
        E = jnp.exp(S - S_max)
        return E / jnp.sum(E, axis=-1, keepdims=True)
    minus_inf = jnp.asarray(-jnp.inf, S.dtype)
    S_max = jnp.max(jnp.where(allowed, S, minus_inf), axis=-1, keepdims=True)
    S_max = lax.stop_gradient(jnp.where(jnp.isfinite(S_max), S_max, 0))  # no allowed key: 0
    # The exponent of a masked entry is -inf, never S - M: a masked logit above
    # the allowed maximum would overflow exp (and jax.vjp, the tests' referee,
    # would see inf * 0 through the unselected branch of a later where).
    E = jnp.exp(jnp.where(allowed, S - S_max, minus_inf))
    Z = jnp.sum(E, axis=-1, keepdims=True)
    return E / jnp.where(Z > 0, Z, 1)


# ------------------------------------------------------- the function pair


def attention_forward(q, k, v, mask=None, *, causal: bool = False):
    """Scaled dot-product attention, ``softmax(q k^T / sqrt(d_k)) v`` with masks.

    Args:
      q: queries ``(m, Tq, heads, d_k)``.
      k: keys ``(m, Tk, heads, d_k)``.
      v: values ``(m, Tk, heads, d_v)`` (``jax.nn.dot_product_attention``'s layout).
      mask: ``None`` or a boolean array broadcastable to ``(m, heads, Tq, Tk)``,
        True where query ``i`` may attend to key ``j``; a padding mask of valid
        keys ``(m, Tk)`` is ``mask[:, None, None, :]``.
      causal: also forbid keys after the query (``j > i``).

    Returns:
      ``(out, cache)``: ``out`` of shape ``(m, Tq, heads, d_v)``; ``cache`` for
      :func:`attention_backward`, holding the probabilities ``P`` of shape
      ``(m, heads, Tq, Tk)``. Rows with no allowed key give zeros.
    """
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_rank(a, 4, "attention_forward", f"(m, T, heads, d) for {name}")
    m, Tq, heads, d_k = q.shape
    Tk = k.shape[1]
    if k.shape != (m, Tk, heads, d_k) or v.shape[:3] != (m, Tk, heads):
        _checks.fail("k", f"keys (m, Tk, heads, {d_k}) and values (m, Tk, heads, d_v) matching "
                     f"q {tuple(q.shape)}", f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    allowed = _allowed(mask, causal, m, heads, Tq, Tk)
    q_scaled = q * (1.0 / math.sqrt(d_k))  # scale the (T, d) queries, not the (T, T) logits
    S = jnp.einsum("mqhd,mkhd->mhqk", q_scaled, k)
    P = _softmax_rows(S, allowed)
    out = jnp.einsum("mhqk,mkhd->mqhd", P, v)
    return out, (q_scaled, k, v, P, out)


def attention_backward(cache, dout):
    """The vector-Jacobian product of :func:`attention_forward` (module docstring).

    Args:
      cache: from :func:`attention_forward`.
      dout: ``dJ/dout``, shape ``(m, Tq, heads, d_v)``.

    Returns:
      ``(dq, dk, dv)`` with the shapes of ``q``, ``k``, ``v``.
    """
    q_scaled, k, v, P, out = cache
    scale = 1.0 / math.sqrt(k.shape[-1])
    dv = jnp.einsum("mhqk,mqhd->mkhd", P, dout)
    dP = jnp.einsum("mqhd,mkhd->mhqk", dout, v)
    row = jnp.einsum("mqhd,mqhd->mhq", dout, out)[..., None]  # sum_j dP_ij P_ij
    dS = P * (dP - row)
    dq = jnp.einsum("mhqk,mkhd->mqhd", dS, k) * scale
    dk = jnp.einsum("mhqk,mqhd->mkhd", dS, q_scaled)
    return dq, dk, dv


# ------------------------------------------------------------- pair helpers


def _split_pair(x, layer: str):
    """``x`` or ``(x, mask)`` -> ``(x, mask or None)``; the mask must be ``(m, T)``."""
    if not isinstance(x, tuple | list):
        return x, None
    if len(x) != 2:
        _checks.fail("x", f"a batch x or a pair (x, mask) for {layer}",
                     f"a {type(x).__name__} of length {len(x)}")
    x, mask = x
    check_rank(x, 3, layer, "(m, T, d)")
    _check_mask_dtype(mask)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        _checks.fail("mask", f"a padding mask of shape (m, T) = {tuple(x.shape[:2])} for {layer}",
                     f"shape {tuple(mask.shape)}")
    return x, mask


def _is_pair_shape(in_shape) -> bool:
    return isinstance(in_shape, tuple | list) and bool(in_shape) and isinstance(
        in_shape[0], tuple | list)


def _mask_grad(mask, dtype):
    return jnp.zeros(mask.shape, dtype)


def masked(layer: Layer) -> Layer:
    """``layer`` on the ``x`` of a pair ``(x, mask)``, the mask passed along:
    ``(x, mask) -> (layer(x), mask)``; a plain ``x`` goes straight to ``layer``.

    For the layers of a padded model that act position by position and need
    no mask (embedding, positions, dense, layer norm). Backward: ``layer``'s
    backward on the first part of ``dy``; the mask's gradient is zeros.
    """
    if not isinstance(layer, Layer):
        _checks.fail_type("layer", "a purenet Layer", type(layer).__name__)

    def init(key, in_shape, dtype=jnp.float32):
        if not _is_pair_shape(in_shape):
            return layer.init(key, in_shape, dtype)
        x_shape, mask_shape = in_shape
        out, params, state = layer.init(key, x_shape, dtype)
        return (out, as_shape(mask_shape, "in_shape[1]")), params, state

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(x, tuple | list):
            y, cache = layer.forward(params, x, state=state, train=train, key=key)
            return y, (cache, None)
        if len(x) != 2:
            _checks.fail("x", "a batch x or a pair (x, mask) for masked",
                         f"a {type(x).__name__} of length {len(x)}")
        x, mask = x
        _check_mask_dtype(mask)
        if tuple(mask.shape) != tuple(jnp.shape(x)[:2]):
            _checks.fail("mask", f"a padding mask of shape (m, T) = {tuple(jnp.shape(x)[:2])}",
                         f"shape {tuple(mask.shape)}")
        y, cache = layer.forward(params, x, state=state, train=train, key=key)
        return (y, mask), (cache, mask)

    def backward(params, cache, dy):
        cache, mask = cache
        if mask is None:
            return layer.backward(params, cache, dy)
        grads, dx = layer.backward(params, cache, dy[0])
        return grads, (dx, _mask_grad(mask, jax.tree.leaves(dx)[0].dtype))

    return Layer(init, forward, backward, layer.update_state)


def drop_mask() -> Layer:
    """``(x, mask) -> x`` (a plain ``x`` passes unchanged): ends a padded pair
    before the output head or the loss. Backward: ``(dy, zeros of the mask)``."""

    def init(key, in_shape, dtype=jnp.float32):
        return (tuple(in_shape[0]) if _is_pair_shape(in_shape) else in_shape), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(x, tuple | list):
            return x, None
        if len(x) != 2:
            _checks.fail("x", "a pair (x, mask) for drop_mask",
                         f"a {type(x).__name__} of length {len(x)}")
        return x[0], x[1]

    def backward(params, cache, dy):
        return (), dy if cache is None else (dy, _mask_grad(cache, dy.dtype))

    return Layer(init, forward, backward)


# ------------------------------------------------- scaled dot-product layer


def scaled_dot_product_attention(causal: bool = False) -> Layer:
    """:func:`attention_forward` as a parameter-free layer on a tuple input.

    ``x = (q, k, v)`` or ``(q, k, v, mask)``: ``q (m, Tq, d_k)``,
    ``k (m, Tk, d_k)``, ``v (m, Tk, d_v)`` (one head), or with a heads axis
    ``(m, T, heads, d)``; ``mask`` a boolean ``(m, Tk)`` of valid keys.
    Output ``(m, Tq, d_v)`` (or ``(m, Tq, heads, d_v)``). Backward:
    :func:`attention_backward`; ``dx`` is ``(dq, dk, dv)`` (and zeros for the mask).

    Args:
      causal: forbid query ``i`` to attend to keys ``j > i``.
    """
    if not isinstance(causal, bool):
        _checks.fail_type("causal", "a bool", type(causal).__name__)

    def init(key, in_shape, dtype=jnp.float32):
        if not isinstance(in_shape, tuple | list) or len(in_shape) not in (3, 4):
            _checks.fail("in_shape", "the shapes of (q, k, v) or (q, k, v, mask) for "
                         "scaled_dot_product_attention", repr(in_shape))
        q, k, v = (as_shape(s, f"in_shape[{i}]") for i, s in enumerate(in_shape[:3]))
        return q[:-1] + (v[-1],), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(x, tuple | list) or len(x) not in (3, 4):
            _checks.fail("x", "a tuple (q, k, v) or (q, k, v, mask) for "
                         "scaled_dot_product_attention", type(x).__name__)
        q, k, v = x[:3]
        mask = x[3] if len(x) == 4 else None
        one_head = jnp.ndim(q) == 3
        if one_head:
            q, k, v = (a[:, :, None, :] if jnp.ndim(a) == 3 else a for a in (q, k, v))
        if mask is not None:
            _check_mask_dtype(mask)
            if tuple(mask.shape) != (k.shape[0], k.shape[1]):
                _checks.fail("mask", f"a padding mask of valid keys of shape (m, Tk) = "
                             f"{(k.shape[0], k.shape[1])}", f"shape {tuple(mask.shape)}")
            mask = mask[:, None, None, :]
        out, cache = attention_forward(q, k, v, mask, causal=causal)
        return (out[:, :, 0] if one_head else out), (cache, one_head, x[3] if mask is not None
                                                    else None)

    def backward(params, cache, dy):
        cache, one_head, mask = cache
        grads = attention_backward(cache, dy[:, :, None] if one_head else dy)
        if one_head:
            grads = tuple(g[:, :, 0] for g in grads)
        if mask is not None:
            grads = grads + (_mask_grad(mask, dy.dtype),)
        return (), grads

    return Layer(init, forward, backward)


# -------------------------------------------------- multi-head self-attention


def _sequence_shape(in_shape, layer: str):
    shape = as_shape(in_shape[0] if _is_pair_shape(in_shape) else in_shape)
    if len(shape) != 2:
        _checks.fail("in_shape", f"a sequence shape (T, d) for {layer}", repr(in_shape))
    return shape


def _check_heads(heads: int, d: int) -> int:
    if d % heads:
        _checks.fail("heads", f"a number of heads that divides the model width d = {d}",
                     f"heads = {heads}")
    return d // heads


def multi_head_attention(heads: int, *, causal: bool = False, W_init="xavier_uniform") -> Layer:
    """Multi-head self-attention (Vaswani et al. 2017, section 3.2.2) on ``(m, T, d)``.

    ::

        q = x Wq + bq,   k = x Wk + bk,   v = x Wv + bv        (m, T, d) each
        split the last axis into heads: (m, T, heads, d / heads)
        o = attention(q, k, v) per head, heads joined back     (m, T, d)
        y = o Wo + bo

    ``x`` may be a pair ``(x, mask)`` with a boolean padding mask ``(m, T)``
    of valid positions (module docstring); the output is ``y`` alone.

    **Parameters** ``{"Wq", "Wk", "Wv", "Wo": (d, d), "bq", "bk", "bv", "bo": (d,)}``,
    rows in, columns out (``y = x W``, as :func:`purenet.layers.dense`); head
    ``h`` owns columns ``h * d_head : (h + 1) * d_head`` of ``Wq, Wk, Wv`` and
    the same rows of ``Wo``. ``torch.nn.MultiheadAttention(d, heads,
    batch_first=True)`` stores the three input projections stacked and
    transposed; its weights load as::

        Wq, Wk, Wv = (w.T for w in in_proj_weight.chunk(3, dim=0))   # each (d, d)
        bq, bk, bv = in_proj_bias.chunk(3)
        Wo, bo = out_proj.weight.T, out_proj.bias

    and then ``y`` equals torch's first output for ``key = value = query = x``
    and ``key_padding_mask = ~mask`` (except rows with no valid key: zeros
    here, NaN there). Initialisation: Glorot uniform for each ``(d, d)``
    matrix (torch draws it on the stacked ``(3d, d)`` matrix, bounds smaller by
    ``sqrt(2)``), zero biases (as torch).

    The key bias ``bk`` shifts every logit of a query row by the same
    ``q_i . bk``, which the softmax cancels: it changes nothing and its
    gradient is exactly zero (kept for torch's layout).

    Backward: ``dense``'s for ``Wo`` and for the three projections, which are
    computed as one ``(d, 3d)`` product ``x [Wq Wk Wv]`` so the backward's
    ``dx = dqkv [Wq Wk Wv]^T`` is one product too; :func:`attention_backward`
    in between. Cache: ``P`` of ``m * heads * T^2`` entries and ``5 m T d``.

    Args:
      heads: number of heads; must divide the width ``d`` of the input.
      causal: each position attends only to itself and earlier positions.
      W_init: initialiser of the four ``(d, d)`` matrices (name or function).
    """
    heads = _checks.positive_int("heads", heads)
    if not isinstance(causal, bool):
        _checks.fail_type("causal", "a bool", type(causal).__name__)
    W_init = get_initializer(W_init)
    names = ("q", "k", "v", "o")

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "multi_head_attention")
        _check_heads(heads, d)
        keys = jax.random.split(key, 4)
        params = {}
        for name, k in zip(names, keys, strict=True):
            params[f"W{name}"] = W_init(k, (d, d), dtype)
            params[f"b{name}"] = jnp.zeros((d,), dtype)
        return (T, d), params, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        x, mask = _split_pair(x, "multi_head_attention")
        check_rank(x, 3, "multi_head_attention", "(m, T, d)")
        d = params["Wq"].shape[0]
        if x.shape[-1] != d:
            _checks.fail("x", f"a batch of shape (m, T, {d}) for multi_head_attention",
                         f"shape {tuple(x.shape)}")
        d_head = _check_heads(heads, d)
        m, T, _ = x.shape
        W = jnp.concatenate([params["Wq"], params["Wk"], params["Wv"]], axis=1)
        b = jnp.concatenate([params["bq"], params["bk"], params["bv"]])
        qkv = (x @ W + b).reshape(m, T, 3, heads, d_head)
        padding = None if mask is None else mask[:, None, None, :]
        o, attention = attention_forward(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], padding,
                                         causal=causal)
        o = o.reshape(m, T, d)
        y = o @ params["Wo"] + params["bo"]
        return y, (x, o, attention, mask)

    def backward(params, cache, dy):
        x, o, attention, mask = cache
        m, T, d = x.shape
        do = (dy @ params["Wo"].T).reshape(m, T, heads, d // heads)
        dq, dk, dv = attention_backward(attention, do)
        dqkv = jnp.stack([dq, dk, dv], axis=2).reshape(m, T, 3 * d)
        W = jnp.concatenate([params["Wq"], params["Wk"], params["Wv"]], axis=1)
        dW = jnp.einsum("mti,mtj->ij", x, dqkv)
        db = jnp.sum(dqkv, axis=(0, 1))
        dx = dqkv @ W.T
        grads = {
            "Wo": jnp.einsum("mti,mtj->ij", o, dy),
            "bo": jnp.sum(dy, axis=(0, 1)),
        }
        for i, name in enumerate(names[:3]):
            grads[f"W{name}"] = dW[:, i * d : (i + 1) * d]
            grads[f"b{name}"] = db[i * d : (i + 1) * d]
        # bk adds q_i . bk to every logit of query row i: softmax does not see
        # it, so its gradient is exactly zero (the sum above is rounding noise).
        grads["bk"] = jnp.zeros_like(params["bk"])
        grads = {key: grads[key] for key in params}  # params' key order
        return grads, (dx if mask is None else (dx, _mask_grad(mask, dx.dtype)))

    return Layer(init, forward, backward)


# --------------------------------------------------------- position encodings


def _check_positions(x, max_len: int | None, layer: str):
    check_rank(x, 3, layer, "(m, T, d)")
    if max_len is not None and x.shape[1] > max_len:
        _checks.fail("x", f"a sequence of at most max_len = {max_len} positions for {layer}",
                     f"T = {x.shape[1]}")


def position_embedding(max_len: int, W_init=None) -> Layer:
    """A learned position table added to a sequence (GPT, BERT):
    ``y[:, t] = x[:, t] + W[t]`` for ``t < T <= max_len``.

    Params ``{"W": (max_len, d)}``, initialised ``N(0, 0.02^2)`` (GPT-2) unless
    ``W_init`` is given. Backward: ``dx = dy``; ``dW[t] = sum over the batch of
    dy[:, t]`` for ``t < T``, zero for the rows a shorter sequence did not use.
    A sequence longer than ``max_len`` is refused (at ``init`` and in the forward).

    Args:
      max_len: the number of positions in the table.
      W_init: initialiser of the table (name or function).
    """
    max_len = _checks.positive_int("max_len", max_len)
    W_init = normal(0.02) if W_init is None else get_initializer(W_init)

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "position_embedding")
        if T > max_len:
            _checks.fail("in_shape", f"a sequence of at most max_len = {max_len} positions for "
                         "position_embedding", f"T = {T}")
        return tuple(in_shape), {"W": W_init(key, (max_len, d), dtype)}, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        _check_positions(x, max_len, "position_embedding")
        T = x.shape[1]
        return x + params["W"][:T], T

    def backward(params, cache, dy):
        T = cache
        dW = jnp.sum(dy, axis=0)
        return {"W": jnp.pad(dW, ((0, max_len - T), (0, 0)))}, dy

    return Layer(init, forward, backward)


def sinusoids(length: int, dim: int, dtype=jnp.float32):
    """Vaswani et al.'s (2017, section 3.5) position encodings, ``(length, dim)``::

        PE[t, 2i] = sin(t / 10000^(2i / dim)),   PE[t, 2i + 1] = cos(t / 10000^(2i / dim))

    Computed in float64 with NumPy (a constant of the program), then cast.
    """
    length = _checks.positive_int("length", length)
    dim = _checks.positive_int("dim", dim)
    t = np.arange(length, dtype=np.float64)[:, None]
    rate = 10000.0 ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((length, dim))
    table[:, 0::2] = np.sin(t * rate)
    table[:, 1::2] = np.cos(t * rate)[:, : dim // 2]
    return jnp.asarray(table, dtype)


def sinusoidal_positions() -> Layer:
    """``y = x + sinusoids(T, d)`` (:func:`sinusoids`); no params, any length.
    Backward: ``dx = dy``."""

    def init(key, in_shape, dtype=jnp.float32):
        _sequence_shape(in_shape, "sinusoidal_positions")
        return tuple(in_shape), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        _check_positions(x, None, "sinusoidal_positions")
        return x + sinusoids(x.shape[1], x.shape[2], x.dtype), None

    def backward(params, cache, dy):
        return (), dy

    return Layer(init, forward, backward)


# ---------------------------------------------------------- transformer block


_ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": relu}


def _residual_pair(layer: Layer) -> Layer:
    """``residual`` for a branch that reads the mask: ``x + layer(x)`` for a
    plain ``x``, ``(x + layer((x, mask)), mask)`` for a pair. Backward: the skip
    path carries ``dy`` unchanged, ``dx = dy + dx_layer``."""

    def init(key, in_shape, dtype=jnp.float32):
        _, params, state = layer.init(key, in_shape, dtype)
        return in_shape, params, state

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        a, cache = layer.forward(params, x, state=state, train=train, key=key)
        if isinstance(x, tuple | list):
            return (x[0] + a, x[1]), (cache, x[1])
        return x + a, (cache, None)

    def backward(params, cache, dy):
        cache, mask = cache
        if mask is None:
            grads, dx = layer.backward(params, cache, dy)
            return grads, dy + dx
        grads, (dx, dmask) = layer.backward(params, cache, dy[0])
        return grads, (dy[0] + dx, dmask)

    return Layer(init, forward, backward, layer.update_state)


def transformer_block(heads: int, mlp_dim: int, *, causal: bool = False,
                      activation: str = "gelu", eps: float = 1e-5) -> Layer:
    """A pre-layer-norm transformer block (GPT-2; Xiong et al. 2020) on ``(m, T, d)``::

        h = x + MHA(LN1(x))
        y = h + W2 act(W1 LN2(h) + b1) + b2

    built from the combinators: ``serial(residual(serial(layer_norm(),
    multi_head_attention(heads))), residual(serial(layer_norm(),
    dense(mlp_dim), act, dense(d))))``, where the first residual also carries a
    padding mask: ``(x, mask)`` in gives ``(y, mask)`` out, so blocks stack.
    Params: ``((ln1, mha), (ln2, dense1, (), dense2))`` (see
    :func:`multi_head_attention` and :func:`purenet.layers.layer_norm`).

    Args:
      heads: attention heads; must divide ``d``.
      mlp_dim: hidden width of the position-wise MLP (``4 d`` in the papers).
      causal: causal self-attention (a decoder / language model).
      activation: ``"gelu"`` (exact, ``x Phi(x)``, as ``torch.nn.GELU()``) or ``"relu"``.
      eps: the layer norms' epsilon.
    """
    heads = _checks.positive_int("heads", heads)
    mlp_dim = _checks.positive_int("mlp_dim", mlp_dim)
    _checks.one_of("activation", activation, _ACTIVATIONS)
    attention = _residual_pair(serial(masked(layer_norm(eps)),
                                      multi_head_attention(heads, causal=causal)))

    def mlp(d: int) -> Layer:
        # dense(d) needs the model width, known only from the input's shape
        # (at init) or from params (forward, backward): the branch is built per call.
        branch = serial(layer_norm(eps), dense(mlp_dim), _ACTIVATIONS[activation](), dense(d))
        return masked(residual(branch))

    def width(params) -> int:
        return params[1][3]["W"].shape[1]

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "transformer_block")
        _check_heads(heads, d)
        return serial(attention, mlp(d)).init(key, in_shape, dtype)

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        return serial(attention, mlp(width(params))).forward(params, x, state=state,
                                                             train=train, key=key)

    def backward(params, cache, dy):
        return serial(attention, mlp(width(params))).backward(params, cache, dy)

    return Layer(init, forward, backward)
