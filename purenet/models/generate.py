r"""Sampling from a [`gpt`][purenet.models.gpt.gpt] model with a key-value cache.

[`generate`][purenet.models.generate.generate] reads the prompt and writes
the new tokens one position at a time, each position running once through
the blocks. The decode step is not a second GPT forward: it runs the
model's own pieces on the one new position, `(m, 1, width)`: the
[`layer_norm`][purenet.layers.normalization.layer_norm]s, each block's MLP
branch (the one [`transformer_block`][purenet.layers.attention.transformer_block]
builds), and of the attention layer its input and output projections and
[`attention_forward`][purenet.layers.attention.attention_forward], whose
queries here are the one new position and whose keys and values are the
cache's (a mask allows the positions written so far). Only the writing of
the cache is its own.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet import _checks
from purenet import layers as L
from purenet.layers.attention import _mlp_branch, attention_forward, project_out, project_qkv
from purenet.layers.checking import check_params
from purenet.layers.core import Layer
from purenet.models.gpt import GPTConfig, check_ids, pack_block, unpack

__all__ = ["generate"]


def _attend_cached(c: GPTConfig, ln, attn, x, K, V, t):
    """A block's attention branch, `x + MHA(LN1(x))`, for the one position
    `t` of `x (m, 1, width)`: its key and value written into the cache
    `K, V (m, L, heads, d_head)`, its query attending over positions `<= t`.
    Returns `(x, K, V)`."""
    h = L.layer_norm(c.eps).forward(ln, x)[0]
    q, k, v = project_qkv(attn, h, c.heads)  # (m, 1, heads, d_head) each
    K = lax.dynamic_update_slice_in_dim(K, k, t, axis=1)
    V = lax.dynamic_update_slice_in_dim(V, v, t, axis=1)
    written = jnp.arange(K.shape[1]) <= t  # broadcasts to (m, heads, 1, L)
    o = attention_forward(q, K, V, written)[0]
    return x + project_out(attn, o.reshape(x.shape)), K, V


def _decode_step(c: GPTConfig, params, cache, tok, t):
    """Logits for the token `tok (m,)` at position `t`, given the keys and
    values of positions `< t` in `cache`; the cache with position `t`
    written."""
    Ks, Vs = cache
    p = unpack(params)
    x = (p.wte["W"][tok] + p.wpe["W"][t])[:, None, :]  # (m, 1, width)
    mlp = L.residual(_mlp_branch(c.width, c.mlp_ratio * c.width, c.activation, c.eps, c.dropout))
    new_K, new_V = [], []
    for i, b in enumerate(p.blocks):
        x, K, V = _attend_cached(c, b.ln_1, b.attn, x, Ks[i], Vs[i], t)
        new_K.append(K)
        new_V.append(V)
        x = mlp.forward(pack_block(b)[1], x)[0]
    h = L.layer_norm(c.eps).forward(p.ln_f, x)[0][:, 0]
    logits = h @ p.wte["W"].T if c.tied else h @ p.head["W"]
    return logits, (jnp.stack(new_K), jnp.stack(new_V))


def _empty_cache(c: GPTConfig, params, m: int, length: int):
    dtype = unpack(params).wte["W"].dtype
    shape = (c.depth, m, length, c.heads, c.width // c.heads)
    return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


@functools.partial(jax.jit, static_argnames=("c",))
def _cached_logits(c: GPTConfig, params, ids):
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
def _generate(c: GPTConfig, params, prompt, key, temperature, *, steps: int, top_k):
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
    """Sample `steps` tokens after `prompt` from a [`gpt`][purenet.models.gpt.gpt]
    model, with a key-value cache.

    Each position runs through the blocks once: its query attends over the
    keys and values of the positions before it, kept in a cache written as
    the positions are read, so a new token costs one position of work (the
    layers' matrices applied to one vector per example, and attention of one
    query over the cache), not a rerun of the context (Radford et al. 2019;
    the `past_key_values` of Hugging Face, the `kv cache` of llm.c). The
    prompt is read the same way, position by position, and the whole loop is
    one `lax.scan` compiled once per (model, prompt shape, `steps`, `top_k`).
    The decode step reads the same params as the model's forward and runs
    the same pieces: the layer norms' and the blocks' MLP branches' own
    forwards, the attention layer's projections and
    [`attention_forward`][purenet.layers.attention.attention_forward] with
    the cache's keys and values; it gives the same logits to rounding.

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
      model: a layer made by [`gpt`][purenet.models.gpt.gpt] (its configuration
        is read with [`gpt_config`][purenet.models.gpt.gpt_config]).
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
    c = GPTConfig.of(model)
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
    check_ids(prompt2, c, "prompt")
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
