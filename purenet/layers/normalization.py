"""Normalisation layers: batch norm, with its running statistics as state.

`batchnorm` normalises over every axis but the last, so it is per feature
for `(m, features)` and per channel for convolutional feature maps
`(m, H, W, C)` (Ioffe & Szegedy 2015, section 3.2: "we jointly normalize all
the activations in a mini-batch, over all locations").
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from purenet import _checks
from purenet.layers.core import Layer, as_shape, make_layer


def batchnorm(momentum: float = 0.1, eps: float = 1e-5) -> Layer:
    """Batch normalisation (Ioffe & Szegedy, 2015) over every axis but the last.

    Training mode normalises with the batch statistics over the `N` entries
    of each channel (`N = m` for `(m, C)`, `m * H * W` for images),
    `xhat = (x - mean) / sqrt(var + eps)` (biased variance), then
    `y = gamma * xhat + beta`. Evaluation mode uses the running statistics
    in `state`, which it therefore needs.

    Params `{"gamma", "beta"}` of shape `(C,)` are trained; state
    `{"mean", "var"}` is not (`ravel`, optimizers and gradient checks never
    see it). `update_state(state, cache)` follows `torch.nn.BatchNorm`:
    `running = (1 - momentum) * running + momentum * batch`, with the
    *unbiased* batch variance (`N / (N - 1)`).

    Backward in training mode, the simplified form (Kratzert 2016; cs231n)
    with `dxhat = dy * gamma` and sums over the `N` entries of a channel:
    `dx = (1 / N) * inv_std * (N * dxhat - sum dxhat - xhat * sum(dxhat * xhat))`;
    `dgamma = sum(dy * xhat)`, `dbeta = sum dy`. In evaluation mode the
    layer is affine: `dx = dxhat * inv_std`.
    """
    momentum = _checks.number_in("momentum", momentum, 0.0, 1.0)
    eps = _checks.positive("eps", eps)

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        c = in_shape[-1]
        ones, zero = jnp.ones((c,), dtype), jnp.zeros((c,), dtype)
        return in_shape, {"gamma": ones, "beta": zero}, {"mean": zero, "var": ones}

    # no mask: training statistics would count padded positions, so a mask is refused
    def forward(params, x, *, state=(), train=False):
        c = params["gamma"].shape[0]
        if not hasattr(x, "shape") or jnp.ndim(x) < 2 or x.shape[-1] != c:
            _checks.fail(
                "x", f"a batch of shape (m, ..., {c}) for batchnorm", f"shape {tuple(jnp.shape(x))}"
            )
        axes = tuple(range(x.ndim - 1))
        if train:
            n = math.prod(x.shape[:-1])
            if n < 2:
                _checks.fail(
                    "x",
                    "at least 2 entries per channel for batch norm in training mode",
                    f"shape {x.shape}",
                )
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean((x - mean) ** 2, axis=axes)
        else:
            if not isinstance(state, dict) or set(state) != {"mean", "var"}:
                _checks.fail(
                    "state",
                    "batchnorm's running statistics {'mean', 'var'} in "
                    "evaluation mode (the state returned by init)",
                    repr(state),
                )
            mean, var = state["mean"], state["var"]
        inv_std = 1.0 / jnp.sqrt(var + eps)
        xhat = (x - mean) * inv_std
        cache = {"xhat": xhat, "inv_std": inv_std}
        if train:  # the cache's structure records the mode, statically
            cache["batch_mean"] = mean
            cache["batch_var"] = var * (n / (n - 1))
        return params["gamma"] * xhat + params["beta"], cache

    def backward(params, cache, dy):
        xhat, inv_std = cache["xhat"], cache["inv_std"]
        axes = tuple(range(dy.ndim - 1))
        dgamma = jnp.sum(dy * xhat, axis=axes)
        dbeta = jnp.sum(dy, axis=axes)
        dxhat = dy * params["gamma"]
        if "batch_mean" in cache:
            n = math.prod(dy.shape[:-1])
            dx = (inv_std / n) * (
                n * dxhat - jnp.sum(dxhat, axis=axes) - xhat * jnp.sum(dxhat * xhat, axis=axes)
            )
        else:  # running statistics are constants: the layer is affine
            dx = dxhat * inv_std
        return {"gamma": dgamma, "beta": dbeta}, dx

    def update_state(state, cache):
        if "batch_mean" not in cache:
            return state
        if not isinstance(state, dict) or set(state) != {"mean", "var"}:
            _checks.fail("state", "batchnorm's running statistics {'mean', 'var'}", repr(state))
        return {
            "mean": (1 - momentum) * state["mean"] + momentum * cache["batch_mean"],
            "var": (1 - momentum) * state["var"] + momentum * cache["batch_var"],
        }

    def per_example(params, cache, dy):
        if "batch_mean" in cache:
            raise ValueError(
                "per-example gradients: batch norm in training mode couples the examples "
                "through the batch statistics (each example's output depends on every "
                "other example), so there is no per-example gradient; use evaluation mode "
                "(train=False, with the running statistics in state) or layer_norm"
            )
        xhat, inv_std = cache["xhat"], cache["inv_std"]
        within = tuple(range(1, dy.ndim - 1))  # an example's own positions
        grads = {"gamma": jnp.sum(dy * xhat, axis=within), "beta": jnp.sum(dy, axis=within)}
        return grads, dy * params["gamma"] * inv_std

    return make_layer(
        init, forward, backward, update_state, name="batchnorm", per_example=per_example
    )


def layer_norm(eps: float = 1e-5) -> Layer:
    """Layer normalisation (Ba, Kiros & Hinton 2016) over the last axis, as
    `torch.nn.LayerNorm(features)`.

    Each example (each time step of a sequence) is normalised over its `D`
    features, with no batch statistics, which is what makes it usable inside
    recurrent networks where batch norm is awkward:

    ```text
    mean = (1/D) sum_j x_j,   var = (1/D) sum_j (x_j - mean)**2   (biased)
    xhat = (x - mean) / sqrt(var + eps),   y = gamma * xhat + beta
    ```

    Params `{"gamma": ones (D,), "beta": zeros (D,)}`; no state. A constant
    row gives `var = 0`, `xhat = 0` and `y = beta`: `eps > 0` keeps
    it finite, in both passes.

    Backward: batch norm's formula with the sums taken over the features of
    one row instead of over the batch, `dxhat = dy * gamma`:

    ```text
    dx = (inv_std / D) * (D * dxhat - sum_j dxhat_j - xhat * sum_j dxhat_j xhat_j)
    dgamma = sum over rows of dy * xhat,   dbeta = sum over rows of dy
    ```

    Args:
      eps: added to the variance (PyTorch's default `1e-5`).
    """
    eps = _checks.positive("eps", eps)

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        d = in_shape[-1]
        return in_shape, {"gamma": jnp.ones((d,), dtype), "beta": jnp.zeros((d,), dtype)}, ()

    def forward(params, x, *, mask=None):  # each position on its own: a mask changes nothing
        d = params["gamma"].shape[0]
        if not hasattr(x, "shape") or jnp.ndim(x) < 2 or x.shape[-1] != d:
            _checks.fail(
                "x",
                f"a batch of shape (m, ..., {d}) for layer_norm",
                f"shape {tuple(jnp.shape(x))}",
            )
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)
        inv_std = 1.0 / jnp.sqrt(var + eps)
        xhat = centred * inv_std
        return params["gamma"] * xhat + params["beta"], (xhat, inv_std)

    def backward(params, cache, dy):
        xhat, inv_std = cache
        d = xhat.shape[-1]
        rows = tuple(range(dy.ndim - 1))
        dxhat = dy * params["gamma"]
        dx = (inv_std / d) * (
            d * dxhat
            - jnp.sum(dxhat, axis=-1, keepdims=True)
            - xhat * jnp.sum(dxhat * xhat, axis=-1, keepdims=True)
        )
        return {"gamma": jnp.sum(dy * xhat, axis=rows), "beta": jnp.sum(dy, axis=rows)}, dx

    def per_example(params, cache, dy):
        xhat, _ = cache
        within = tuple(range(1, dy.ndim - 1))  # an example's own rows (its time steps)
        grads = {"gamma": jnp.sum(dy * xhat, axis=within), "beta": jnp.sum(dy, axis=within)}
        return grads, backward(params, cache, dy)[1]

    return make_layer(init, forward, backward, name="layer_norm", per_example=per_example)
