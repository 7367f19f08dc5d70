"""Layers: ``(init, forward, backward)`` triples of pure functions.

This is ``jax.example_libraries.stax`` with a third function, the backward
pass written by hand (the cs231n / *Deep Learning from Scratch* layer shape)::

    init(key, in_shape, dtype=float32) -> (out_shape, params)
    forward(params, x, *, train=False, key=None) -> (y, cache)
    backward(params, cache, dy) -> (dparams, dx)

Shapes exclude the batch dimension (``model.init(key, (784,))``); batches are
rows, ``x`` has shape ``(m, features)``. ``dparams`` has the structure of
``params``; parameter-free layers have ``params == ()``. A plain
``forward(params, x)`` is evaluation mode; ``train=True`` switches dropout and
batch norm to training behaviour, and dropout then needs ``key``.

**Non-gradient state (batch norm's running statistics).** It lives in the
params (``"mean"``, ``"var"``) with an exactly zero gradient, and a fourth
function, ``update_state(params, cache) -> params``, returns params whose state
entries are replaced from a training-mode forward's cache. The training step
applies it after the optimizer step, so nothing is ever mutated in place and
models without batch norm never see it (``update_state`` is the identity for
every other layer). ``backprop(model, loss)(params, x, t)`` stays ``(J, grads)``.

Nothing in this module calls ``jax.grad``, ``jax.vjp`` or ``jax.jvp``: every
backward is the chain rule written out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet import activations as act
from purenet.params import get_initializer, zeros


def _keep_params(params, cache):
    return params


class Layer(NamedTuple):
    """A layer: ``init``, ``forward``, ``backward`` and ``update_state`` (identity
    for every layer without non-gradient state)."""

    init: Callable
    forward: Callable
    backward: Callable
    update_state: Callable = _keep_params


def _features(in_shape, layer: str) -> int:
    """The feature count of a 1-D ``in_shape`` (an int is accepted for it)."""
    if isinstance(in_shape, int) and not isinstance(in_shape, bool):
        in_shape = (in_shape,)
    if not isinstance(in_shape, tuple) or len(in_shape) != 1:
        _checks.fail("in_shape", f"a 1-tuple (features,) for {layer}", repr(in_shape))
    return _checks.positive_int("in_shape[0]", in_shape[0])


def _check_input(x, features: int, layer: str):
    if jnp.ndim(x) != 2 or x.shape[1] != features:
        _checks.fail(
            "x", f"a batch of shape (m, {features}) for {layer}", f"shape {tuple(jnp.shape(x))}"
        )


# ------------------------------------------------------------------------- dense


def dense(n: int, W_init="xavier_uniform", b_init=None) -> Layer:
    """Fully connected (affine) layer: ``y = x @ W + b``.

    Args:
      n: number of output units.
      W_init: initialiser for ``W`` of shape ``(n_in, n)``: a name from
        ``purenet.params.INITIALIZERS`` or a function ``(key, shape, dtype)``.
        The default, Glorot uniform, is the course's ``epsilon_init``.
      b_init: initialiser for ``b`` (default zeros).

    Backward (Saito ch. 5.6.2; Rumelhart et al. 1986 eqs. 5-7):
    ``dW = x^T dy``, ``db = sum_rows dy``, ``dx = dy W^T``.
    """
    n = _checks.positive_int("n", n)
    W_init = get_initializer(W_init)
    b_init = zeros() if b_init is None else get_initializer(b_init)

    def init(key, in_shape, dtype=jnp.float32):
        n_in = _features(in_shape, "dense")
        k_W, k_b = jax.random.split(key)
        return (n,), {"W": W_init(k_W, (n_in, n), dtype), "b": b_init(k_b, (n,), dtype)}

    def forward(params, x, *, train=False, key=None):
        W, b = params["W"], params["b"]
        _check_input(x, W.shape[0], f"dense with W of shape {W.shape}")
        return x @ W + b, x

    def backward(params, cache, dy):
        x = cache
        dW = x.T @ dy
        db = jnp.sum(dy, axis=0)
        dx = dy @ params["W"].T
        return {"W": dW, "b": db}, dx

    return Layer(init, forward, backward)


# ------------------------------------------------------------------- activations


def _elementwise(activation: act.Activation) -> Layer:
    """A parameter-free layer applying ``activation`` to every entry."""

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape) if isinstance(in_shape, tuple) else (in_shape,), ()

    def forward(params, x, *, train=False, key=None):
        y = activation.f(x)
        return y, (x, y)

    def backward(params, cache, dy):
        x, y = cache
        return (), dy * activation.df(x, y)

    return Layer(init, forward, backward)


def identity() -> Layer:
    """``y = x``: a linear "activation" (shows the collapse of linear hidden layers)."""
    return _elementwise(act.identity)


def sigmoid() -> Layer:
    """``y = 1 / (1 + exp(-x))``, backward ``dx = dy * y * (1 - y)``."""
    return _elementwise(act.sigmoid)


def tanh() -> Layer:
    """``y = tanh(x)``, backward ``dx = dy * (1 - y**2)``."""
    return _elementwise(act.tanh)


def relu() -> Layer:
    """``y = max(x, 0)``, backward ``dx = dy * [x > 0]``."""
    return _elementwise(act.relu)


def leaky_relu(slope: float = 0.01) -> Layer:
    """``y = x if x > 0 else slope * x``, backward ``dx = dy * (1 or slope)``."""
    return _elementwise(act.leaky_relu_activation(slope))


# ------------------------------------------------------------------------ dropout


def dropout(rate: float) -> Layer:
    """Inverted dropout (Srivastava et al., 2014, as implemented by every modern
    library): in training, each entry is zeroed with probability ``rate`` (the
    *drop* probability, as in ``torch.nn.Dropout``) and the survivors are scaled
    by ``1 / (1 - rate)`` so the expected activation is unchanged; in evaluation
    the layer is the identity.

    Training mode (``train=True``) needs an explicit ``key``: the same key gives
    the same mask. Backward: ``dx = dy * mask / (1 - rate)``.
    """
    rate = _checks.number_in("rate", rate, 0.0, 1.0, high_open=True)
    keep = 1.0 - rate

    def init(key, in_shape, dtype=jnp.float32):
        return tuple(in_shape) if isinstance(in_shape, tuple) else (in_shape,), ()

    def forward(params, x, *, train=False, key=None):
        if not train or rate == 0.0:
            return x, jnp.ones((), x.dtype)
        if key is None:
            raise ValueError("key: dropout in training mode needs a jax.random key, got None")
        scale = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype) / keep
        return x * scale, scale

    def backward(params, cache, dy):
        return (), dy * cache

    return Layer(init, forward, backward)


# -------------------------------------------------------------------- batch norm


def batchnorm(momentum: float = 0.1, eps: float = 1e-5) -> Layer:
    """Batch normalisation (Ioffe & Szegedy, 2015) over the batch axis.

    Training mode normalises with the batch statistics,
    ``xhat = (x - mean) / sqrt(var + eps)`` (biased variance), then
    ``y = gamma * xhat + beta``. Evaluation mode uses the running statistics.

    Running statistics follow ``torch.nn.BatchNorm1d``: ``running = (1 -
    momentum) * running + momentum * batch``, with the *unbiased* batch
    variance. They live in params (``"mean"``, ``"var"``) and get a zero
    gradient; a training-mode forward computes their new values into its
    cache, and ``update_state(params, cache)`` puts them into params (see the
    module docstring).

    Backward in training mode, the simplified form (Kratzert 2016; cs231n):
    ``dx = (1 / m) * inv_std * (m * dxhat - sum dxhat - xhat * sum(dxhat * xhat))``
    with ``dxhat = dy * gamma``; ``dgamma = sum(dy * xhat)``, ``dbeta = sum dy``.
    """
    momentum = _checks.number_in("momentum", momentum, 0.0, 1.0)
    eps = _checks.positive("eps", eps)

    def init(key, in_shape, dtype=jnp.float32):
        n = _features(in_shape, "batchnorm")
        ones, zero = jnp.ones((n,), dtype), jnp.zeros((n,), dtype)
        return (n,), {"gamma": ones, "beta": zero, "mean": zero, "var": ones}

    def forward(params, x, *, train=False, key=None):
        _check_input(x, params["gamma"].shape[0], "batchnorm")
        if train:
            if x.shape[0] < 2:
                _checks.fail("x", "at least 2 rows for batch norm in training mode", x.shape)
            mean = jnp.mean(x, axis=0)
            var = jnp.mean((x - mean) ** 2, axis=0)
        else:
            # Running statistics are constants for differentiation: the backward
            # gives them a zero gradient, and stop_gradient tells jax.grad (the
            # referee of objective()) the same. It is not autodiff of our code.
            mean = jax.lax.stop_gradient(params["mean"])
            var = jax.lax.stop_gradient(params["var"])
        inv_std = 1.0 / jnp.sqrt(var + eps)
        xhat = (x - mean) * inv_std
        cache = {"xhat": xhat, "inv_std": inv_std}
        if train:  # the cache's structure records the mode, statically
            m = x.shape[0]
            unbiased = var * (m / (m - 1))
            cache["running_mean"] = (1 - momentum) * params["mean"] + momentum * mean
            cache["running_var"] = (1 - momentum) * params["var"] + momentum * unbiased
        return params["gamma"] * xhat + params["beta"], cache

    def backward(params, cache, dy):
        xhat, inv_std = cache["xhat"], cache["inv_std"]
        dgamma = jnp.sum(dy * xhat, axis=0)
        dbeta = jnp.sum(dy, axis=0)
        dxhat = dy * params["gamma"]
        if "running_mean" in cache:
            m = dy.shape[0]
            dx = (inv_std / m) * (
                m * dxhat - jnp.sum(dxhat, axis=0) - xhat * jnp.sum(dxhat * xhat, axis=0)
            )
        else:  # running statistics are constants: the layer is affine
            dx = dxhat * inv_std
        no_grad = jnp.zeros_like(params["mean"])
        return {"gamma": dgamma, "beta": dbeta, "mean": no_grad, "var": no_grad}, dx

    def update_state(params, cache):
        # Replace, not update: the new statistics were computed in the forward
        # from the pre-step params, so whatever an optimizer did to these
        # leaves after the forward (AdamW's decay, say) is discarded.
        if "running_mean" not in cache:
            return params
        return {**params, "mean": cache["running_mean"], "var": cache["running_var"]}

    return Layer(init, forward, backward, update_state)


# ------------------------------------------------------------------------- serial


def serial(*layers: Layer) -> Layer:
    """Compose layers in order; params and caches are tuples, one entry per layer.

    The backward runs the layers' backwards in reverse, passing each one's
    ``dx`` as the previous layer's ``dy``: the chain rule of Rumelhart et al.
    (1986, eq. 7), one layer at a time.
    """
    if not layers:
        raise ValueError("layers: expected at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            _checks.fail(f"layers[{i}]", "a purenet Layer", type(layer).__name__)

    def init(key, in_shape, dtype=jnp.float32):
        params = []
        shape = in_shape
        for layer, k in zip(layers, jax.random.split(key, len(layers)), strict=True):
            shape, p = layer.init(k, shape, dtype)
            params.append(p)
        return shape, tuple(params)

    def forward(params, x, *, train=False, key=None):
        _check_params(params)
        keys = [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))
        caches = []
        for layer, p, k in zip(layers, params, keys, strict=True):
            x, cache = layer.forward(p, x, train=train, key=k)
            caches.append(cache)
        return x, tuple(caches)

    def backward(params, cache, dy):
        grads = [None] * len(layers)
        for i in reversed(range(len(layers))):
            grads[i], dy = layers[i].backward(params[i], cache[i], dy)
        return tuple(grads), dy

    def update_state(params, cache):
        return tuple(
            layer.update_state(p, c) for layer, p, c in zip(layers, params, cache, strict=True)
        )

    def _check_params(params):
        if not isinstance(params, tuple | list) or len(params) != len(layers):
            got = (
                f"{type(params).__name__} of length {len(params)}"
                if hasattr(params, "__len__")
                else type(params).__name__
            )
            _checks.fail("params", f"a tuple with one entry per layer ({len(layers)})", got)

    return Layer(init, forward, backward, update_state)


def num_params(params) -> int:
    """Total number of scalar parameters in a params tree."""
    return sum(int(jnp.size(leaf)) for leaf in jax.tree.leaves(params))
