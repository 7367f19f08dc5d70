r"""Reference architectures built from [`purenet.layers`][purenet.layers]: GPT-2.

[`gpt`][purenet.models.gpt] is GPT-2 (Radford et al. 2019) as a purenet
[`Layer`][purenet.layers.core.Layer], every backward written by hand:
token embedding plus learned positions, `depth` pre-layer-norm causal
transformer blocks (Vaswani et al. 2017; Xiong et al. 2020), a final layer
norm and an output head tied to the token embedding (Press & Wolf 2017)
through [`tied`][purenet.layers.sharing.tied]. Its params load from and save
to Hugging Face `GPT2LMHeadModel` state dicts
([`gpt_params_from_hf`][purenet.models.gpt_params_from_hf],
[`gpt_params_to_hf`][purenet.models.gpt_params_to_hf],
[`gpt_config_from_hf`][purenet.models.gpt_config_from_hf]), and
[`generate`][purenet.models.generate] samples from it with a key-value
cache. Loading GPT-2 weights kept on disk and sampling (nothing downloads):

```python
import json, numpy as np, torch
from purenet import models
config = models.gpt_config_from_hf(json.load(open("gpt2/config.json")))
model = models.gpt(**config)
state_dict = {k: v.numpy() for k, v in torch.load("gpt2/pytorch_model.bin").items()}
params = models.gpt_params_from_hf(state_dict, model)
ids = models.generate(model, params, prompt, 20, key=jax.random.key(0), top_k=40)
```

The library pieces of a GPT training run are here too:
[`gpt_decay_mask`][purenet.models.gpt_decay_mask] (weight decay on matrices
only) and [`accumulate_gradients`][purenet.models.accumulate_gradients]
(micro-batches); schedules ([`purenet.schedules.linear_warmup`][],
[`purenet.schedules.cosine_decay`][]) and clipping
([`purenet.clipping.clip_grads_by_global_norm`][]) live in their own modules.

The checks against the reference follow llm.c and nanoGPT (Karpathy 2024,
2022): logits, loss, every gradient and ten AdamW steps against
`GPT2LMHeadModel` in float64 (`tests/test_models.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet import _checks
from purenet import layers as L
from purenet.layers.core import Layer, as_shape, check_params, make_layer, within

__all__ = [
    "accumulate_gradients",
    "generate",
    "gpt",
    "gpt_config",
    "gpt_config_from_hf",
    "gpt_decay_mask",
    "gpt_params_from_hf",
    "gpt_params_to_hf",
]

_ACTIVATIONS = {"gelu_tanh": L.gelu_tanh, "gelu": L.gelu, "relu": L.relu}

# Indices into gpt's params (a tuple, one entry per top-level layer).
_WTE, _WPE, _DROP, _BLOCKS, _LN_F, _HEAD = range(6)


@dataclasses.dataclass(frozen=True)
class _Config:
    vocab_size: int
    context: int
    depth: int
    heads: int
    width: int
    mlp_ratio: int = 4
    tied: bool = True
    activation: str = "gelu_tanh"
    dropout: float = 0.0
    eps: float = 1e-5
    flash: bool = False


# Every Layer made by `gpt`, with its configuration (for `generate` and `gpt_config`).
_CONFIGS: dict[Layer, _Config] = {}


# --------------------------------------------------------------------- the head


def _lm_head(vocab_size: int, transposed: bool) -> Layer:
    """The output projection, no bias. `transposed`: params `{"W": (vocab, d)}`
    (the token embedding's layout, for tying) and `y = h W^T`; else
    `{"W": (d, vocab)}` and `y = h W`. Backward, rows flattened:
    `dW = dy^T h` (or `h^T dy`), `dh = dy W` (or `dy W^T`)."""

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        d = in_shape[-1]
        shape = (vocab_size, d) if transposed else (d, vocab_size)
        return in_shape[:-1] + (vocab_size,), {"W": 0.02 * jax.random.normal(key, shape, dtype)}, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        W = params["W"]
        return (x @ W.T if transposed else x @ W), x

    def backward(params, cache, dy):
        W = params["W"]
        rows_x = cache.reshape(-1, cache.shape[-1])
        rows_dy = dy.reshape(-1, dy.shape[-1])
        if transposed:
            return {"W": rows_dy.T @ rows_x}, dy @ W
        return {"W": rows_x.T @ rows_dy}, dy @ W.T

    return make_layer(init, forward, backward, name="lm_head")


# ---------------------------------------------------------------------- the model


def _block(c: _Config) -> Layer:
    attention = L.residual(
        L.serial(
            L.layer_norm(c.eps),
            L.multi_head_attention(c.heads, causal=True, flash=c.flash),
            L.dropout(c.dropout),
        )
    )
    mlp = L.residual(
        L.serial(
            L.layer_norm(c.eps),
            L.dense(c.mlp_ratio * c.width),
            _ACTIVATIONS[c.activation](),
            L.dense(c.width),
            L.dropout(c.dropout),
        )
    )
    return L.serial(attention, mlp)


def _gpt2_init(key, params, c: _Config):
    """GPT-2's initialisation (as Hugging Face's `GPT2PreTrainedModel`):
    N(0, 0.02^2) for embeddings and matrices, N(0, (0.02 / sqrt(2 depth))^2)
    for the two projections back into the residual stream, zero biases, unit
    layer-norm gains."""
    keys = iter(jax.random.split(key, 4 + 6 * c.depth))
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * c.depth)

    def normal(a, s):
        return s * jax.random.normal(next(keys), a.shape, a.dtype)

    out = list(params)
    out[_WTE] = {"W": normal(params[_WTE]["W"], std)}
    out[_WPE] = {"W": normal(params[_WPE]["W"], std)}
    blocks = []
    for (ln1, mha, d1), (ln2, fc, a, proj, d2) in params[_BLOCKS]:
        mha = {
            k: (
                jnp.zeros_like(v)
                if k.startswith("b")
                else normal(v, proj_std if k == "Wo" else std)
            )
            for k, v in mha.items()
        }
        fc = {"W": normal(fc["W"], std), "b": jnp.zeros_like(fc["b"])}
        proj = {"W": normal(proj["W"], proj_std), "b": jnp.zeros_like(proj["b"])}
        blocks.append(((ln1, mha, d1), (ln2, fc, a, proj, d2)))
    out[_BLOCKS] = tuple(blocks)
    if not c.tied:
        out[_HEAD] = {"W": normal(params[_HEAD]["W"], std)}
    return tuple(out)


def _check_ids(x, c: _Config, name: str = "x"):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        _checks.fail_type(name, "an integer array of token ids (m, T)", type(x).__name__)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        _checks.fail(name, "integer token ids", f"dtype {x.dtype}")
    if jnp.ndim(x) != 2:
        _checks.fail(name, "token ids of shape (m, T)", f"shape {tuple(x.shape)}")
    if x.shape[1] > c.context:
        _checks.fail(
            name, f"at most context = {c.context} positions (T <= context)", f"T = {x.shape[1]}"
        )
    if _checks.is_concrete(x):
        ids = np.asarray(x)
        bad = ids[(ids < 0) | (ids >= c.vocab_size)]
        if bad.size:
            _checks.fail(
                name, f"token ids in [0, vocab_size) = [0, {c.vocab_size})", f"id {bad[0]}"
            )


def gpt(
    vocab_size: int,
    context: int,
    depth: int,
    heads: int,
    width: int,
    *,
    mlp_ratio: int = 4,
    tied: bool = True,
    activation: str = "gelu_tanh",
    dropout: float = 0.0,
    eps: float = 1e-5,
    flash: bool = False,
) -> Layer:
    """GPT-2 (Radford et al. 2019): token ids `(m, T)` to next-token logits `(m, T, vocab_size)`.

    ```
    h = W_te[x] + W_pe[:T]                         token embedding + learned positions
    h = dropout(h)
    for each of the depth blocks (pre-LN, Xiong et al. 2020):
        h = h + dropout(MHA_causal(LN1(h)))        multi_head_attention(heads, causal=True)
        h = h + dropout(W2 act(LN2(h) W1 + b1) + b2)      W1: (width, mlp_ratio * width)
    logits = LN_f(h) @ W_te^T                      tied (Press & Wolf 2017); else LN_f(h) @ W_head
    ```

    Built from the library's layers and combinators:
    `tied(serial(embedding, position_embedding, dropout, serial(*blocks),
    layer_norm, lm_head), [((0, "W"), (5, "W"))])` (see
    [`tied`][purenet.layers.sharing.tied]); its backward is theirs, and the
    tied matrix gets the sum of the embedding's and the head's gradients.

    **Params** (a tuple, Hugging Face names in brackets):

    - `params[0] = {"W": (vocab_size, width)}` the token embedding (`wte`);
    - `params[1] = {"W": (context, width)}` the positions (`wpe`);
    - `params[2] = ()` (the embedding dropout);
    - `params[3]`: a tuple of `depth` blocks, each
      `((ln_1, attn, ()), (ln_2, c_fc, (), c_proj, ()))` with layer norms
      `{"gamma", "beta"}`, `attn` as
      [`multi_head_attention`][purenet.layers.multi_head_attention]
      (`{"Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo"}`) and denses `{"W", "b"}`;
    - `params[4] = {"gamma", "beta"}` the final layer norm (`ln_f`);
    - `params[5] = {"W": None}` when tied (the matrix is `params[0]["W"]`),
      else `{"W": (width, vocab_size)}` (`lm_head.weight.T`; no bias, as GPT-2).

    `init(key, (T,))` with `T <= context` initialises as GPT-2 (Hugging
    Face's `GPT2PreTrainedModel`): N(0, 0.02^2) for embeddings and matrices,
    N(0, (0.02 / sqrt(2 depth))^2) for the attention's `Wo` and the MLP's
    second matrix, zero biases, unit gains.

    Dropout (`train=True` with a `key`) is applied to the embeddings' sum and
    to each residual branch (GPT-2's `embd_pdrop` and `resid_pdrop`);
    dropout of the attention probabilities (`attn_pdrop`) is not offered.

    The configuration is kept with the returned layer:
    [`gpt_config`][purenet.models.gpt_config]`(model)` gives it back and
    [`generate`][purenet.models.generate] reads it.

    Args:
      vocab_size: number of token ids.
      context: the longest sequence (rows of the position table).
      depth: number of transformer blocks.
      heads: attention heads; must divide `width`.
      width: model width (`n_embd`).
      mlp_ratio: hidden width of the MLP as a multiple of `width`.
      tied: share the output head with the token embedding.
      activation: the MLP's nonlinearity: `"gelu_tanh"` (GPT-2's, Hugging
        Face's `gelu_new`), `"gelu"` (exact) or `"relu"`.
      dropout: drop probability in `[0, 1)` (identity in evaluation mode).
      eps: the layer norms' epsilon (`layer_norm_epsilon`).
      flash: the attention's cache keeps each row's log-sum-exp instead of
        the probabilities, `O(m heads T)` instead of `O(m heads T^2)` entries,
        and the backward recomputes them (Dao et al. 2022; see
        [`multi_head_attention`][purenet.layers.multi_head_attention]). Same
        gradients to rounding.

    Returns:
      A [`Layer`][purenet.layers.core.Layer]. Its `forward` refuses, naming
      `x`, token ids that are not integers of shape `(m, T)`, `T > context`
      and (on concrete arrays) ids outside `[0, vocab_size)`.
    """
    c = _Config(
        vocab_size=_checks.positive_int("vocab_size", vocab_size),
        context=_checks.positive_int("context", context),
        depth=_checks.positive_int("depth", depth),
        heads=_checks.positive_int("heads", heads),
        width=_checks.positive_int("width", width),
        mlp_ratio=_checks.positive_int("mlp_ratio", mlp_ratio),
        tied=tied,
        activation=activation,
        dropout=_checks.number_in("dropout", dropout, 0.0, 1.0, high_open=True),
        eps=_checks.positive("eps", eps),
        flash=flash,
    )
    if c.width % c.heads:
        _checks.fail(
            "heads", f"a number of heads that divides width = {c.width}", f"heads = {c.heads}"
        )
    for name, flag in (("tied", tied), ("flash", flash)):
        if not isinstance(flag, bool):
            _checks.fail_type(name, "a bool", type(flag).__name__)
    _checks.one_of("activation", activation, _ACTIVATIONS)

    body = L.serial(
        L.embedding(c.vocab_size, c.width),
        L.position_embedding(c.context),
        L.dropout(c.dropout),
        L.serial(*(_block(c) for _ in range(c.depth))),
        L.layer_norm(c.eps),
        _lm_head(c.vocab_size, transposed=c.tied),
    )
    inner = L.tied(body, [((_WTE, "W"), (_HEAD, "W"))]) if c.tied else body

    def init(key, in_shape, dtype=jnp.float32):
        shape = as_shape(in_shape)
        if len(shape) != 1 or shape[0] > c.context:
            _checks.fail(
                "in_shape", f"(T,) with T <= context = {c.context} for gpt", repr(in_shape)
            )
        k_shapes, k_draw = jax.random.split(key)
        out_shape, params, state = inner.init(k_shapes, shape, dtype)
        return out_shape, _gpt2_init(k_draw, params, c), state

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        _check_ids(x, c)
        with within("gpt", inner):
            return inner.forward(params, x, state=state, train=train, key=key, mask=mask)

    def backward(params, cache, dy):
        with within("gpt", inner):
            return inner.backward(params, cache, dy)

    # Messages name it as it was called: the sizes, then the options that differ
    # from their defaults, e.g. gpt(97, 32, 2, 4, 64, tied=False).
    fields = [repr(getattr(c, f.name)) for f in dataclasses.fields(c)[:5]]
    fields += [
        f"{f.name}={getattr(c, f.name)!r}"
        for f in dataclasses.fields(c)[5:]
        if getattr(c, f.name) != f.default
    ]
    model = make_layer(
        init, forward, backward, name=f"gpt({', '.join(fields)})", children=((None, inner),)
    )
    _CONFIGS[model] = c
    return model


def _config_of(model, name: str = "model") -> _Config:
    try:
        return _CONFIGS[model]
    except (KeyError, TypeError):
        _checks.fail_type(
            name, "a model made by purenet.models.gpt", getattr(model, "name", type(model).__name__)
        )


def gpt_config(model: Layer) -> dict:
    """The arguments [`gpt`][purenet.models.gpt] was called with:
    `gpt(**gpt_config(model))` builds the same architecture.

    Raises:
      TypeError: `model` was not made by `gpt`.
    """
    return dataclasses.asdict(_config_of(model))


# --------------------------------------------------------- Hugging Face weights

_HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # the causal mask, not parameters


def gpt_config_from_hf(config) -> dict:
    """The keyword arguments of [`gpt`][purenet.models.gpt] for a Hugging Face
    `GPT2Config` (or the dict of its `config.json`): `gpt(**gpt_config_from_hf(c))`.

    Maps `vocab_size`, `n_positions` (context), `n_layer`, `n_head`, `n_embd`,
    `n_inner` (`None`: 4 `n_embd`), `activation_function` (`gelu_new` to
    `"gelu_tanh"`), `layer_norm_epsilon`, `tie_word_embeddings` and
    `resid_pdrop` (dropout).

    Raises:
      ValueError: naming the field, for a GPT-2 variant `gpt` does not
        compute (another activation, `n_inner` not a multiple of `n_embd`,
        `scale_attn_weights=False`, `scale_attn_by_inverse_layer_idx=True`).
    """

    def get(field, default=None):
        if isinstance(config, Mapping):
            return config.get(field, default)
        return getattr(config, field, default)

    width = get("n_embd")
    if width is None:
        _checks.fail(
            "config", "a GPT2Config or its dict (with n_embd, n_layer, ...)", type(config).__name__
        )
    inner = get("n_inner") or 4 * width
    if inner % width:
        _checks.fail("config.n_inner", f"a multiple of n_embd = {width}", inner)
    activation = get("activation_function", "gelu_new")
    if activation not in _HF_ACTIVATIONS:
        _checks.fail(
            "config.activation_function", f"one of {sorted(_HF_ACTIVATIONS)}", repr(activation)
        )
    if not get("scale_attn_weights", True):
        _checks.fail("config.scale_attn_weights", "True (logits divided by sqrt(d_head))", False)
    if get("scale_attn_by_inverse_layer_idx", False):
        _checks.fail("config.scale_attn_by_inverse_layer_idx", "False", True)
    return {
        "vocab_size": get("vocab_size"),
        "context": get("n_positions"),
        "depth": get("n_layer"),
        "heads": get("n_head"),
        "width": width,
        "mlp_ratio": inner // width,
        "tied": bool(get("tie_word_embeddings", True)),
        "activation": _HF_ACTIVATIONS[activation],
        "dropout": float(get("resid_pdrop", 0.0) or 0.0),
        "eps": float(get("layer_norm_epsilon", 1e-5)),
    }


def _hf_block_names(i: int) -> dict[str, str]:
    p = f"transformer.h.{i}."
    return {
        k: p + k
        for k in (
            "ln_1.weight",
            "ln_1.bias",
            "attn.c_attn.weight",
            "attn.c_attn.bias",
            "attn.c_proj.weight",
            "attn.c_proj.bias",
            "ln_2.weight",
            "ln_2.bias",
            "mlp.c_fc.weight",
            "mlp.c_fc.bias",
            "mlp.c_proj.weight",
            "mlp.c_proj.bias",
        )
    }


def _hf_shapes(V, P, C, H, depth, tied):
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (P, C)}
    for i in range(depth):
        n = _hf_block_names(i)
        shapes.update(
            {
                n["ln_1.weight"]: (C,),
                n["ln_1.bias"]: (C,),
                n["attn.c_attn.weight"]: (C, 3 * C),
                n["attn.c_attn.bias"]: (3 * C,),
                n["attn.c_proj.weight"]: (C, C),
                n["attn.c_proj.bias"]: (C,),
                n["ln_2.weight"]: (C,),
                n["ln_2.bias"]: (C,),
                n["mlp.c_fc.weight"]: (C, H),
                n["mlp.c_fc.bias"]: (H,),
                n["mlp.c_proj.weight"]: (H, C),
                n["mlp.c_proj.bias"]: (C,),
            }
        )
    shapes["transformer.ln_f.weight"] = (C,)
    shapes["transformer.ln_f.bias"] = (C,)
    shapes["lm_head.weight"] = (V, C)
    return shapes


def _as_numpy(name, value):
    try:
        return np.asarray(value)
    except (TypeError, RuntimeError) as error:
        _checks.fail_type(
            f"state_dict[{name!r}]",
            "an array (NumPy, or a detached CPU tensor)",
            f"{type(value).__name__} ({error})",
        )


def gpt_params_from_hf(state_dict: Mapping, model: Layer | None = None):
    """Params for [`gpt`][purenet.models.gpt] from a Hugging Face `GPT2LMHeadModel` state dict.

    Names and layouts (`C = n_embd`; Hugging Face's `Conv1D` stores
    `(in, out)`, as purenet's `dense`, so nothing is transposed but the
    untied head):

    | Hugging Face | gpt params |
    |---|---|
    | `transformer.wte.weight (V, C)` | `params[0]["W"]` |
    | `transformer.wpe.weight (context, C)` | `params[1]["W"]` |
    | `transformer.h.{i}.ln_1.weight / .bias` | `params[3][i][0][0]["gamma" / "beta"]` |
    | `...attn.c_attn.weight (C, 3C)`, `.bias` | column thirds: `Wq, Wk, Wv`; `bq, bk, bv` |
    | `...attn.c_proj.weight (C, C)`, `.bias` | `params[3][i][0][1]["Wo"]`, `["bo"]` |
    | `...ln_2`, `...mlp.c_fc`, `...mlp.c_proj` | `params[3][i][1][0]`, `[1][1]`, `[1][3]` |
    | `transformer.ln_f.weight / .bias` | `params[4]["gamma" / "beta"]` |
    | `lm_head.weight (V, C)` | tied: checked equal to `wte`; else `params[5]["W"]` (transposed) |

    The causal-mask buffers `attn.bias` / `attn.masked_bias` that older
    versions keep in the state dict are ignored. Arrays keep their dtype
    (float64 ones need `jax_enable_x64`). Nothing is downloaded: pass the
    state dict of weights you have, e.g.
    `{k: v.numpy() for k, v in hf_model.state_dict().items()}`.

    Args:
      state_dict: a mapping from Hugging Face names to arrays.
      model: the `gpt` layer the params are for (recommended): the weights
        are checked against its configuration (vocabulary, context, width,
        depth, MLP width, tying). Without it, the configuration is read
        from the shapes, and the head counts as tied when `lm_head.weight`
        is absent or equal to `wte`.

    Returns:
      The params, a pytree of `jax.Array`s.

    Raises:
      ValueError: naming the tensor, for a missing, unexpected or mis-shaped
        one, an `lm_head.weight` that differs from `wte` for a tied model;
        naming the quantity, for weights of a configuration other than `model`'s.
    """
    if not isinstance(state_dict, Mapping):
        _checks.fail_type(
            "state_dict", "a mapping from Hugging Face names to arrays", type(state_dict).__name__
        )
    c = None if model is None else _config_of(model)
    sd = {k: v for k, v in state_dict.items() if not str(k).endswith(_HF_BUFFERS)}
    for name in ("transformer.wte.weight", "transformer.wpe.weight"):
        if name not in sd:
            _checks.fail("state_dict", f"the tensor {name!r} of a GPT2LMHeadModel", "no such key")
    wte = _as_numpy("transformer.wte.weight", sd["transformer.wte.weight"])
    wpe = _as_numpy("transformer.wpe.weight", sd["transformer.wpe.weight"])
    if wte.ndim != 2 or wpe.ndim != 2:
        _checks.fail(
            "state_dict['transformer.wte.weight']",
            "2-D embedding tables",
            f"shapes {wte.shape}, {wpe.shape}",
        )
    V, C = wte.shape
    P = wpe.shape[0]
    prefixes = {k.split(".")[2] for k in sd if k.startswith("transformer.h.")}
    depth = len(prefixes)
    fc = sd.get("transformer.h.0.mlp.c_fc.weight")
    H = np.shape(fc)[1] if fc is not None and np.ndim(fc) == 2 else 4 * C
    lm = sd.get("lm_head.weight")
    if c is not None:
        ours = {
            "vocab_size (wte rows)": (V, c.vocab_size),
            "context (wpe rows)": (P, c.context),
            "width (n_embd)": (C, c.width),
            "depth (n_layer)": (depth, c.depth),
            "MLP width (n_inner)": (H, c.mlp_ratio * c.width),
        }
        for what, (theirs, mine) in ours.items():
            if theirs != mine:
                _checks.fail(
                    "state_dict",
                    f"weights for {model.name}, with {what} = {mine}",
                    f"weights with {what} = {theirs}",
                )
        tied = c.tied
    else:
        tied = lm is None or (np.shape(lm) == wte.shape and np.array_equal(np.asarray(lm), wte))
    expected = _hf_shapes(V, P, C, H, depth, tied)
    if tied and lm is None:
        expected.pop("lm_head.weight")
    missing = [k for k in expected if k not in sd]
    if missing:
        _checks.fail(
            "state_dict",
            f"every tensor of a GPT2LMHeadModel with n_layer = {depth}",
            f"missing {missing[:5]}" + (" ..." if len(missing) > 5 else ""),
        )
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        _checks.fail(
            "state_dict",
            f"only the tensors of a GPT2LMHeadModel with n_layer = {depth}",
            f"unexpected {unexpected[:5]}" + (" ..." if len(unexpected) > 5 else ""),
        )
    arrays = {}
    for name, shape in expected.items():
        a = _as_numpy(name, sd[name])
        if a.shape != shape:
            _checks.fail(f"state_dict[{name!r}]", f"shape {shape}", f"shape {a.shape}")
        arrays[name] = a
    if tied and "lm_head.weight" in arrays and not np.array_equal(arrays["lm_head.weight"], wte):
        _checks.fail(
            "state_dict['lm_head.weight']",
            "the token embedding transformer.wte.weight itself (a tied head)",
            "a different matrix (pass an untied model: gpt(..., tied=False))",
        )

    def j(a):
        return jnp.asarray(a)

    blocks = []
    for i in range(depth):
        n = {k: arrays[v] for k, v in _hf_block_names(i).items()}
        W, b = n["attn.c_attn.weight"], n["attn.c_attn.bias"]
        attn = {
            "Wq": j(W[:, :C]),
            "Wk": j(W[:, C : 2 * C]),
            "Wv": j(W[:, 2 * C :]),
            "bq": j(b[:C]),
            "bk": j(b[C : 2 * C]),
            "bv": j(b[2 * C :]),
            "Wo": j(n["attn.c_proj.weight"]),
            "bo": j(n["attn.c_proj.bias"]),
        }
        blocks.append(
            (
                ({"gamma": j(n["ln_1.weight"]), "beta": j(n["ln_1.bias"])}, attn, ()),
                (
                    {"gamma": j(n["ln_2.weight"]), "beta": j(n["ln_2.bias"])},
                    {"W": j(n["mlp.c_fc.weight"]), "b": j(n["mlp.c_fc.bias"])},
                    (),
                    {"W": j(n["mlp.c_proj.weight"]), "b": j(n["mlp.c_proj.bias"])},
                    (),
                ),
            )
        )
    head = {"W": None} if tied else {"W": j(arrays["lm_head.weight"].T)}
    return (
        {"W": j(wte)},
        {"W": j(wpe)},
        (),
        tuple(blocks),
        {"gamma": j(arrays["transformer.ln_f.weight"]), "beta": j(arrays["transformer.ln_f.bias"])},
        head,
    )


def gpt_params_to_hf(params) -> dict[str, np.ndarray]:
    """The inverse of [`gpt_params_from_hf`][purenet.models.gpt_params_from_hf]:
    a `GPT2LMHeadModel` state dict of NumPy arrays (with `lm_head.weight`,
    a copy of `wte` when tied), ready for
    `hf_model.load_state_dict({k: torch.from_numpy(v) for k, v in ...})`.

    Raises:
      ValueError: `params` do not have the structure of `gpt`'s params.
    """
    if not (
        isinstance(params, tuple)
        and len(params) == 6
        and isinstance(params[_BLOCKS], tuple)
        and isinstance(params[_HEAD], dict)
        and "W" in params[_HEAD]
    ):
        _checks.fail(
            "params",
            "params of purenet.models.gpt (a tuple of 6 entries)",
            type(params).__name__
            if not isinstance(params, tuple)
            else f"a tuple of length {len(params)}",
        )

    def n(a):
        return np.asarray(a)

    wte = n(params[_WTE]["W"])
    out = {"transformer.wte.weight": wte, "transformer.wpe.weight": n(params[_WPE]["W"])}
    for i, ((ln1, attn, _), (ln2, fc, _, proj, _)) in enumerate(params[_BLOCKS]):
        names = _hf_block_names(i)
        values = {
            "ln_1.weight": ln1["gamma"],
            "ln_1.bias": ln1["beta"],
            "attn.c_attn.weight": np.concatenate(
                [n(attn["Wq"]), n(attn["Wk"]), n(attn["Wv"])], axis=1
            ),
            "attn.c_attn.bias": np.concatenate([n(attn["bq"]), n(attn["bk"]), n(attn["bv"])]),
            "attn.c_proj.weight": attn["Wo"],
            "attn.c_proj.bias": attn["bo"],
            "ln_2.weight": ln2["gamma"],
            "ln_2.bias": ln2["beta"],
            "mlp.c_fc.weight": fc["W"],
            "mlp.c_fc.bias": fc["b"],
            "mlp.c_proj.weight": proj["W"],
            "mlp.c_proj.bias": proj["b"],
        }
        out.update({names[k]: n(v) for k, v in values.items()})
    out["transformer.ln_f.weight"] = n(params[_LN_F]["gamma"])
    out["transformer.ln_f.bias"] = n(params[_LN_F]["beta"])
    head = params[_HEAD]["W"]
    out["lm_head.weight"] = wte.copy() if head is None else n(head).T.copy()
    return out


# ------------------------------------------------------------- training pieces


def gpt_decay_mask(params):
    """Which of `gpt`'s params get weight decay: a pytree of bools like `params`.

    True for the matrices of the attention (`Wq`, `Wk`, `Wv`, `Wo`), of the
    MLP and of an untied head; False for biases, layer-norm gains and
    offsets, and the embeddings (token and position; the tied head is the
    token embedding): minGPT's rule, the mask of GPT-2-style training.
    (nanoGPT decays every 2-D tensor, embeddings included.) A `None` slot of
    the tied head stays `None`.
    """

    def rule(path, leaf):
        top = path[0].idx if isinstance(path[0], jax.tree_util.SequenceKey) else None
        last = path[-1].key if isinstance(path[-1], jax.tree_util.DictKey) else None
        if top in (_WTE, _WPE):
            return False
        return jnp.ndim(leaf) == 2 and last in ("W", "Wq", "Wk", "Wv", "Wo")

    return jax.tree_util.tree_map_with_path(rule, params)


def accumulate_gradients(grad_fn: Callable, micro_batches: int) -> Callable:
    """Gradient accumulation: one batch's cost and gradient as the mean over
    `micro_batches` equal slices of it, computed one slice at a time
    (a `lax.scan`), so that the memory of the forward caches is that of one
    micro-batch.

    For a loss that is a mean over the batch's rows (every purenet loss; for
    `purenet.losses.sequence_softmax_cross_entropy`
    when every micro-batch has the same number of counted steps), the mean of
    the micro-batches' means is the mean over the whole batch, so `k`
    micro-batches give the same update as one batch `k` times larger (to
    rounding). With padding labels spread unevenly the two differ, as in
    nanoGPT's loop.

    Args:
      grad_fn: `(params, x, t, **ctx) -> (J, grads)`, e.g.
        `purenet.backprop(model, loss)`.
      micro_batches: `k`, which must divide the batch size.

    Returns:
      `f(params, x, t, **ctx) -> (J, grads)` with `x`, `t` (arrays or pytrees of
      arrays with the batch on axis 0) of batch size `k * b`. A `key` in `ctx`
      is split into one key per micro-batch.
    """
    k = _checks.positive_int("micro_batches", micro_batches)

    def accumulated(params, x, t, **ctx):
        sizes = {np.shape(a)[0] for a in jax.tree.leaves((x, t))}
        if len(sizes) != 1 or next(iter(sizes)) % k:
            _checks.fail(
                "x",
                f"a batch whose size is a multiple of micro_batches = {k}",
                f"batch sizes {sorted(sizes)}",
            )
        m = next(iter(sizes))

        def split(a):
            return a.reshape(k, m // k, *a.shape[1:])

        xs, ts = jax.tree.map(split, x), jax.tree.map(split, t)
        key = ctx.pop("key", None)
        keys = None if key is None else jax.random.split(key, k)
        zeros = jax.tree.map(jnp.zeros_like, params)

        def body(carry, i):
            J_sum, g_sum = carry
            xi = jax.tree.map(lambda a: a[i], xs)
            ti = jax.tree.map(lambda a: a[i], ts)
            extra = {} if keys is None else {"key": keys[i]}
            J, g = grad_fn(params, xi, ti, **ctx, **extra)
            return (J_sum + J, jax.tree.map(jnp.add, g_sum, g)), None

        J0 = jnp.zeros((), jnp.result_type(*jax.tree.leaves(params)))
        (J, g), _ = lax.scan(body, (J0, zeros), jnp.arange(k))
        return J / k, jax.tree.map(lambda a: a / k, g)

    return accumulated


# ----------------------------------------------------------------- generation


def _attend_one(q, K, V, t):
    """One query per example and head against the cache's first `t + 1`
    positions: `q (m, heads, d)`, `K, V (m, L, heads, d)`. The arithmetic
    of `attention_forward` (queries scaled, row maximum subtracted)."""
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    S = jnp.einsum("mhd,mkhd->mhk", q, K)
    allowed = jnp.arange(K.shape[1]) <= t
    S = jnp.where(allowed, S, -jnp.inf)
    S_max = jnp.max(S, axis=-1, keepdims=True)
    E = jnp.exp(S - S_max)
    P = E / jnp.sum(E, axis=-1, keepdims=True)
    return jnp.einsum("mhk,mkhd->mhd", P, V)


def _decode_step(c: _Config, params, cache, tok, t):
    """Logits for the token `tok (m,)` at position `t`, given the keys and
    values of positions `< t` in `cache`; the cache with position `t`
    written. The layers' own forwards compute the norms and the MLP, on the
    one position `(m, 1, width)`."""
    Ks, Vs = cache
    m = tok.shape[0]
    d_head = c.width // c.heads
    x = (params[_WTE]["W"][tok] + params[_WPE]["W"][t])[:, None, :]  # (m, 1, C)
    ln = L.layer_norm(c.eps)
    act = _ACTIVATIONS[c.activation]()
    new_K, new_V = [], []
    for i, ((ln1, a, _), (ln2, fc, _, proj, _)) in enumerate(params[_BLOCKS]):
        h = ln.forward(ln1, x)[0][:, 0]
        q, k, v = ((h @ a[f"W{n}"] + a[f"b{n}"]).reshape(m, c.heads, d_head) for n in "qkv")
        K = lax.dynamic_update_slice_in_dim(Ks[i], k[:, None], t, axis=1)
        V = lax.dynamic_update_slice_in_dim(Vs[i], v[:, None], t, axis=1)
        new_K.append(K)
        new_V.append(V)
        o = _attend_one(q, K, V, t).reshape(m, c.width)
        x = x + (o @ a["Wo"] + a["bo"])[:, None, :]
        h = ln.forward(ln2, x)[0]
        h = L.dense(fc["W"].shape[1]).forward(fc, h)[0]
        h = act.forward((), h)[0]
        x = x + L.dense(c.width).forward(proj, h)[0]
    h = ln.forward(params[_LN_F], x)[0][:, 0]
    W = params[_WTE]["W"] if c.tied else params[_HEAD]["W"]
    logits = h @ W.T if c.tied else h @ W
    return logits, (jnp.stack(new_K), jnp.stack(new_V))


def _empty_cache(c: _Config, params, m: int, length: int):
    dtype = params[_WTE]["W"].dtype
    shape = (c.depth, m, length, c.heads, c.width // c.heads)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


@functools.partial(jax.jit, static_argnames=("c",))
def _cached_logits(c: _Config, params, ids):
    """Every position's logits `(m, T, vocab)` computed one position at a
    time through the key-value cache (for tests: equal to `gpt`'s forward)."""
    m, T = ids.shape

    def body(cache, t):
        logits, cache = _decode_step(c, params, cache, ids[:, t], t)
        return cache, logits

    _, logits = lax.scan(body, _empty_cache(c, params, m, T), jnp.arange(T))
    return jnp.moveaxis(logits, 0, 1)


def _sample(logits, key, temperature, top_k):
    if top_k == 1:  # greedy: the first id among equal maxima
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k is None:
        return jax.random.categorical(key, logits, axis=-1)
    values, index = lax.top_k(logits, top_k)
    choice = jax.random.categorical(key, values, axis=-1)
    return jnp.take_along_axis(index, choice[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("c", "steps", "top_k"))
def _generate(c: _Config, params, prompt, key, temperature, *, steps: int, top_k):
    m, P = prompt.shape
    total = P + steps
    tokens = jnp.zeros((m, total), prompt.dtype).at[:, :P].set(prompt)

    def body(carry, t):
        tokens, cache = carry
        logits, cache = _decode_step(c, params, cache, tokens[:, t], t)
        sampled = _sample(logits, jax.random.fold_in(key, t), temperature, top_k)
        nxt = jnp.where(t + 1 >= P, sampled.astype(tokens.dtype), tokens[:, t + 1])
        tokens = lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], t + 1, axis=1)
        return (tokens, cache), None

    (tokens, _), _ = lax.scan(
        body, (tokens, _empty_cache(c, params, m, total)), jnp.arange(total - 1)
    )
    return tokens


def generate(
    model: Layer,
    params,
    prompt,
    steps: int,
    *,
    key,
    temperature: float = 1.0,
    top_k: int | None = None,
):
    """Sample `steps` tokens after `prompt` from a [`gpt`][purenet.models.gpt]
    model, with a key-value cache.

    Each position runs through the blocks once: its query attends over the
    keys and values of the positions before it, kept in a cache written as
    the positions are read, so a new token costs one position of work (the
    layers' matrices applied to one vector per example, and attention of one
    query over the cache), not a rerun of the context (Radford et al. 2019;
    the `past_key_values` of Hugging Face, the `kv cache` of llm.c). The
    prompt is read the same way, position by position, and the whole loop is
    one `lax.scan` compiled once per (model, prompt shape, `steps`, `top_k`).
    The decode step reads the same params as the model's forward (layer
    norms, MLP and head through the layers' own forwards) and gives the same
    logits to rounding.

    **Memory of the cache**: keys and values for every block and position,
    `2 * depth * m * (len(prompt) + steps) * width` entries, at most
    `2 * depth * m * context * width` (for GPT-2 small, batch 1, context
    1024: 18.9 M entries, 75 MiB in float32).

    **Sampling**: the next token is drawn from `softmax(logits / temperature)`,
    restricted to the `top_k` largest logits when `top_k` is given.
    **Greedy** decoding is `top_k=1`: the arg-max of the logits (the lowest
    id among equal maxima), whatever the temperature and key. The key of
    position `t` is `jax.random.fold_in(key, t)`: same key, same tokens.

    Args:
      model: a layer made by [`gpt`][purenet.models.gpt] (its configuration
        is read with [`gpt_config`][purenet.models.gpt_config]).
      params: its params.
      prompt: token ids `(m, P)` (or `(P,)` for one sequence), `1 <= P <= context`.
      steps: the number of new tokens, `>= 0`, with `P + steps <= context`
        (learned positions end there).
      key: a `jax.random` key.
      temperature: `> 0`; below 1 sharpens, above 1 flattens the distribution.
      top_k: `None` (the whole vocabulary) or an int in `[1, vocab_size]`.

    Returns:
      The ids `(m, P + steps)` (or `(P + steps,)`): the prompt followed by
      the sampled tokens.

    Raises:
      ValueError: naming the argument, for an empty prompt or one longer
        than the context, ids outside the vocabulary, `steps < 0` or beyond
        the context, `temperature <= 0`, `top_k` out of range, params that
        do not fit the model.
      TypeError: a model not made by `gpt`, a `key` that is not a key.
    """
    c = _config_of(model)
    if not hasattr(prompt, "shape") or not hasattr(prompt, "dtype"):
        prompt = np.asarray(prompt)
    if jnp.ndim(prompt) not in (1, 2):
        _checks.fail(
            "prompt", "token ids of shape (P,) or (m, P)", f"shape {tuple(jnp.shape(prompt))}"
        )
    one = jnp.ndim(prompt) == 1
    prompt2 = prompt[None] if one else prompt
    if prompt2.shape[1] == 0 or prompt2.shape[0] == 0:
        _checks.fail(
            "prompt", "at least one token (a non-empty prompt)", f"shape {tuple(prompt.shape)}"
        )
    if prompt2.shape[1] > c.context:
        _checks.fail(
            "prompt", f"at most context = {c.context} tokens", f"{prompt2.shape[1]} tokens"
        )
    _check_ids(prompt2, c, "prompt")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        _checks.fail("steps", "an int >= 0", repr(steps))
    steps = int(steps)
    if prompt2.shape[1] + steps > c.context:
        _checks.fail(
            "steps",
            f"at most context - len(prompt) = "
            f"{c.context - prompt2.shape[1]} (learned positions end at the context)",
            steps,
        )
    temperature = _checks.number_in("temperature", temperature, 0.0, math.inf, low_open=True)
    if top_k is not None:
        if (
            isinstance(top_k, bool)
            or not isinstance(top_k, int | np.integer)
            or not (1 <= top_k <= c.vocab_size)
        ):
            _checks.fail(
                "top_k", f"None or an int in [1, vocab_size = {c.vocab_size}]", repr(top_k)
            )
        top_k = int(top_k)
    if not (
        hasattr(key, "dtype")
        and (
            jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            or (key.dtype == jnp.uint32 and key.shape == (2,))
        )
    ):
        _checks.fail_type("key", "a jax.random key", type(key).__name__)
    check_params(model, params, prompt2)
    if steps == 0:
        return jnp.asarray(prompt)
    out = _generate(c, params, jnp.asarray(prompt2), key, temperature, steps=steps, top_k=top_k)
    return out[0] if one else out
