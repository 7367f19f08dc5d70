r"""Hugging Face `GPT2LMHeadModel` state dicts to and from [`gpt`][purenet.models.gpt.gpt]'s params.

[`gpt_config_from_hf`][purenet.models.hf.gpt_config_from_hf] maps a
`GPT2Config` to `gpt`'s arguments,
[`gpt_params_from_hf`][purenet.models.hf.gpt_params_from_hf] a state dict of
NumPy arrays to params (checked against the model's configuration) and
[`gpt_params_to_hf`][purenet.models.hf.gpt_params_to_hf] back. Loading GPT-2
weights kept on disk and sampling (nothing downloads):

```python
import json, numpy as np, torch
from purenet import models
config = models.gpt_config_from_hf(json.load(open("gpt2/config.json")))
model = models.gpt(**config)
state_dict = {k: v.numpy() for k, v in torch.load("gpt2/pytorch_model.bin").items()}
params = models.gpt_params_from_hf(state_dict, model)
ids = models.generate(model, params, prompt, 20, key=jax.random.key(0), top_k=40)
```

The checks against the reference follow llm.c and nanoGPT (Karpathy 2024,
2022): logits, loss, every gradient and ten AdamW steps against
`GPT2LMHeadModel` in float64 (`tests/test_models.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from purenet import _checks
from purenet.layers.core import Layer
from purenet.models.gpt import GPTBlock, GPTConfig, GPTParts, pack, unpack

__all__ = ["gpt_config_from_hf", "gpt_params_from_hf", "gpt_params_to_hf"]

_HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # the causal mask, not parameters


def gpt_config_from_hf(config) -> dict:
    """The keyword arguments of [`gpt`][purenet.models.gpt.gpt] for a Hugging Face
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
    """Params for [`gpt`][purenet.models.gpt.gpt] from a Hugging Face `GPT2LMHeadModel` state dict.

    Names and layouts (`C = n_embd`; Hugging Face's `Conv1D` stores
    `(in, out)`, as purenet's `dense`, so nothing is transposed but the
    untied head):

    | Hugging Face | gpt params, by name ([`unpack`][purenet.models.gpt.unpack]) |
    |---|---|
    | `transformer.wte.weight (V, C)` | `wte["W"]` |
    | `transformer.wpe.weight (context, C)` | `wpe["W"]` |
    | `transformer.h.{i}.ln_1.weight / .bias` | `blocks[i].ln_1["gamma" / "beta"]` |
    | `...attn.c_attn.weight (C, 3C)`, `.bias` | thirds: `attn["Wq" / "Wk" / "Wv"]`, `bq, bk, bv` |
    | `...attn.c_proj.weight (C, C)`, `.bias` | `blocks[i].attn["Wo"]`, `["bo"]` |
    | `...ln_2`, `...mlp.c_fc`, `...mlp.c_proj` | `blocks[i].ln_2`, `.mlp_fc`, `.mlp_proj` |
    | `transformer.ln_f.weight / .bias` | `ln_f["gamma" / "beta"]` |
    | `lm_head.weight (V, C)` | tied: checked equal to `wte`; else `head["W"]` (transposed) |

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
    c = None if model is None else GPTConfig.of(model)
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
            GPTBlock(
                ln_1={"gamma": j(n["ln_1.weight"]), "beta": j(n["ln_1.bias"])},
                attn=attn,
                ln_2={"gamma": j(n["ln_2.weight"]), "beta": j(n["ln_2.bias"])},
                mlp_fc={"W": j(n["mlp.c_fc.weight"]), "b": j(n["mlp.c_fc.bias"])},
                mlp_proj={"W": j(n["mlp.c_proj.weight"]), "b": j(n["mlp.c_proj.bias"])},
            )
        )
    return pack(
        GPTParts(
            wte={"W": j(wte)},
            wpe={"W": j(wpe)},
            blocks=tuple(blocks),
            ln_f={
                "gamma": j(arrays["transformer.ln_f.weight"]),
                "beta": j(arrays["transformer.ln_f.bias"]),
            },
            head={"W": None} if tied else {"W": j(arrays["lm_head.weight"].T)},
        )
    )


def gpt_params_to_hf(params) -> dict[str, np.ndarray]:
    """The inverse of [`gpt_params_from_hf`][purenet.models.hf.gpt_params_from_hf]:
    a `GPT2LMHeadModel` state dict of NumPy arrays (with `lm_head.weight`,
    a copy of `wte` when tied), ready for
    `hf_model.load_state_dict({k: torch.from_numpy(v) for k, v in ...})`.

    Raises:
      ValueError: `params` do not have the structure of `gpt`'s params.
    """
    if not (isinstance(params, tuple) and len(params) == 6):
        _checks.fail(
            "params",
            "params of purenet.models.gpt (a tuple of 6 entries)",
            type(params).__name__
            if not isinstance(params, tuple)
            else f"a tuple of length {len(params)}",
        )
    try:
        p = unpack(params)
    except (TypeError, ValueError):  # blocks that do not unpack as gpt's
        p = None
    if p is None or not (isinstance(p.head, dict) and "W" in p.head):
        _checks.fail(
            "params",
            "params of purenet.models.gpt (blocks a tuple, the head {'W': ...})",
            "another structure",
        )

    def n(a):
        return np.asarray(a)

    wte = n(p.wte["W"])
    out = {"transformer.wte.weight": wte, "transformer.wpe.weight": n(p.wpe["W"])}
    for i, b in enumerate(p.blocks):
        names = _hf_block_names(i)
        attn = b.attn
        values = {
            "ln_1.weight": b.ln_1["gamma"],
            "ln_1.bias": b.ln_1["beta"],
            "attn.c_attn.weight": np.concatenate(
                [n(attn["Wq"]), n(attn["Wk"]), n(attn["Wv"])], axis=1
            ),
            "attn.c_attn.bias": np.concatenate([n(attn["bq"]), n(attn["bk"]), n(attn["bv"])]),
            "attn.c_proj.weight": attn["Wo"],
            "attn.c_proj.bias": attn["bo"],
            "ln_2.weight": b.ln_2["gamma"],
            "ln_2.bias": b.ln_2["beta"],
            "mlp.c_fc.weight": b.mlp_fc["W"],
            "mlp.c_fc.bias": b.mlp_fc["b"],
            "mlp.c_proj.weight": b.mlp_proj["W"],
            "mlp.c_proj.bias": b.mlp_proj["b"],
        }
        out.update({names[k]: n(v) for k, v in values.items()})
    out["transformer.ln_f.weight"] = n(p.ln_f["gamma"])
    out["transformer.ln_f.bias"] = n(p.ln_f["beta"])
    head = p.head["W"]
    out["lm_head.weight"] = wte.copy() if head is None else n(head).T.copy()
    return out
