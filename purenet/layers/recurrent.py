"""Recurrent layers with backpropagation through time written by hand.

Layers (the contract is [`purenet.layers.core`][purenet.layers.core]'s):

| layer | what it computes |
| --- | --- |
| `rnn(h)` | Elman / tanh RNN, `h_t = tanh(x_t Wx + h_{t-1} Wh + b)` |
| `lstm(h)` | long short-term memory, gates i, f, g, o (PyTorch order) |
| `gru(h)` | gated recurrent unit, blocks r, z, n as `torch.nn.GRU` |
| `last_step()` | `(m, T, h) -> (m, h)`: the last time step |
| `bidirectional` | a recurrent layer run forwards and on the reversed sequence |
| `embedding` | integer ids `(m, T)` to vectors `(m, T, dim)` |

**Shapes.** Sequences are batch-major, `x` of shape `(m, T, d)`, and a
recurrent layer returns *every* hidden state, `(m, T, h)`
(`torch.nn.RNN(batch_first=True)`'s `output`); put [`last_step`][purenet.layers.recurrent.last_step]
after it for one vector per sequence. `init(key, (T, d))` gives the output
shape `(T, h)`; the parameters do not depend on `T`.

**Initial state.** Zero unless given. To give one, pass a tuple as `x`:
`(x, h0)` for [`rnn`][purenet.layers.recurrent.rnn] and [`gru`][purenet.layers.recurrent.gru],
`(x, (h0, c0))` for [`lstm`][purenet.layers.recurrent.lstm], each state of shape `(m, h)`. The
backward then returns the gradient with the same structure, `(dx, dh0)` or `(dx, (dh0, dc0))`, so
an encoder's final state can feed a decoder and be trained through it. (The
output is still only the hidden states; the last one is `y[:, -1]`. The
LSTM's final cell state is not returned.)

**Padding masks.** `forward(params, x, mask=mask)`, `mask` a bool array
`(m, T)`, True at the valid steps (the contract of
[`purenet.layers.core`][purenet.layers.core]). At a masked step `rnn`,
`lstm` and `gru` carry their state unchanged and output zeros:

```text
h_t = where(mask_t, cell(x_t, h_{t-1}), h_{t-1})      (c_t likewise for lstm)
y_t = where(mask_t, h_t, 0)
```

so a sequence padded first or last gives, at its valid steps, the outputs
of the sequence cut to its valid part (padding last: what PyTorch's
`pack_padded_sequence` gives). A masked step's input is never read: it is
replaced by zeros before the projection, so what sits there (large values,
inf, NaN) changes neither the outputs nor any gradient, and its `dx` is
zero. The backward of `where`: at a masked step `da_t = 0` and the carried
gradient passes unchanged, `dJ/dh_{t-1} = dJ/dh_t` (and
`dJ/dc_{t-1} = dJ/dc_t`). A row with no valid step outputs zeros, keeps its
initial state throughout, and gets `dh0 = 0`.
[`last_step`][purenet.layers.recurrent.last_step] takes each row's last
valid output; [`bidirectional`][purenet.layers.recurrent.bidirectional]
gives its reverse direction the reversed mask, so that direction passes
the trailing padding with its initial state and starts at each sequence's
last valid step. With `mask=None` nothing of this is computed.

**Parameters** are laid out exactly like PyTorch's, transposed, so that its
weights load one to one:

```text
Wx = weight_ih_l0.T      Wh = weight_hh_l0.T
b  = bias_ih_l0 + bias_hh_l0          (rnn, lstm: the two biases only add)
bx = bias_ih_l0,  bh = bias_hh_l0     (gru: bh_n sits inside r * (...))
```

and are initialised as PyTorch does (`torch.nn.RNN`, `LSTM`, `GRU`):
every entry uniform in `[-1/sqrt(h), 1/sqrt(h)]`; a merged bias `b` is
drawn as the sum of two such draws, so it has the distribution of PyTorch's
`b_ih + b_hh`.

**Backpropagation through time** (Werbos 1990; Rumelhart, Hinton & Williams
1986, whose "unfolding" turns a recurrent net into a layered net with one
layer per step and the same weights in every layer, so the gradient of a
shared weight is the sum of its per-step gradients). Every layer here:

1. projects all inputs at once before the recurrence, `A_x = x Wx + b` for
   the `T` steps as a single matrix product (hoisted out of the scan);
2. runs the recurrence as a `lax.scan` over time, one `h_{t-1} Wh`
   product per step, caching what the backward needs (listed per layer);
3. backward: a reverse `lax.scan` carrying `dJ/dh_t` (and `dJ/dc_t`),
   one `da_t Wh^T` product per step, emitting the pre-activation
   gradients `da_t` of every step;
4. then, again as single matrix products over all steps: `dWx = x^T da`,
   `dWh = h_prev^T da` (`h_prev` the hidden states shifted by one step,
   `h0` first), `db = sum da`, `dx = da Wx^T`.

So the sequential part of both passes holds only what must be sequential.
Nothing here calls `jax.grad`, `jax.vjp` or `jax.jvp`.

Gates use purenet's stable sigmoid (it only exponentiates `-|a|`), so
pre-activations of `+-1e4` give exact 0/1 gates, never NaN, in float32.

References: Elman (1990), "Finding structure in time"; Hochreiter &
Schmidhuber (1997) and Gers, Schmidhuber & Cummins (2000) (the forget gate);
Graves (2012), *Supervised Sequence Labelling with Recurrent Neural
Networks*, ch. 4.6 (the LSTM backward); Cho et al. (2014) (the GRU);
PyTorch's `torch.nn.GRU` documentation for the placement of `bh_n`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet import _checks
from purenet.activations import sigmoid as _sigmoid_activation
from purenet.layers import per_example_rules as _rules
from purenet.layers.checking import within
from purenet.layers.core import (
    Layer,
    Static,
    as_shape,
    call_forward,
    check_rank,
    make_layer,
    split_key,
)

_sigmoid = _sigmoid_activation.f


# ------------------------------------------------------------------- helpers


def _sequence_shape(in_shape, layer: str):
    """`(T, d)` from `in_shape`; an initial state's shape, if given as
    `((T, d), state_shapes)`, is ignored (it is the layer's own)."""
    if isinstance(in_shape, tuple | list) and in_shape and isinstance(in_shape[0], tuple | list):
        in_shape = in_shape[0]
    shape = as_shape(in_shape)
    if len(shape) != 2:
        _checks.fail("in_shape", f"a sequence shape (T, d) for {layer}", repr(in_shape))
    return shape


def _uniform(key, shape, bound, dtype):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _check_sequence(x, d: int, layer: str) -> None:
    check_rank(x, 3, layer, "(m, T, d)")
    _checks.float_array("x", x)
    if x.shape[2] != d or x.shape[1] < 1:
        _checks.fail(
            "x", f"a batch of shape (m, T, {d}) with T >= 1 for {layer}", f"shape {tuple(x.shape)}"
        )


def _check_state(name: str, s, m: int, h: int, dtype, layer: str) -> None:
    if not hasattr(s, "shape") or tuple(s.shape) != (m, h):
        got = f"shape {tuple(jnp.shape(s))}" if hasattr(s, "shape") else type(s).__name__
        _checks.fail(name, f"an initial state of shape ({m}, {h}) for {layer}", got)
    if jnp.dtype(s.dtype) != jnp.dtype(dtype):
        _checks.fail(
            name, f"an initial state of the input's dtype {jnp.dtype(dtype)}", f"dtype {s.dtype}"
        )


def _split_input(x, d: int, h: int, states: int, layer: str):
    """`x` or `(x, initial)` -> `(x, tuple of initial states, given)`.

    `states` is 1 (h0) or 2 ((h0, c0)); missing states are zeros."""
    given = isinstance(x, tuple | list)
    if given:
        if len(x) != 2:
            _checks.fail(
                "x",
                f"a batch x or a pair (x, initial_state) for {layer}",
                f"a {type(x).__name__} of length {len(x)}",
            )
        x, initial = x
    _check_sequence(x, d, layer)
    m = x.shape[0]
    if not given:
        return x, (jnp.zeros((m, h), x.dtype),) * states, False
    if states == 1:
        _check_state("h0", initial, m, h, x.dtype, layer)
        return x, (initial,), True
    if not isinstance(initial, tuple | list) or len(initial) != 2:
        _checks.fail("x", f"(x, (h0, c0)) for {layer}", f"(x, {type(initial).__name__})")
    for name, s in zip(("h0", "c0"), initial, strict=True):
        _check_state(name, s, m, h, x.dtype, layer)
    return x, tuple(initial), True


def _check_mask(mask, x, layer: str):
    """The padding mask as a jax bool array of `x`'s `(m, T)`, or `None`."""
    if mask is None:
        return None
    expected = f"a boolean padding mask of shape (m, T) = {tuple(x.shape[:2])} for {layer}"
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        _checks.fail_type("mask", expected, type(mask).__name__)
    if tuple(mask.shape) != tuple(x.shape[:2]):
        _checks.fail("mask", expected, f"shape {tuple(mask.shape)}")
    if jnp.dtype(mask.dtype) != jnp.dtype(bool):
        _checks.fail("mask", f"{expected} (True at valid steps)", f"dtype {mask.dtype}")
    return jnp.asarray(mask)


def _masked_input(x, mask):
    """`x` with zeros at the masked steps (so that nothing there, not even
    a NaN, reaches a product), and the mask time-major `(T, m, 1)` for the
    scans (`None` without a mask: a leafless pytree that `lax.scan` passes
    through)."""
    if mask is None:
        return x, None
    return jnp.where(mask[:, :, None], x, 0), jnp.swapaxes(mask, 0, 1)[:, :, None]


def _masked_output(hs, mask):
    """The hidden states batch-major, zero at the masked steps."""
    y = jnp.swapaxes(hs, 0, 1)
    return y if mask is None else jnp.where(mask[:, :, None], y, 0)


def _project(x, W, b):
    """`x W + b` for all steps at once, time-major: `(m, T, d) -> (T, m, k)`."""
    return jnp.einsum("mtd,dk->tmk", x, W) + b


def _shift(h0, hs):
    """The previous hidden state of every step, `[h0, h_1, ..., h_{T-1}]`, time-major."""
    return jnp.concatenate([h0[None], hs[:-1]], axis=0)


def _input_grads(x, Wx, da):
    """`dWx = x^T da` and `dx = da Wx^T` over all steps (`da` time-major)."""
    return jnp.einsum("mtd,tmk->dk", x, da), jnp.einsum("tmk,dk->mtd", da, Wx)


def _recurrent_grads(h_prev, da):
    """`dWh = sum_t h_{t-1}^T da_t` as one matrix product (time-major)."""
    return jnp.einsum("tmi,tmk->ik", h_prev, da)


# ------------------------------------------------------------------------ rnn


def rnn(hidden_size: int) -> Layer:
    """Elman's tanh recurrent layer (`torch.nn.RNN`, `nonlinearity="tanh"`).

    Forward, for `t = 1..T` with `h_0` zero or given:

    ```text
    a_t = x_t Wx + h_{t-1} Wh + b,    h_t = tanh(a_t)
    ```

    Params `{"Wx": (d, h), "Wh": (h, h), "b": (h,)}`. The cache holds the
    input, `h_0` and every hidden state (`h` numbers per step and
    example, the output itself).

    Backward (BPTT; Rumelhart et al. 1986, the unfolded net), with
    `g_{T+1} = 0` and `dy_t = dJ/dy_t` from above:

    ```text
    g_t  = dy_t + da_{t+1} Wh^T       (dJ/dh_t: from the output and from step t+1)
    da_t = g_t * (1 - h_t**2)          (tanh' = 1 - tanh**2)
    dWx = sum_t x_t^T da_t,  dWh = sum_t h_{t-1}^T da_t,  db = sum_t da_t,
    dx_t = da_t Wx^T,        dh_0 = da_1 Wh^T
    ```

    With a mask (module docstring), a masked step keeps `h_t = h_{t-1}`;
    its `da_t` is zero and it passes `g_t` on to step `t-1` unchanged.

    Args:
      hidden_size: `h`, the number of hidden units.
    """
    h = _checks.positive_int("hidden_size", hidden_size)

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "rnn")
        k = jax.random.split(key, 4)
        bound = 1.0 / math.sqrt(h)
        params = {
            "Wx": _uniform(k[0], (d, h), bound, dtype),
            "Wh": _uniform(k[1], (h, h), bound, dtype),
            "b": _uniform(k[2], (h,), bound, dtype) + _uniform(k[3], (h,), bound, dtype),
        }
        return (T, h), params, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        Wx, Wh = params["Wx"], params["Wh"]
        x, (h0,), given = _split_input(x, Wx.shape[0], h, 1, "rnn")
        mask = _check_mask(mask, x, "rnn")
        x, steps = _masked_input(x, mask)

        def step(h_prev, inputs):
            a_x, valid = inputs
            h_t = jnp.tanh(a_x + h_prev @ Wh)
            if valid is not None:
                h_t = jnp.where(valid, h_t, h_prev)
            return h_t, h_t

        _, hs = lax.scan(step, h0, (_project(x, Wx, params["b"]), steps))
        cache = {"x": x, "h0": h0, "hs": hs}
        if given:  # the cache's structure records, statically, that dh0 is wanted
            cache["given"] = ()
        if mask is not None:
            cache["steps"] = steps
        return _masked_output(hs, mask), cache

    def backward(params, cache, dy):
        Wh = params["Wh"]
        hs = cache["hs"]

        def step(dh_next, inputs):
            dy_t, h_t, valid = inputs
            da = (dy_t + dh_next) * (1.0 - h_t * h_t)
            if valid is None:
                return da @ Wh.T, da
            da = jnp.where(valid, da, 0)
            return da @ Wh.T + jnp.where(valid, 0, dh_next), da

        xs = (jnp.swapaxes(dy, 0, 1), hs, cache.get("steps"))
        dh0, da = lax.scan(step, jnp.zeros_like(cache["h0"]), xs, reverse=True)
        dWx, dx = _input_grads(cache["x"], params["Wx"], da)
        grads = {
            "Wx": dWx,
            "Wh": _recurrent_grads(_shift(cache["h0"], hs), da),
            "b": jnp.sum(da, axis=(0, 1)),
        }
        return grads, ((dx, dh0) if "given" in cache else dx)

    # Per example: the cache (inputs, gates, states, the mask) is each
    # example's own, so the batch-of-one BPTT, vmapped, is exact.
    return make_layer(
        init,
        forward,
        backward,
        name=f"rnn({h})",
        per_example=_rules.per_example_from_backward(backward, _time_major),
    )


def _time_major(cache):
    """The batch axis of each leaf of a recurrent cache: the scan's per-step
    values (`hs`, gates, ...) are time-major `(T, m, ...)`, the rest batch-major."""
    batch_major = ("x", "h0", "c0", "given")
    return {
        name: jax.tree.map(lambda _, axis=0 if name in batch_major else 1: axis, value)
        for name, value in cache.items()
    }


# ----------------------------------------------------------------------- lstm


def lstm(hidden_size: int, forget_bias: float = 0.0) -> Layer:
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget
    gate of Gers et al. 2000), as `torch.nn.LSTM`.

    Forward, with `h_0 = c_0 = 0` unless given and `sigma` the logistic
    sigmoid; the columns of `a_t` are four blocks of `h` in PyTorch's
    order i, f, g, o:

    ```text
    a_t = x_t Wx + h_{t-1} Wh + b = [a_i, a_f, a_g, a_o]
    i = sigma(a_i),  f = sigma(a_f),  g = tanh(a_g),  o = sigma(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
    ```

    Params `{"Wx": (d, 4h), "Wh": (h, 4h), "b": (4h,)}`. The cache holds,
    per step and example, the four gate activations `[i, f, g, o]` (4h
    numbers), `c_{t-1}` and `tanh(c_t)` (h each) besides the hidden
    state `h_t` (the output): `7h` numbers, and the input.

    Backward (Graves 2012, eqs. 4.11-4.16; cs231n assignment 3), reverse in
    time with `dh`/`dc` arriving from step `t+1` (zero after the last):

    ```text
    dh   = dy_t + da_{t+1} Wh^T                     (dJ/dh_t)
    dc   = dc_{t+1} * f_{t+1} + dh * o * (1 - tanh(c_t)**2)   (dJ/dc_t)
    da_i = dc * g * i (1 - i)            da_f = dc * c_{t-1} * f (1 - f)
    da_g = dc * i * (1 - g**2)           da_o = dh * tanh(c_t) * o (1 - o)
    ```

    `dc * f` is what flows to `c_{t-1}`: with `f` near 1 the cell
    carries the gradient across many steps unattenuated (the constant error
    carousel). Then `dWx`, `dWh`, `db`, `dx` as for [`rnn`][purenet.layers.recurrent.rnn], from
    `da_t = [da_i, da_f, da_g, da_o]`; `dh_0 = da_1 Wh^T`,
    `dc_0 = dc_1 * f_1`. With a mask (module docstring), a masked step
    keeps `(h_t, c_t) = (h_{t-1}, c_{t-1})`, has `da_t = 0` and passes
    `dh`, `dc` on to step `t-1` unchanged.

    Initialisation: PyTorch's (module docstring), plus `forget_bias` added
    to the forget-gate block of `b`. With PyTorch's default (0) the forget
    gate starts near `sigma(0) = 1/2`, so the cell's gradient halves at
    every step back in time until training opens the gate; a positive value
    (1 in Jozefowicz, Zaremba & Sutskever 2015 and Keras's
    `unit_forget_bias`; Gers et al. 2000 used positive forget biases too)
    starts with the carousel open.

    Args:
      hidden_size: `h`, the number of hidden (and cell) units.
      forget_bias: added to `b[h:2h]` at initialisation (default 0: exactly
        PyTorch's distribution).
    """
    h = _checks.positive_int("hidden_size", hidden_size)
    forget_bias = _checks.number_in("forget_bias", forget_bias, -math.inf, math.inf)

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "lstm")
        k = jax.random.split(key, 4)
        bound = 1.0 / math.sqrt(h)
        params = {
            "Wx": _uniform(k[0], (d, 4 * h), bound, dtype),
            "Wh": _uniform(k[1], (h, 4 * h), bound, dtype),
            "b": (_uniform(k[2], (4 * h,), bound, dtype) + _uniform(k[3], (4 * h,), bound, dtype))
            .at[h : 2 * h]
            .add(forget_bias),
        }
        return (T, h), params, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        Wx, Wh = params["Wx"], params["Wh"]
        x, (h0, c0), given = _split_input(x, Wx.shape[0], h, 2, "lstm")
        mask = _check_mask(mask, x, "lstm")
        x, steps = _masked_input(x, mask)

        def step(carry, inputs):
            a_x, valid = inputs
            h_prev, c_prev = carry
            a = a_x + h_prev @ Wh
            gates = jnp.concatenate(
                [_sigmoid(a[:, : 2 * h]), jnp.tanh(a[:, 2 * h : 3 * h]), _sigmoid(a[:, 3 * h :])],
                axis=1,
            )
            i, f, g, o = jnp.split(gates, 4, axis=1)
            c_t = f * c_prev + i * g
            tanh_c = jnp.tanh(c_t)
            h_t = o * tanh_c
            if valid is not None:
                h_t, c_t = jnp.where(valid, h_t, h_prev), jnp.where(valid, c_t, c_prev)
            return (h_t, c_t), (h_t, gates, c_prev, tanh_c)

        xs = (_project(x, Wx, params["b"]), steps)
        _, (hs, gates, c_prev, tanh_c) = lax.scan(step, (h0, c0), xs)
        cache = {"x": x, "h0": h0, "hs": hs, "gates": gates, "c_prev": c_prev, "tanh_c": tanh_c}
        if given:
            cache["given"] = ()
        if mask is not None:
            cache["steps"] = steps
        return _masked_output(hs, mask), cache

    def backward(params, cache, dy):
        Wh = params["Wh"]

        def step(carry, inputs):
            dh_next, dc_next = carry
            dy_t, gates, c_prev, tanh_c, valid = inputs
            i, f, g, o = jnp.split(gates, 4, axis=1)
            dh = dy_t + dh_next
            dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
            if valid is not None:
                dh, dc = jnp.where(valid, dh, 0), jnp.where(valid, dc, 0)
            da = jnp.concatenate(
                [
                    dc * g * i * (1.0 - i),
                    dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - g * g),
                    dh * tanh_c * o * (1.0 - o),
                ],
                axis=1,
            )
            if valid is None:
                return (da @ Wh.T, dc * f), da
            skip = (jnp.where(valid, 0, dh_next), jnp.where(valid, 0, dc_next))
            return (da @ Wh.T + skip[0], dc * f + skip[1]), da

        zeros = jnp.zeros_like(cache["h0"])
        xs = (
            jnp.swapaxes(dy, 0, 1),
            cache["gates"],
            cache["c_prev"],
            cache["tanh_c"],
            cache.get("steps"),
        )
        (dh0, dc0), da = lax.scan(step, (zeros, zeros), xs, reverse=True)
        dWx, dx = _input_grads(cache["x"], params["Wx"], da)
        grads = {
            "Wx": dWx,
            "Wh": _recurrent_grads(_shift(cache["h0"], cache["hs"]), da),
            "b": jnp.sum(da, axis=(0, 1)),
        }
        return grads, ((dx, (dh0, dc0)) if "given" in cache else dx)

    # Per example: the cache (inputs, gates, states, the mask) is each
    # example's own, so the batch-of-one BPTT, vmapped, is exact.
    return make_layer(
        init,
        forward,
        backward,
        name=f"lstm({h})",
        per_example=_rules.per_example_from_backward(backward, _time_major),
    )


# ------------------------------------------------------------------------ gru


def gru(hidden_size: int) -> Layer:
    """Gated recurrent unit (Cho et al. 2014) in `torch.nn.GRU`'s form.

    Forward, with `h_0 = 0` unless given; column blocks r, z, n of `h`
    each:

    ```text
    gx = x_t Wx + bx = [gx_r, gx_z, gx_n],   gh = h_{t-1} Wh + bh = [gh_r, gh_z, gh_n]
    r = sigma(gx_r + gh_r),   z = sigma(gx_z + gh_z)
    n = tanh(gx_n + r * gh_n)
    h_t = (1 - z) * n + z * h_{t-1}
    ```

    The reset gate multiplies `gh_n = h_{t-1} Wh_n + bh_n` *including its
    bias*, as PyTorch (and cuDNN) do, not `h_{t-1}` before the product as in
    Cho et al.'s paper; that is why the two biases are kept apart. Params
    `{"Wx": (d, 3h), "Wh": (h, 3h), "bx": (3h,), "bh": (3h,)}`. The cache
    holds, per step and example, `[r, z]` (2h), `n` and `gh_n` (h each)
    besides `h_t` (the output): `5h` numbers, and the input.

    Backward, reverse in time, `dh` arriving from step `t+1`:

    ```text
    dh   = dy_t + dJ/dh_t from step t+1
    dn   = dh * (1 - z),     dz = dh * (h_{t-1} - n)
    da_n = dn * (1 - n**2)                           (pre-activation of n)
    da_r = da_n * gh_n * r (1 - r),   da_z = dz * z (1 - z)
    dgx  = [da_r, da_z, da_n],        dgh = [da_r, da_z, da_n * r]
    dJ/dh_{t-1} = dh * z + dgh Wh^T
    ```

    and `dWx = sum x_t^T dgx`, `dbx = sum dgx`, `dWh = sum h_{t-1}^T dgh`,
    `dbh = sum dgh`, `dx_t = dgx Wx^T`, all after the scan. With a mask
    (module docstring), a masked step keeps `h_t = h_{t-1}`, has zero
    `dgx`, `dgh` and passes `dh` on to step `t-1` unchanged.

    Args:
      hidden_size: `h`, the number of hidden units.
    """
    h = _checks.positive_int("hidden_size", hidden_size)

    def init(key, in_shape, dtype=jnp.float32):
        T, d = _sequence_shape(in_shape, "gru")
        k = jax.random.split(key, 4)
        bound = 1.0 / math.sqrt(h)
        params = {
            "Wx": _uniform(k[0], (d, 3 * h), bound, dtype),
            "Wh": _uniform(k[1], (h, 3 * h), bound, dtype),
            "bx": _uniform(k[2], (3 * h,), bound, dtype),
            "bh": _uniform(k[3], (3 * h,), bound, dtype),
        }
        return (T, h), params, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        Wx, Wh, bh = params["Wx"], params["Wh"], params["bh"]
        x, (h0,), given = _split_input(x, Wx.shape[0], h, 1, "gru")
        mask = _check_mask(mask, x, "gru")
        x, steps = _masked_input(x, mask)

        def step(h_prev, inputs):
            gx, valid = inputs
            gh = h_prev @ Wh + bh
            rz = _sigmoid(gx[:, : 2 * h] + gh[:, : 2 * h])
            r, z = rz[:, :h], rz[:, h:]
            gh_n = gh[:, 2 * h :]
            n = jnp.tanh(gx[:, 2 * h :] + r * gh_n)
            h_t = n + z * (h_prev - n)
            if valid is not None:
                h_t = jnp.where(valid, h_t, h_prev)
            return h_t, (h_t, rz, n, gh_n)

        _, (hs, rz, n, gh_n) = lax.scan(step, h0, (_project(x, Wx, params["bx"]), steps))
        cache = {"x": x, "h0": h0, "hs": hs, "rz": rz, "n": n, "gh_n": gh_n}
        if given:
            cache["given"] = ()
        if mask is not None:
            cache["steps"] = steps
        return _masked_output(hs, mask), cache

    def backward(params, cache, dy):
        Wh = params["Wh"]
        h_prev = _shift(cache["h0"], cache["hs"])

        def step(dh_next, inputs):
            dy_t, h_prev_t, rz, n, gh_n, valid = inputs
            r, z = rz[:, :h], rz[:, h:]
            dh = dy_t + dh_next
            if valid is not None:
                dh = jnp.where(valid, dh, 0)
            da_n = dh * (1.0 - z) * (1.0 - n * n)
            da_rz = jnp.concatenate(
                [da_n * gh_n * r * (1.0 - r), dh * (h_prev_t - n) * z * (1.0 - z)], axis=1
            )
            dgh = jnp.concatenate([da_rz, da_n * r], axis=1)
            dh_prev = dh * z + dgh @ Wh.T
            if valid is not None:
                dh_prev = dh_prev + jnp.where(valid, 0, dh_next)
            return dh_prev, (jnp.concatenate([da_rz, da_n], axis=1), dgh)

        xs = (
            jnp.swapaxes(dy, 0, 1),
            h_prev,
            cache["rz"],
            cache["n"],
            cache["gh_n"],
            cache.get("steps"),
        )
        dh0, (dgx, dgh) = lax.scan(step, jnp.zeros_like(cache["h0"]), xs, reverse=True)
        dWx, dx = _input_grads(cache["x"], params["Wx"], dgx)
        grads = {
            "Wx": dWx,
            "Wh": _recurrent_grads(h_prev, dgh),
            "bx": jnp.sum(dgx, axis=(0, 1)),
            "bh": jnp.sum(dgh, axis=(0, 1)),
        }
        return grads, ((dx, dh0) if "given" in cache else dx)

    # Per example: the cache (inputs, gates, states, the mask) is each
    # example's own, so the batch-of-one BPTT, vmapped, is exact.
    return make_layer(
        init,
        forward,
        backward,
        name=f"gru({h})",
        per_example=_rules.per_example_from_backward(backward, _time_major),
    )


# ------------------------------------------------------------------ last_step


def last_step() -> Layer:
    """The last time step: `(m, T, ...) -> (m, ...)`, `y = x[:, -1]`.

    With a padding mask (bool `(m, T)`, True at valid steps) each row's last
    *valid* step, `y_i = x[i, l_i]` with `l_i = max{t : mask[i, t]}`, so that
    a sequence padded last gives its own last output; a row with no valid
    step gives zeros (and receives no gradient).

    Backward: `dx` is zero at every step but the last (valid) one, which
    receives `dy`.
    """

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 2:
            _checks.fail("in_shape", "a sequence shape (T, features) for last_step", repr(in_shape))
        return in_shape[1:], (), ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not hasattr(x, "shape") or jnp.ndim(x) < 3 or x.shape[1] < 1:
            _checks.fail(
                "x",
                "a batch of sequences of shape (m, T, features), T >= 1, for last_step",
                f"shape {tuple(jnp.shape(x))}",
            )
        mask = _check_mask(mask, x, "last_step")
        if mask is None:
            return x[:, -1], Static(tuple(x.shape))
        # The last True of each row: the first True of the reversed row.
        last = x.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
        valid = jnp.any(mask, axis=1).reshape((-1,) + (1,) * (x.ndim - 2))
        y = jnp.where(valid, x[jnp.arange(x.shape[0]), last], 0)
        return y, {"shape": Static(tuple(x.shape)), "last": last, "valid": valid}

    def backward(params, cache, dy):
        if isinstance(cache, Static):
            return (), jnp.zeros(cache.value, dy.dtype).at[:, -1].set(dy)
        dx = jnp.zeros(cache["shape"].value, dy.dtype)
        rows = jnp.arange(dx.shape[0])
        return (), dx.at[rows, cache["last"]].set(jnp.where(cache["valid"], dy, 0))

    return make_layer(init, forward, backward, name="last_step")


# -------------------------------------------------------------- bidirectional


def bidirectional(layer: Layer) -> Layer:
    """`layer` run over the sequence forwards and, with its own parameters,
    backwards; the outputs are concatenated on the last axis (Schuster &
    Paliwal 1997; `torch.nn.GRU(bidirectional=True)`'s layout).

    `y[:, t] = [y_fwd[:, t], y_bwd[:, t]]` where `y_bwd` is the layer's
    output on the time-reversed input, reversed back, so that both halves of
    step `t` belong to input step `t`. Params and state are dicts
    `{"forward": ..., "backward": ...}` (from PyTorch: the `_reverse`
    weights go to `"backward"`). Initial states are given as
    `(x, (initial_fwd, initial_bwd))`; the backward then returns
    `(dx, (d_initial_fwd, d_initial_bwd))`.

    With a padding mask the reverse direction gets the reversed mask: for
    [`rnn`][purenet.layers.recurrent.rnn], [`lstm`][purenet.layers.recurrent.lstm]
    and [`gru`][purenet.layers.recurrent.gru] (which carry their state through
    masked steps) it starts at each sequence's last valid step, so a padded
    sequence's outputs at its valid steps are those of the cut sequence in
    both directions.

    Backward: each direction's backward on its half of `dy` (the reversed
    half reversed again); `dx` is the sum of the two directions'
    `dx` (one input feeds two paths).
    """
    if not isinstance(layer, Layer):
        _checks.fail_type(
            "layer", "a purenet Layer (e.g. purenet.layers.gru(6))", type(layer).__name__
        )

    def init(key, in_shape, dtype=jnp.float32):
        k_f, k_b = jax.random.split(key)
        with within("bidirectional[forward]", layer):
            shape_f, p_f, s_f = layer.init(k_f, in_shape, dtype)
        with within("bidirectional[backward]", layer):
            shape_b, p_b, s_b = layer.init(k_b, in_shape, dtype)
        state = () if s_f == () and s_b == () else {"forward": s_f, "backward": s_b}
        out = tuple(shape_f[:-1]) + (shape_f[-1] + shape_b[-1],)
        return out, {"forward": p_f, "backward": p_b}, state

    def _states(state):
        return ((), ()) if state == () else (state["forward"], state["backward"])

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not isinstance(params, dict) or set(params) != {"forward", "backward"}:
            _checks.fail(
                "params",
                "a dict {'forward': ..., 'backward': ...} for bidirectional",
                type(params).__name__,
            )
        given = isinstance(x, tuple | list)
        if given:
            if len(x) != 2 or not isinstance(x[1], tuple | list) or len(x[1]) != 2:
                _checks.fail(
                    "x", "x or (x, (initial_fwd, initial_bwd)) for bidirectional", type(x).__name__
                )
            x, (init_f, init_b) = x
        check_rank(x, 3, "bidirectional", "(m, T, d)")
        mask = _check_mask(mask, x, "bidirectional")
        mask_rev = None if mask is None else jnp.flip(mask, axis=1)
        x_rev = jnp.flip(x, axis=1)
        s_f, s_b = _states(state)
        k_f, k_b = split_key(key, 2)
        with within("bidirectional[forward]", layer):
            y_f, c_f = call_forward(
                layer,
                params["forward"],
                (x, init_f) if given else x,
                state=s_f,
                train=train,
                key=k_f,
                mask=mask,
            )
        with within("bidirectional[backward]", layer):
            y_b, c_b = call_forward(
                layer,
                params["backward"],
                (x_rev, init_b) if given else x_rev,
                state=s_b,
                train=train,
                key=k_b,
                mask=mask_rev,
            )
        y = jnp.concatenate([y_f, jnp.flip(y_b, axis=1)], axis=-1)
        return y, {"forward": c_f, "backward": c_b, "split": Static(int(y_f.shape[-1]))}

    def each_direction(of):
        """The backward (or a per-example rule, `of`) of both directions: the
        reverse direction's `dy` flipped back in time, its `dx` flipped again."""

        def apply(params, cache, dy):
            cut = cache["split"].value
            with within("bidirectional[forward]", layer):
                g_f, dx_f = of(layer, params["forward"], cache["forward"], dy[..., :cut])
            with within("bidirectional[backward]", layer):
                g_b, dx_b = of(
                    layer, params["backward"], cache["backward"], jnp.flip(dy[..., cut:], axis=1)
                )
            grads = {"forward": g_f, "backward": g_b}
            if isinstance(dx_f, tuple):  # initial states were given
                return grads, (dx_f[0] + jnp.flip(dx_b[0], axis=1), (dx_f[1], dx_b[1]))
            return grads, dx_f + jnp.flip(dx_b, axis=1)

        return apply

    backward = each_direction(lambda layer, p, c, dy: layer.backward(p, c, dy))

    def update_state(state, cache):
        if state == ():
            return state
        return {
            "forward": layer.update_state(state["forward"], cache["forward"]),
            "backward": layer.update_state(state["backward"], cache["backward"]),
        }

    return make_layer(
        init,
        forward,
        backward,
        update_state,
        name="bidirectional",
        children=(("forward", layer), ("backward", layer)),
        per_example=each_direction(_rules.layer_grads),
        sq_norms=each_direction(_rules.layer_sq_norms),
    )


# ------------------------------------------------------------------ embedding


def embedding(vocab_size: int, dim: int) -> Layer:
    """A lookup table: integer ids `(m, T)` (any shape `(m, ...)`) to
    vectors `(m, T, dim)`, `y[..., :] = W[x[...]]` (`torch.nn.Embedding`).

    Params `{"W": (vocab_size, dim)}`, initialised `N(0, 1)` as PyTorch
    does. Equivalent to `one_hot(x) @ W` without building the one-hot rows.

    Backward: `dW[v] = sum of dy over the positions whose id is v` (a
    scatter-add, `one_hot(x)^T dy`). Ids are not differentiable; the
    backward returns zeros of the ids' shape (in `W`'s dtype) as `dx`:
    the lookup is locally constant in its index, so zero is its derivative,
    and a zero array composes with every combinator (`serial` discards the
    first layer's `dx`; under `jit` XLA removes it).

    Ids must be integers in `[0, vocab_size)`. Both are checked eagerly
    (the range only on concrete arrays). Under `jit` the values cannot be
    checked: an out-of-range id is then clamped to `[0, vocab_size - 1]`
    (a negative id reads row 0, not row `-1` as NumPy indexing would),
    and the backward adds its gradient to that same clamped row.

    Args:
      vocab_size: the number of distinct ids.
      dim: the length of each vector.
    """
    vocab_size = _checks.positive_int("vocab_size", vocab_size)
    dim = _checks.positive_int("dim", dim)

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        return in_shape + (dim,), {"W": jax.random.normal(key, (vocab_size, dim), dtype)}, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        if not hasattr(x, "shape") or jnp.ndim(x) < 1:
            _checks.fail(
                "x",
                "a batch of integer ids of shape (m, T) for embedding",
                type(x).__name__ if not hasattr(x, "shape") else f"shape {x.shape}",
            )
        if not jnp.issubdtype(x.dtype, jnp.integer):
            _checks.fail("x", "integer ids for embedding", f"dtype {x.dtype}")
        if _checks.is_concrete(x):
            ids = np.asarray(x)
            if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
                bad = ids[(ids < 0) | (ids >= vocab_size)][0]
                _checks.fail("x", f"ids in [0, {vocab_size}) for embedding", f"id {bad}")
        ids = jnp.clip(x, 0, vocab_size - 1)
        return params["W"][ids], ids

    def backward(params, cache, dy):
        ids = cache
        W = params["W"]
        dW = jnp.zeros_like(W).at[ids.reshape(-1)].add(dy.reshape(-1, W.shape[1]))
        return {"W": dW}, jnp.zeros(ids.shape, W.dtype)

    return make_layer(
        init,
        forward,
        backward,
        name=f"embedding({vocab_size}, {dim})",
        per_example=_rules.embedding_per_example,
        sq_norms=_rules.embedding_sq_norms,
    )
