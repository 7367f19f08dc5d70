r"""GPT-2 (Radford et al. 2019) as a purenet [`Layer`][purenet.layers.core.Layer].

[`gpt`][purenet.models.gpt.gpt] stacks the library's layers, every backward
written by hand: token embedding plus learned positions, `depth` pre-layer-norm
causal [`transformer_block`][purenet.layers.attention.transformer_block]s
(Vaswani et al. 2017; Xiong et al. 2020), a final layer norm and an output head
tied to the token embedding (Press & Wolf 2017) through
[`tied`][purenet.layers.sharing.tied].

**The params layout is named once, here.** The params are the plain tuple the
combinators give (what optimizers, checkpoints and `check_params` see);
[`unpack`][purenet.models.gpt.unpack] reads them as a
[`GPTParts`][purenet.models.gpt.GPTParts] of named
[`GPTBlock`][purenet.models.gpt.GPTBlock]s and
[`pack`][purenet.models.gpt.pack] builds them back. The initialisation, the
Hugging Face mapping ([`purenet.models.hf`][]), the weight-decay mask and the
key-value cache ([`purenet.models.generate`][]) all go through these two, so
no other code knows which position holds what.

**The configuration is carried by the model, in its name.** A layer's `name`
is the call that made it, `gpt(97, 32, 2, 4, 64, tied=False)` (the sizes,
then the options that differ from their defaults), and
[`GPTConfig.of`][purenet.models.gpt.GPTConfig.of] parses it back (literals
only, through `ast`), checked as `gpt` checks its arguments. We chose the name
over the other places a `Layer` could carry it: a module-level table keyed by
the layer grows with every model built and forgets a model rebuilt with
`_replace` (`make_layer` itself rebuilds the layer that way); an attribute on
one of the closures is lost when that function is replaced (a wrapped
`forward`, a rule's own `backward`, another `init`); `children` holds layers
only. The name is already the model's printed identity in every error
message, it survives `_replace` of any function, and it is exactly
`gpt(**gpt_config(model))`. A layer renamed by hand is no longer recognised as
a `gpt` (a clear `TypeError`).

Weight decay on matrices only: [`gpt_decay_mask`][purenet.models.gpt.gpt_decay_mask].
"""

from __future__ import annotations

import ast
import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from purenet import _checks
from purenet import layers as L
from purenet.layers import per_example_rules as _rules
from purenet.layers.checking import within
from purenet.layers.core import Layer, as_shape, call_forward, make_layer

__all__ = [
    "GPTBlock",
    "GPTConfig",
    "GPTParts",
    "gpt",
    "gpt_config",
    "gpt_decay_mask",
    "pack",
    "pack_block",
    "unpack",
]

_ACTIVATIONS = ("gelu_tanh", "gelu", "relu")

# ------------------------------------------------------------ the configuration


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The arguments of [`gpt`][purenet.models.gpt.gpt], checked as `gpt`
    checks them (a frozen, hashable value: `jit`'s static argument of the
    key-value cache)."""

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

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("vocab_size", "context", "depth", "heads", "width", "mlp_ratio"):
            put(name, _checks.positive_int(name, getattr(self, name)))
        put("dropout", _checks.number_in("dropout", self.dropout, 0.0, 1.0, high_open=True))
        put("eps", _checks.positive("eps", self.eps))
        if self.width % self.heads:
            _checks.fail(
                "heads",
                f"a number of heads that divides width = {self.width}",
                f"heads = {self.heads}",
            )
        for name in ("tied", "flash"):
            if not isinstance(getattr(self, name), bool):
                _checks.fail_type(name, "a bool", type(getattr(self, name)).__name__)
        _checks.one_of("activation", self.activation, _ACTIVATIONS)

    @property
    def call(self) -> str:
        """The call that builds this configuration, e.g.
        `gpt(97, 32, 2, 4, 64, tied=False)`: the model's name."""
        fields = dataclasses.fields(self)
        args = [repr(getattr(self, f.name)) for f in fields[:5]]
        args += [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields[5:]
            if getattr(self, f.name) != f.default
        ]
        return f"gpt({', '.join(args)})"

    @classmethod
    def of(cls, model, name: str = "model") -> GPTConfig:
        """The configuration of a layer made by [`gpt`][purenet.models.gpt.gpt],
        read from its name (module docstring).

        Raises:
          TypeError: naming `name`, for anything else.
        """
        config = _parse_call(getattr(model, "name", None))
        if config is None or not isinstance(model, Layer):
            _checks.fail_type(
                name,
                "a model made by purenet.models.gpt",
                getattr(model, "name", type(model).__name__),
            )
        return config


def _parse_call(text) -> GPTConfig | None:
    """`GPTConfig(...)` for a string `gpt(<literals>)`, else `None`."""
    if not isinstance(text, str) or not text.startswith("gpt("):
        return None
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "gpt"):
            return None
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        return GPTConfig(*args, **kwargs)
    except (SyntaxError, ValueError, TypeError):
        return None


def gpt_config(model: Layer) -> dict:
    """The arguments [`gpt`][purenet.models.gpt.gpt] was called with:
    `gpt(**gpt_config(model))` builds the same architecture.

    Raises:
      TypeError: `model` was not made by `gpt`.
    """
    return dataclasses.asdict(GPTConfig.of(model))


# ------------------------------------------------------------ the params layout


class GPTBlock(NamedTuple):
    """One block's params by name (Hugging Face's names): layer norms
    `{"gamma", "beta"}`, the attention `{"Wq", "bq", ..., "Wo", "bo"}`, the
    MLP's denses `{"W", "b"}`."""

    ln_1: dict
    attn: dict
    ln_2: dict
    mlp_fc: dict
    mlp_proj: dict


class GPTParts(NamedTuple):
    """[`gpt`][purenet.models.gpt.gpt]'s params by name. `head` is
    `{"W": None}` when tied (the matrix is `wte["W"]`)."""

    wte: dict
    wpe: dict
    blocks: tuple
    ln_f: dict
    head: dict


# Where the tied matrices sit in the params tuple (pack's positions 0 and 5).
_WTE_W, _HEAD_W = (0, "W"), (5, "W")


def unpack(params) -> GPTParts:
    """`gpt`'s params tuple read by name (no copy)."""
    wte, wpe, _, blocks, ln_f, head = params
    return GPTParts(
        wte,
        wpe,
        tuple(
            GPTBlock(ln_1, attn, ln_2, fc, proj)
            for (ln_1, attn, _), (ln_2, fc, _, proj, _) in blocks
        ),
        ln_f,
        head,
    )


def pack(parts: GPTParts) -> tuple:
    """The inverse of [`unpack`][purenet.models.gpt.unpack]: the params tuple
    of `gpt`, `()` in the slots of its dropouts and activations."""
    blocks = tuple(pack_block(b) for b in parts.blocks)
    return (parts.wte, parts.wpe, (), blocks, parts.ln_f, parts.head)


def pack_block(b: GPTBlock) -> tuple:
    """One block's params as its
    [`transformer_block`][purenet.layers.attention.transformer_block] takes
    them: `(attention branch, MLP branch)`, each a residual `serial`'s tuple."""
    return (b.ln_1, b.attn, ()), (b.ln_2, b.mlp_fc, (), b.mlp_proj, ())


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

    # Per example: a dense layer without bias on each example's positions
    # (Goodfellow's identity, or the ghost Gram form for long sequences).
    def per_example(params, cache, dy):
        dW, _ = _rules.dense_per_example(cache, dy)
        dW = jnp.swapaxes(dW, 1, 2) if transposed else dW
        return {"W": dW}, backward(params, cache, dy)[1]

    def sq_norms(params, cache, dy):
        sq_W, _ = _rules.dense_sq_norms(cache, dy)
        return {"W": sq_W}, backward(params, cache, dy)[1]

    return make_layer(
        init, forward, backward, name="lm_head", per_example=per_example, sq_norms=sq_norms
    )


# ---------------------------------------------------------------------- the model


def _block(c: GPTConfig) -> Layer:
    """One of GPT's blocks: the library's
    [`transformer_block`][purenet.layers.attention.transformer_block] with
    GPT-2's options."""
    return L.transformer_block(
        c.width,
        c.heads,
        mlp_dim=c.mlp_ratio * c.width,
        causal=True,
        activation=c.activation,
        eps=c.eps,
        dropout=c.dropout,
        flash=c.flash,
    )


def _gpt2_init(key, params, c: GPTConfig):
    """GPT-2's initialisation (as Hugging Face's `GPT2PreTrainedModel`):
    N(0, 0.02^2) for embeddings and matrices, N(0, (0.02 / sqrt(2 depth))^2)
    for the two projections back into the residual stream, zero biases, unit
    layer-norm gains."""
    keys = iter(jax.random.split(key, 4 + 6 * c.depth))
    std, proj_std = 0.02, 0.02 / math.sqrt(2 * c.depth)

    def normal(a, s):
        return s * jax.random.normal(next(keys), a.shape, a.dtype)

    p = unpack(params)
    wte = {"W": normal(p.wte["W"], std)}
    wpe = {"W": normal(p.wpe["W"], std)}
    blocks = []
    for b in p.blocks:
        attn = {
            k: (
                jnp.zeros_like(v)
                if k.startswith("b")
                else normal(v, proj_std if k == "Wo" else std)
            )
            for k, v in b.attn.items()
        }
        fc = {"W": normal(b.mlp_fc["W"], std), "b": jnp.zeros_like(b.mlp_fc["b"])}
        proj = {"W": normal(b.mlp_proj["W"], proj_std), "b": jnp.zeros_like(b.mlp_proj["b"])}
        blocks.append(b._replace(attn=attn, mlp_fc=fc, mlp_proj=proj))
    head = p.head if c.tied else {"W": normal(p.head["W"], std)}
    return pack(GPTParts(wte, wpe, tuple(blocks), p.ln_f, head))


def check_ids(x, c: GPTConfig, name: str = "x"):
    """Refuse anything but integer token ids `(m, T)` in `[0, vocab_size)`
    with `T` at most the context length of the model configured by `c` (the
    check of the forward and of `generate`)."""
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
    [`tied`][purenet.layers.sharing.tied]), each block a
    [`transformer_block`][purenet.layers.attention.transformer_block]`(width,
    heads, mlp_dim=mlp_ratio * width, causal=True, activation=activation,
    eps=eps, dropout=dropout, flash=flash)`; its backward is theirs, and the
    tied matrix gets the sum of the embedding's and the head's gradients.

    **Params** (a tuple, Hugging Face names in brackets; read and built by
    name with [`unpack`][purenet.models.gpt.unpack] and
    [`pack`][purenet.models.gpt.pack]):

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

    The configuration is the returned layer's name, the call itself
    (`gpt(97, 32, 2, 4, 64, tied=False)`; module docstring):
    [`gpt_config`][purenet.models.gpt.gpt_config]`(model)` reads it back and
    [`generate`][purenet.models.generate.generate] reads it.

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
    c = GPTConfig(
        vocab_size,
        context,
        depth,
        heads,
        width,
        mlp_ratio=mlp_ratio,
        tied=tied,
        activation=activation,
        dropout=dropout,
        eps=eps,
        flash=flash,
    )
    body = L.serial(
        L.embedding(c.vocab_size, c.width),
        L.position_embedding(c.context),
        L.dropout(c.dropout),
        L.serial(*(_block(c) for _ in range(c.depth))),
        L.layer_norm(c.eps),
        _lm_head(c.vocab_size, transposed=c.tied),
    )
    inner = L.tied(body, [(_WTE_W, _HEAD_W)]) if c.tied else body

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
        check_ids(x, c)
        with within("gpt", inner):
            return call_forward(inner, params, x, state=state, train=train, key=key, mask=mask)

    def backward(params, cache, dy):
        with within("gpt", inner):
            return inner.backward(params, cache, dy)

    def rule(of):
        def apply(params, cache, dy):
            with within("gpt", inner):
                return of(inner, params, cache, dy)

        return apply

    return make_layer(
        init,
        forward,
        backward,
        name=c.call,
        children=((None, inner),),
        per_example=rule(_rules.layer_grads),
        sq_norms=rule(_rules.layer_sq_norms),
    )


# ------------------------------------------------------------------ weight decay

_MATRICES = ("W", "Wq", "Wk", "Wv", "Wo")


def gpt_decay_mask(params):
    """Which of `gpt`'s params get weight decay: a pytree of bools like `params`.

    True for the matrices of the attention (`Wq`, `Wk`, `Wv`, `Wo`), of the
    MLP and of an untied head; False for biases, layer-norm gains and
    offsets, and the embeddings (token and position; the tied head is the
    token embedding): minGPT's rule, the mask of GPT-2-style training.
    (nanoGPT decays every 2-D tensor, embeddings included.) A `None` slot of
    the tied head stays `None`.
    """

    def matrices(tree):
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.ndim(leaf) == 2 and path[-1].key in _MATRICES, tree
        )

    def nothing(tree):
        return jax.tree.map(lambda _: False, tree)

    p = unpack(params)
    blocks = tuple(GPTBlock(*map(matrices, b)) for b in p.blocks)
    return pack(
        GPTParts(nothing(p.wte), nothing(p.wpe), blocks, matrices(p.ln_f), matrices(p.head))
    )
