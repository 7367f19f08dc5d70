"""Inverted dropout (Srivastava et al., 2014), on inputs of any shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from purenet import _checks
from purenet.layers.core import Layer, as_shape, make_layer


def dropout(rate: float) -> Layer:
    """Inverted dropout, as implemented by every modern library: in training,
    each entry is zeroed with probability `rate` (the *drop* probability, as
    in `torch.nn.Dropout`) and the survivors are scaled by `1 / (1 - rate)`
    so the expected activation is unchanged; in evaluation the layer is the
    identity.

    Training mode (`train=True`) needs an explicit `key`: the same key gives
    the same mask. Backward: `dx = dy * mask / (1 - rate)`.
    """
    rate = _checks.number_in("rate", rate, 0.0, 1.0, high_open=True)
    keep = 1.0 - rate

    def init(key, in_shape, dtype=jnp.float32):
        return as_shape(in_shape), (), ()

    # mask: taken and ignored (each entry is dropped on its own)
    def forward(params, x, *, train=False, key=None, mask=None):
        if not train or rate == 0.0:
            return x, jnp.ones((), x.dtype)
        if key is None:
            _checks.fail("key", "a jax.random key for dropout in training mode", None)
        scale = jax.random.bernoulli(key, keep, x.shape).astype(x.dtype) / keep
        return x * scale, scale

    def backward(params, cache, dy):
        return (), dy * cache

    return make_layer(init, forward, backward, name=f"dropout({rate})")
