r"""Attention with a hand-written backward: scaled dot-product attention,
multi-head self-attention, position encodings and a pre-layer-norm
transformer block (Vaswani et al. 2017).

| piece | what it computes |
| --- | --- |
| `attention_forward/backward` | the function pair: softmax(q k^T / sqrt(d_k)) v |
| `scaled_dot_product_attention` | the pair as a layer on `(q, k, v)` |
| `multi_head_attention(heads)` | self-attention with `Wq, Wk, Wv, Wo` and biases |
| `position_embedding(max_len)` | a learned table added to the sequence |
| `sinusoidal_positions()` | Vaswani et al.'s fixed sines and cosines added |
| `transformer_block(width, heads)` | pre-LN: `x + MHA(LN(x))`, then `x + MLP(LN(x))` |

**Layout.** Sequences are batch-major and channels-last, `(m, T, d)`, as
everywhere in purenet. Inside attention the heads get their own axis after
time, `(m, T, heads, d_head)`: the `(B, T, N, H)` layout of
`jax.nn.dot_product_attention`. A split into heads is then a reshape of the
last axis (head `h` owns features `h * d_head : (h + 1) * d_head`, as in
`torch.nn.MultiheadAttention`) and no transpose is ever materialised: every
product is one `einsum` that names its axes.

**Forward**, per example and head, for queries `q (Tq, d_k)`, keys
`k (Tk, d_k)`, values `v (Tk, d_v)` and a boolean `allowed (Tq, Tk)`
(True where query `i` may look at key `j`):

```text
S = q k^T / sqrt(d_k)                                   logits (Tq, Tk)
P_ij = allowed_ij exp(S_ij - M_i) / sum_j' allowed_ij' exp(S_ij' - M_i)
out = P v                                               (Tq, d_v)
```

with `M_i = max over allowed j of S_ij`. Subtracting the row maximum makes
every exponent `<= 0` (logits of `1e4` give exact probabilities, never
`inf / inf`). A masked entry never enters the exponential (its exponent is
set to `-inf`, `exp(-inf) = 0`), so it gets exactly `P_ij = 0`. A row
with *no* allowed key (a query at a left-padded position under a causal
mask, an all-padding example) has `sum = 0`: we define its probabilities
and its output as zeros (`sum` is replaced by 1), in the forward and in the
backward. PyTorch returns NaN for such rows; the convention here keeps a
padded batch finite and differentiable.

**Backward**, given `dout = dJ/dout`:

```text
dv = P^T dout                         dP = dout v^T
dS = P * (dP - sum_j (dP * P)_j)      (the softmax's vector-Jacobian product)
dq = dS k / sqrt(d_k)                 dk = dS^T q / sqrt(d_k)
```

The softmax row is `P_j = e_j / Z`; its Jacobian is
`dP_j / dS_l = P_j (delta_jl - P_l)`, so
`dS_l = sum_j dP_j P_j (delta_jl - P_l) = P_l (dP_l - sum_j dP_j P_j)`.
Masking needs no term of its own: a masked entry has `P_ij = 0`, so
`dS_ij = 0` (its logit did not matter), and a fully masked row has
`P = 0` and therefore `dS = 0`. The row sum is computed without the
`(Tq, Tk)` product: `sum_j dP_ij P_ij = sum_j (dout_i . v_j) P_ij =
dout_i . out_i`, one dot product per query over `d_v` (the `D = rowsum(dO
* O)` of FlashAttention, Dao et al. 2022).

**Memory of the cache.** The backward needs the probabilities: a
multi-head layer on `(m, T, d)` keeps `P` of `m * heads * T^2` entries
(8 MiB in float32 for `m = 32, heads = 4, T = 128`), plus `x`, the
projected `q, k, v` and the attention output: `5 m T d` entries. The
`T^2` term is the one that grows. With `flash=True` the cache keeps each
row's log-sum-exp instead (`m * heads * T` entries) and the backward
recomputes `P = exp(S - lse)` from `q` and `k` (Dao et al. 2022, algorithm 2);
`benchmarks/attention_memory.py` measures both.

**Padding masks.** A batch of sequences of different lengths comes with a
padding mask, the keyword `mask` of every layer's forward
(`forward(params, x, mask=mask)`), a bool array of shape `(m, T)`, True at
the *valid* positions (Flax's convention; PyTorch's `key_padding_mask` is the
complement, True at padding: pass `~key_padding_mask`). A padded key is never
attended to. Outputs at padded *query* positions are computed like any other
(from the valid keys) and should be ignored by the loss: give those steps the
label `purenet.losses.IGNORE_LABEL` in
`purenet.losses.sequence_softmax_cross_entropy`. The combinators pass `mask`
on to every layer; layers that do not use it (embedding, positions, dense,
layer norm) ignore it. The mask is not differentiated: it is context, like
`key` and `train`, not part of `x`.

Nothing here calls `jax.grad`, `jax.vjp` or `jax.jvp`; the tests
compare every backward with `jax.vjp` and with central differences.

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
from purenet.layers import per_example_rules as _rules
from purenet.layers.checking import within
from purenet.layers.core import (
    Layer,
    Static,
    as_shape,
    call_forward,
    check_rank,
    dense,
    gelu,
    gelu_tanh,
    make_layer,
    relu,
    residual,
    serial,
)
from purenet.layers.dropout import dropout as dropout_layer
from purenet.layers.normalization import layer_norm
from purenet.params import get_initializer, normal

# ------------------------------------------------------------------ masks


def _check_mask_dtype(mask) -> None:
    _checks.array("mask", mask)
    if jnp.dtype(mask.dtype) != jnp.dtype(bool):
        _checks.fail(
            "mask",
            "a boolean mask (True where a position may be attended to)",
            f"dtype {mask.dtype}",
        )


def _allowed(mask, causal: bool, m: int, heads: int, Tq: int, Tk: int):
    """The boolean `(m or 1, heads or 1, Tq, Tk)` mask of allowed (query, key)
    pairs, or `None` when every pair is allowed."""
    allowed = None
    if mask is not None:
        _check_mask_dtype(mask)
        full = (m, heads, Tq, Tk)
        try:
            shape = np.broadcast_shapes(tuple(mask.shape), full)
        except ValueError:
            shape = None
        if shape != full:
            _checks.fail(
                "mask",
                f"a boolean mask broadcastable to (m, heads, Tq, Tk) = {full}",
                f"shape {tuple(mask.shape)}",
            )
        allowed = mask
    if causal:
        # Query i sees keys j <= i (top-left aligned when Tq != Tk, as torch's is_causal).
        tril = np.arange(Tq)[:, None] >= np.arange(Tk)[None, :]
        allowed = tril if allowed is None else jnp.logical_and(allowed, tril)
    return allowed


def _masked_softmax(S, allowed):
    """`softmax(S)` over the last axis restricted to `allowed` entries, and each
    row's log-sum-exp over them: `(P, lse)`. A row with no allowed entry gets
    `P = 0` and `lse = 0` (module docstring). The one masked softmax of
    purenet: the attention's forward, its flash variant and the key-value
    cache of [`purenet.models.generate`][] all call it (under `jit`, an unused
    `lse` costs nothing)."""
    minus_inf = jnp.asarray(-jnp.inf, S.dtype)
    # A masked entry's exponent is -inf, never S - M: a masked logit above the
    # allowed maximum would overflow exp (and jax.vjp, the tests' referee,
    # would see inf * 0 through the unselected branch of a later where).
    S_in = S if allowed is None else jnp.where(allowed, S, minus_inf)
    S_max = jnp.max(S_in, axis=-1, keepdims=True)
    S_max = lax.stop_gradient(jnp.where(jnp.isfinite(S_max), S_max, 0))  # no allowed key: 0
    E = jnp.exp(S_in - S_max)
    Z = jnp.sum(E, axis=-1, keepdims=True)
    Z = jnp.where(Z > 0, Z, 1)
    return E / Z, S_max + jnp.log(Z)


# ------------------------------------------------------- the function pair


def _recompute_P(S, lse, allowed):
    """`P = exp(S - lse)` on allowed entries, 0 elsewhere (FlashAttention's
    backward, Dao et al. 2022, algorithm 2)."""
    S_in = S - lse
    if allowed is not None:
        S_in = jnp.where(allowed, S_in, jnp.asarray(-jnp.inf, S.dtype))
    return jnp.exp(S_in)


def attention_forward(q, k, v, mask=None, *, causal: bool = False, flash: bool = False):
    """Scaled dot-product attention, `softmax(q k^T / sqrt(d_k)) v` with masks.

    Args:
      q: queries `(m, Tq, heads, d_k)`.
      k: keys `(m, Tk, heads, d_k)`.
      v: values `(m, Tk, heads, d_v)` (`jax.nn.dot_product_attention`'s layout).
      mask: `None` or a boolean array broadcastable to `(m, heads, Tq, Tk)`,
        True where query `i` may attend to key `j`; a padding mask of valid
        keys `(m, Tk)` is `mask[:, None, None, :]`.
      causal: also forbid keys after the query (`j > i`).
      flash: keep only each row's log-sum-exp, `(m, heads, Tq)`, instead of
        the probabilities, and recompute `P` in the backward (Dao et al.
        2022, "FlashAttention", algorithm 2's backward): a cache of
        `O(m * heads * T)` entries beside `q, k, v, out`, not
        `O(m * heads * T^2)`, for one more `q k^T` product in the backward.
        Same gradients to rounding.

    Returns:
      `(out, cache)`: `out` of shape `(m, Tq, heads, d_v)`; `cache` for
      [`attention_backward`][purenet.layers.attention.attention_backward], holding the probabilities
      `P` of shape `(m, heads, Tq, Tk)` (or, with `flash`, the row log-sum-exps and the
      mask). Rows with no allowed key give zeros.
    """
    for name, a in (("q", q), ("k", k), ("v", v)):
        check_rank(a, 4, "attention_forward", f"(m, T, heads, d) for {name}")
    m, Tq, heads, d_k = q.shape
    Tk = k.shape[1]
    if k.shape != (m, Tk, heads, d_k) or v.shape[:3] != (m, Tk, heads):
        _checks.fail(
            "k",
            f"keys (m, Tk, heads, {d_k}) and values (m, Tk, heads, d_v) matching "
            f"q {tuple(q.shape)}",
            f"k {tuple(k.shape)}, v {tuple(v.shape)}",
        )
    allowed = _allowed(mask, causal, m, heads, Tq, Tk)
    q_scaled = q * (1.0 / math.sqrt(d_k))  # scale the (T, d) queries, not the (T, T) logits
    S = jnp.einsum("mqhd,mkhd->mhqk", q_scaled, k)
    P, lse = _masked_softmax(S, allowed)
    if flash:
        out = jnp.einsum("mhqk,mkhd->mqhd", P, v)
        mask_kept = None if mask is None else jnp.asarray(mask)
        return out, {
            "q": q_scaled,
            "k": k,
            "v": v,
            "lse": lse,
            "out": out,
            "mask": mask_kept,
            "causal": Static(bool(causal)),
        }
    out = jnp.einsum("mhqk,mkhd->mqhd", P, v)
    return out, (q_scaled, k, v, P, out)


def attention_backward(cache, dout):
    """The vector-Jacobian product of
    [`attention_forward`][purenet.layers.attention.attention_forward] (module docstring).

    Args:
      cache: from [`attention_forward`][purenet.layers.attention.attention_forward].
      dout: `dJ/dout`, shape `(m, Tq, heads, d_v)`.

    Returns:
      `(dq, dk, dv)` with the shapes of `q`, `k`, `v`.
    """
    if isinstance(cache, dict):  # flash: recompute P from the row log-sum-exps
        q_scaled, k, v, out = cache["q"], cache["k"], cache["v"], cache["out"]
        m, Tq, heads, _ = q_scaled.shape
        allowed = _allowed(cache["mask"], cache["causal"].value, m, heads, Tq, k.shape[1])
        S = jnp.einsum("mqhd,mkhd->mhqk", q_scaled, k)
        P = _recompute_P(S, cache["lse"], allowed)
    else:
        q_scaled, k, v, P, out = cache
    scale = 1.0 / math.sqrt(k.shape[-1])
    dv = jnp.einsum("mhqk,mqhd->mkhd", P, dout)
    dP = jnp.einsum("mqhd,mkhd->mhqk", dout, v)
    row = jnp.einsum("mqhd,mqhd->mhq", dout, out)[..., None]  # sum_j dP_ij P_ij
    dS = P * (dP - row)
    dq = jnp.einsum("mhqk,mkhd->mqhd", dS, k) * scale
    dk = jnp.einsum("mhqk,mqhd->mkhd", dS, q_scaled)
    return dq, dk, dv


# ------------------------------------------------------------ padding mask


def _check_padding(mask, m: int, T: int, layer: str) -> None:
    """A padding mask: a boolean array of shape `(m, T)`, True at valid positions."""
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        _checks.fail(
            "mask",
            f"a boolean padding mask of shape (m, T) = {(m, T)} for {layer}",
            type(mask).__name__,
        )
    _check_mask_dtype(mask)
    if tuple(mask.shape) != (m, T):
        _checks.fail(
            "mask",
            f"a boolean padding mask of shape (m, T) = {(m, T)} for {layer}",
            f"shape {tuple(mask.shape)}",
        )


# ------------------------------------------------- scaled dot-product layer


def scaled_dot_product_attention(causal: bool = False, *, flash: bool = False) -> Layer:
    """[`attention_forward`][purenet.layers.attention.attention_forward] as a
    parameter-free layer on a tuple input `x = (q, k, v)`.

    `q (m, Tq, d_k)`, `k (m, Tk, d_k)`, `v (m, Tk, d_v)` (one head), or with a
    heads axis `(m, T, heads, d)`. The padding mask is the keyword `mask`, a
    boolean `(m, Tk)` array, True at valid keys. Output `(m, Tq, d_v)` (or
    `(m, Tq, heads, d_v)`). Backward:
    [`attention_backward`][purenet.layers.attention.attention_backward]; `dx`
    is `(dq, dk, dv)`.

    Args:
      causal: forbid query `i` to attend to keys `j > i`.
      flash: keep row log-sum-exps, not `P` (see
        [`attention_forward`][purenet.layers.attention.attention_forward]).
    """
    if not isinstance(causal, bool):
        _checks.fail_type("causal", "a bool", type(causal).__name__)
    if not isinstance(flash, bool):
        _checks.fail_type("flash", "a bool", type(flash).__name__)

    def init(key, in_shape, dtype=jnp.float32):
        if not isinstance(in_shape, tuple | list) or len(in_shape) != 3:
            _checks.fail(
                "in_shape",
                "the shapes of (q, k, v) for scaled_dot_product_attention",
                repr(in_shape),
            )
        q, k, v = (as_shape(s, f"in_shape[{i}]") for i, s in enumerate(in_shape))
        return q[:-1] + (v[-1],), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(x, tuple | list) or len(x) != 3:
            _checks.fail(
                "x",
                "a tuple (q, k, v) for scaled_dot_product_attention "
                "(the padding mask is the keyword mask)",
                type(x).__name__ if not isinstance(x, tuple | list) else f"length {len(x)}",
            )
        q, k, v = x
        one_head = jnp.ndim(q) == 3
        if one_head:
            q, k, v = (a[:, :, None, :] if jnp.ndim(a) == 3 else a for a in (q, k, v))
        if mask is not None:
            _check_padding(mask, k.shape[0], k.shape[1], "scaled_dot_product_attention")
            mask = mask[:, None, None, :]
        out, cache = attention_forward(q, k, v, mask, causal=causal, flash=flash)
        return (out[:, :, 0] if one_head else out), (cache, Static(one_head))

    def backward(params, cache, dy):
        cache, one_head = cache
        one_head = one_head.value
        grads = attention_backward(cache, dy[:, :, None] if one_head else dy)
        if one_head:
            grads = tuple(g[:, :, 0] for g in grads)
        return (), grads

    return make_layer(
        init,
        forward,
        backward,
        name="scaled_dot_product_attention" + ("(causal)" if causal else ""),
    )


# -------------------------------------------------- multi-head self-attention


def _sequence_shape(in_shape, layer: str):
    shape = as_shape(in_shape)
    if len(shape) != 2:
        _checks.fail("in_shape", f"a sequence shape (T, d) for {layer}", repr(in_shape))
    return shape


def _check_heads(heads: int, d: int) -> int:
    if d % heads:
        _checks.fail(
            "heads", f"a number of heads that divides the model width d = {d}", f"heads = {heads}"
        )
    return d // heads


def project_qkv(params, x, heads: int):
    """[`multi_head_attention`][purenet.layers.attention.multi_head_attention]'s
    input projections, split into heads: `q, k, v`, each `(m, T, heads, d / heads)`,
    from `x (m, T, d)`. One `(d, 3d)` product `x [Wq Wk Wv] + [bq bk bv]`.
    The layer's forward and the key-value cache of
    [`purenet.models.generate`][] both project with it."""
    m, T, d = x.shape
    W = jnp.concatenate([params["Wq"], params["Wk"], params["Wv"]], axis=1)
    b = jnp.concatenate([params["bq"], params["bk"], params["bv"]])
    qkv = (x @ W + b).reshape(m, T, 3, heads, d // heads)
    return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


def project_out(params, o):
    """[`multi_head_attention`][purenet.layers.attention.multi_head_attention]'s
    output projection `o Wo + bo` of the heads joined back, `o (m, T, d)`."""
    return o @ params["Wo"] + params["bo"]


def multi_head_attention(
    heads: int, *, causal: bool = False, flash: bool = False, W_init="xavier_uniform"
) -> Layer:
    """Multi-head self-attention (Vaswani et al. 2017, section 3.2.2) on `(m, T, d)`.

    ```text
    q = x Wq + bq,   k = x Wk + bk,   v = x Wv + bv        (m, T, d) each
    split the last axis into heads: (m, T, heads, d / heads)
    o = attention(q, k, v) per head, heads joined back     (m, T, d)
    y = o Wo + bo
    ```

    The padding mask is the keyword `mask`: a boolean `(m, T)` array, True at
    valid positions (module docstring); a padded key is never attended to.

    **Parameters** `{"Wq", "Wk", "Wv", "Wo": (d, d), "bq", "bk", "bv", "bo": (d,)}`,
    rows in, columns out (`y = x W`, as [`purenet.layers.dense`][purenet.layers.core.dense]); head
    `h` owns columns `h * d_head : (h + 1) * d_head` of `Wq, Wk, Wv` and
    the same rows of `Wo`. `torch.nn.MultiheadAttention(d, heads,
    batch_first=True)` stores the three input projections stacked and
    transposed; its weights load as:

    ```python
    Wq, Wk, Wv = (w.T for w in in_proj_weight.chunk(3, dim=0))   # each (d, d)
    bq, bk, bv = in_proj_bias.chunk(3)
    Wo, bo = out_proj.weight.T, out_proj.bias
    ```

    and then `y` equals torch's first output for `key = value = query = x`
    and `key_padding_mask = ~mask` (except rows with no valid key: zeros
    here, NaN there). Initialisation: Glorot uniform for each `(d, d)`
    matrix (torch draws it on the stacked `(3d, d)` matrix, bounds smaller by
    `sqrt(2)`), zero biases (as torch).

    The key bias `bk` shifts every logit of a query row by the same
    `q_i . bk`, which the softmax cancels: it changes nothing and its
    gradient is exactly zero (kept for torch's layout).

    Backward: `dense`'s for `Wo` and for the three projections, which are
    computed as one `(d, 3d)` product `x [Wq Wk Wv]` so the backward's
    `dx = dqkv [Wq Wk Wv]^T` is one product too;
    [`attention_backward`][purenet.layers.attention.attention_backward] in between. Cache: `P` of
    `m * heads * T^2` entries and `5 m T d`.

    Args:
      heads: number of heads; must divide the width `d` of the input.
      causal: each position attends only to itself and earlier positions.
      flash: keep each row's log-sum-exp, `m * heads * T` entries, instead
        of `P` and recompute `P` in the backward (Dao et al. 2022; see
        [`attention_forward`][purenet.layers.attention.attention_forward]).
      W_init: initialiser of the four `(d, d)` matrices (name or function).
    """
    heads = _checks.positive_int("heads", heads)
    if not isinstance(causal, bool):
        _checks.fail_type("causal", "a bool", type(causal).__name__)
    if not isinstance(flash, bool):
        _checks.fail_type("flash", "a bool", type(flash).__name__)
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
        check_rank(x, 3, "multi_head_attention", "(m, T, d)")
        d = params["Wq"].shape[0]
        if x.shape[-1] != d:
            _checks.fail(
                "x",
                f"a batch of shape (m, T, {d}) for multi_head_attention",
                f"shape {tuple(x.shape)}",
            )
        _check_heads(heads, d)
        m, T, _ = x.shape
        if mask is not None:
            _check_padding(mask, m, T, "multi_head_attention")
        q, k, v = project_qkv(params, x, heads)
        padding = None if mask is None else mask[:, None, None, :]
        o, attention = attention_forward(q, k, v, padding, causal=causal, flash=flash)
        o = o.reshape(m, T, d)
        return project_out(params, o), (x, o, attention)

    def backward(params, cache, dy):
        x, o, attention = cache
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
        # it, so its gradient is exactly zero (the sum above is rounding noise);
        # times 0, not zeros, so that a NaN or inf in the sum still shows.
        grads["bk"] = 0.0 * grads["bk"]
        grads = {key: grads[key] for key in params}  # params' key order
        return grads, dx

    # Per example: every cache leaf is the example's own (no statistics shared
    # across the batch), so the batch-of-one backward, vmapped, is exact.
    return make_layer(
        init,
        forward,
        backward,
        name=f"multi_head_attention({heads})",
        per_example=_rules.per_example_from_backward(backward),
    )


# --------------------------------------------------------- position encodings


def _check_positions(x, max_len: int | None, layer: str):
    check_rank(x, 3, layer, "(m, T, d)")
    if max_len is not None and x.shape[1] > max_len:
        _checks.fail(
            "x",
            f"a sequence of at most max_len = {max_len} positions for {layer}",
            f"T = {x.shape[1]}",
        )


def position_embedding(max_len: int, W_init=None) -> Layer:
    """A learned position table added to a sequence (GPT, BERT):
    `y[:, t] = x[:, t] + W[t]` for `t < T <= max_len`.

    Params `{"W": (max_len, d)}`, initialised `N(0, 0.02^2)` (GPT-2) unless
    `W_init` is given. Backward: `dx = dy`; `dW[t] = sum over the batch of
    dy[:, t]` for `t < T`, zero for the rows a shorter sequence did not use.
    A sequence longer than `max_len` is refused (at `init` and in the forward).

    Args:
      max_len: the number of positions in the table.
      W_init: initialiser of the table (name or function).
    """
    max_len = _checks.positive_int("max_len", max_len)
    W_init = normal(0.02) if W_init is None else get_initializer(W_init)

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "position_embedding")
        if T > max_len:
            _checks.fail(
                "in_shape",
                f"a sequence of at most max_len = {max_len} positions for position_embedding",
                f"T = {T}",
            )
        return tuple(in_shape), {"W": W_init(key, (max_len, d), dtype)}, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        _check_positions(x, max_len, "position_embedding")
        T = x.shape[1]
        return x + params["W"][:T], ()

    def backward(params, cache, dy):
        T = dy.shape[1]  # the cache holds nothing: T is dy's shape
        dW = jnp.sum(dy, axis=0)
        return {"W": jnp.pad(dW, ((0, max_len - T), (0, 0)))}, dy

    return make_layer(
        init,
        forward,
        backward,
        name=f"position_embedding({max_len})",
        per_example=_rules.per_example_from_backward(backward),
    )


def sinusoids(length: int, dim: int, dtype=jnp.float32):
    """Vaswani et al.'s (2017, section 3.5) position encodings, `(length, dim)`:

    ```text
    PE[t, 2i] = sin(t / 10000^(2i / dim)),   PE[t, 2i + 1] = cos(t / 10000^(2i / dim))
    ```

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
    """`y = x + sinusoids(T, d)` ([`sinusoids`][purenet.layers.attention.sinusoids]); no params, any
    length.
    Backward: `dx = dy`."""

    def init(key, in_shape, dtype=jnp.float32):
        _sequence_shape(in_shape, "sinusoidal_positions")
        return tuple(in_shape), (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        _check_positions(x, None, "sinusoidal_positions")
        return x + sinusoids(x.shape[1], x.shape[2], x.dtype), ()

    def backward(params, cache, dy):
        return (), dy

    return make_layer(init, forward, backward, name="sinusoidal_positions")


# ---------------------------------------------------------- transformer block


_ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": relu}


def _attention_branch(heads: int, causal: bool, eps: float, dropout, flash: bool) -> Layer:
    """The block's first residual branch: `LN1`, `MHA` (then dropout)."""
    layers = [layer_norm(eps), multi_head_attention(heads, causal=causal, flash=flash)]
    return serial(*layers, *([] if dropout is None else [dropout_layer(dropout)]))


def _mlp_branch(width: int, mlp_dim: int, activation: str, eps: float, dropout) -> Layer:
    """The block's second residual branch: `LN2`, `W1`, act, `W2` (then dropout).
    [`purenet.models.generate`][] runs it, as a `residual`, on the one new
    position of each decode step."""
    layers = [layer_norm(eps), dense(mlp_dim), _ACTIVATIONS[activation](), dense(width)]
    return serial(*layers, *([] if dropout is None else [dropout_layer(dropout)]))


def transformer_block(
    width: int,
    heads: int,
    *,
    mlp_dim: int | None = None,
    causal: bool = False,
    activation: str = "gelu",
    eps: float = 1e-5,
    dropout: float | None = None,
    flash: bool = False,
) -> Layer:
    """A pre-layer-norm transformer block (GPT-2; Xiong et al. 2020) on `(m, T, width)`:

    ```text
    h = x + dropout(MHA(LN1(x)))
    y = h + dropout(W2 act(W1 LN2(h) + b1) + b2)
    ```

    A fixed network built once, from the combinators:
    `serial(residual(serial(layer_norm(), multi_head_attention(heads))),
    residual(serial(layer_norm(), dense(mlp_dim), act, dense(width))))`,
    with a [`dropout`][purenet.layers.dropout.dropout] closing each branch
    when `dropout` is a rate (GPT-2's `resid_pdrop`). The padding mask is the
    keyword `mask` (boolean `(m, T)`, True at valid positions), passed on by
    the combinators to the attention (the other layers ignore it). Params:
    `((ln1, mha), (ln2, dense1, (), dense2))`, or with `dropout`
    `((ln1, mha, ()), (ln2, dense1, (), dense2, ()))` (see
    [`multi_head_attention`][purenet.layers.attention.multi_head_attention]
    and [`layer_norm`][purenet.layers.normalization.layer_norm]).
    [`purenet.models.gpt`][] stacks these blocks.

    Args:
      width: the model width `d` (the last axis of the input).
      heads: attention heads; must divide `width`.
      mlp_dim: hidden width of the position-wise MLP (default `4 * width`, as
        in the papers).
      causal: causal self-attention (a decoder / language model).
      activation: `"gelu"` (exact, `x Phi(x)`, as `torch.nn.GELU()`),
        `"gelu_tanh"` (GPT-2's approximation) or `"relu"`.
      eps: the layer norms' epsilon.
      dropout: `None` (no dropout layers) or the drop probability in `[0, 1)`
        of a dropout at the end of each residual branch (identity in
        evaluation mode; a rate of 0 keeps the layers, and GPT's params layout).
      flash: the attention keeps row log-sum-exps, not the probabilities (see
        [`multi_head_attention`][purenet.layers.attention.multi_head_attention]).
    """
    width = _checks.positive_int("width", width)
    heads = _checks.positive_int("heads", heads)
    mlp_dim = 4 * width if mlp_dim is None else _checks.positive_int("mlp_dim", mlp_dim)
    _checks.one_of("activation", activation, _ACTIVATIONS)
    if dropout is not None:
        dropout = _checks.number_in("dropout", dropout, 0.0, 1.0, high_open=True)
    _check_heads(heads, width)
    net = serial(
        residual(_attention_branch(heads, causal, eps, dropout, flash)),
        residual(_mlp_branch(width, mlp_dim, activation, eps, dropout)),
    )
    name = f"transformer_block({width}, {heads})"

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "transformer_block")
        if d != width:
            _checks.fail("in_shape", f"a sequence shape (T, {width}) for {name}", repr(in_shape))
        return net.init(key, in_shape, dtype)

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        with within(name, net):
            return call_forward(net, params, x, state=state, train=train, key=key, mask=mask)

    def rule(of):
        def apply(params, cache, dy):
            with within(name, net):
                return of(net, params, cache, dy)

        return apply

    return make_layer(
        init,
        forward,
        net.backward,
        net.update_state,
        name=name,
        children=((None, net),),
        per_example=rule(_rules.layer_grads),
        sq_norms=rule(_rules.layer_sq_norms),
    )
