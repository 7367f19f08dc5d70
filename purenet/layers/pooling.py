"""Pooling layers with hand-written backward: max, average and global average.

Channels-last like [`purenet.layers.conv`][purenet.layers.conv], whose window geometry they
share (`window` plays `kernel_size`, dilation is 1; `padding` is
`"VALID"`, `"SAME"` with XLA's rule, an int or `(low, high)` pairs).
The stride defaults to the window: non-overlapping pooling, as in LeNet and
Saito ch. 7.3. Explicit padding must be smaller than the window on each side
(as `torch` requires), so that every window holds at least one input.

**Backward.** A pooling window reads a patch of the input; writing
`patches(x)[n, o, k, c] = x_pad[n, o s + k, c]` (every window's entries, the
`im2col` of [`purenet.layers.conv`][purenet.layers.conv] without flattening), each layer is a
function of the patches applied per window, and its backward is

    dx = unpatches(d patches) = the adjoint of `patches`,

which adds each window's gradient back where its entries came from (inputs
shared by overlapping windows collect several contributions) and crops the
padding:

* max pooling, `y = max_k patches[k]`: the whole `dy` goes to the entry
  that is the maximum, `d patches[k] = dy * [k == k*]` (the subgradient of
  `max` that puts all weight on one winner; Saito ch. 7.5, cs231n).
  **Ties**: `k*` is the *first* maximum in row-major window order
  (`jnp.argmax`). This is the rule of `jax.grad`: the derivative of
  `lax.reduce_window` max is XLA's `select_and_scatter_add` with the
  select function `>=`, which walks the window in row-major order and keeps
  the current pick when the next element is not larger, so the earliest of
  equal maxima wins (verified in the tests on windows of equal values).
  `torch` also picks one element, but its choice among ties is not
  specified. Padding is `-inf`: it never wins unless a window holds only
  padding, and then its gradient is cropped away.
* average pooling, `y = (1 / count) sum_k patches[k]`: every entry of the
  window receives `dy / count`.

**Padding convention of average pooling.** `count_include_pad=True` (the
default, as `torch.nn.AvgPool2d` and `flax.linen.avg_pool`) divides
every window by the full window size, padding zeros included;
`count_include_pad=False` divides by the number of real inputs in the
window (TensorFlow's `"SAME"` average pooling), which keeps a constant
image constant at the border.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from purenet import _checks
from purenet.layers.conv import geometry, int_tuple, padding_spec, patches, unpatches
from purenet.layers.core import Layer, as_shape, check_rank, make_layer


def _layout(n):
    return "(m, L, C)" if n == 1 else "(m, H, W, C)"


def _counts(spatial, window, stride, pads, out):
    """Real (not padding) inputs in each window, `(*O,)`, from the geometry
    alone (a separable product of per-axis counts)."""
    counts = np.ones(out)
    for axis, (size, w, s, (lo, _), o) in enumerate(
        zip(spatial, window, stride, pads, out, strict=True)
    ):
        start = np.arange(o) * s - lo
        per_axis = np.minimum(start + w, size) - np.maximum(start, 0)
        shape = [1] * len(out)
        shape[axis] = o
        counts = counts * per_axis.reshape(shape)
    return counts


def _pool_layer(n, name, kind, window, stride, padding, count_include_pad=True) -> Layer:
    window = int_tuple("window", window, n)
    stride = window if stride is None else int_tuple("stride", stride, n)
    padding = padding_spec(padding, n)
    ones = (1,) * n
    layout = _layout(n)

    if not isinstance(padding, str):
        for axis, ((lo, hi), w) in enumerate(zip(padding, window, strict=True)):
            if lo >= w or hi >= w:  # else a window could hold padding only
                _checks.fail(
                    "padding",
                    f"less than the window ({w}) on each side along spatial axis {axis}",
                    f"({lo}, {hi})",
                )

    def shape_of(spatial):
        return geometry(spatial, window, stride, padding, ones, kernel_name="window")

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        if len(in_shape) != n + 1:
            _checks.fail(
                "in_shape",
                f"{n + 1} axes {layout[4:]} (without the batch) for {name}",
                repr(in_shape),
            )
        _, out = shape_of(in_shape[:-1])
        return (*out, in_shape[-1]), (), ()

    def _reduce(x, pads, init_value, op):
        return lax.reduce_window(
            x,
            np.asarray(init_value, x.dtype),
            op,
            (1, *window, 1),
            (1, *stride, 1),
            ((0, 0), *pads, (0, 0)),
        )

    def _divisor(spatial, pads, out, dtype):
        if count_include_pad:
            return math.prod(window)
        return jnp.asarray(_counts(spatial, window, stride, pads, out), dtype)[..., None]

    # no mask: a window mixes positions, so a padding mask is refused
    def forward(params, x):
        check_rank(x, n + 2, name, layout)
        pads, out = shape_of(x.shape[1:-1])
        # The cache is x (max pooling needs its values, average pooling only
        # its shape, which an array keeps static across a jit boundary).
        if kind == "max":
            return _reduce(x, pads, -np.inf, lax.max), x
        return _reduce(x, pads, 0.0, lax.add) / _divisor(x.shape[1:-1], pads, out, x.dtype), x

    def backward(params, cache, dy):
        shape = cache.shape
        pads, out = shape_of(shape[1:-1])
        m, channels = shape[0], shape[-1]
        if kind == "max":
            fields = patches(cache, window, stride, pads, ones, pad_value=-np.inf)
            fields = fields.reshape(m, *out, -1, channels)
            winner = jnp.argmax(fields, axis=-2)  # the first maximum of each window
            size = fields.shape[-2]
            mask = jnp.arange(size)[:, None] == winner[..., None, :]  # (m, *O, K, C)
            d_fields = jnp.where(mask, dy[..., None, :], 0).astype(dy.dtype)
        else:
            share = dy / _divisor(shape[1:-1], pads, out, dy.dtype)
            d_fields = jnp.broadcast_to(share[..., None, :], (m, *out, math.prod(window), channels))
        d_fields = d_fields.reshape(m, *out, *window, channels)
        return (), unpatches(d_fields, shape, window, stride, pads, ones)

    return make_layer(init, forward, backward, name=name)


def max_pool1d(
    window: int | tuple[int, ...],
    stride: int | tuple[int, ...] | None = None,
    padding: str | tuple = "VALID",
) -> Layer:
    """Max pooling over windows of a signal `(m, L, C)`, per channel.

    Args:
      window: window length (an int or a 1-tuple).
      stride: step between windows (default: `window`, non-overlapping).
      padding: `"VALID"`, `"SAME"`, an int or a `(low, high)` pair;
        padding is `-inf` (never the maximum).

    Backward: `dy` goes to the first maximum of each window (module
    docstring), which is what `jax.grad` does.
    """
    return _pool_layer(1, "max_pool1d", "max", window, stride, padding)


def max_pool2d(
    window: int | tuple[int, ...],
    stride: int | tuple[int, ...] | None = None,
    padding: str | tuple = "VALID",
) -> Layer:
    """Max pooling over `(h, w)` windows of images `(m, H, W, C)`, per channel.

    Args:
      window: an int or a pair `(h, w)`.
      stride: an int or a pair (default: `window`, non-overlapping).
      padding: as for `conv2d`; padding is `-inf`.

    Backward: `dy` goes to the first maximum of each window in row-major
    order (module docstring), which is what `jax.grad` does.
    """
    return _pool_layer(2, "max_pool2d", "max", window, stride, padding)


def avg_pool1d(
    window: int | tuple[int, ...],
    stride: int | tuple[int, ...] | None = None,
    padding: str | tuple = "VALID",
    count_include_pad: bool = True,
) -> Layer:
    """Average pooling over windows of a signal `(m, L, C)`, per channel.

    Args:
      window, stride, padding: as for [`max_pool1d`][purenet.layers.pooling.max_pool1d] (padding is
          zeros).
      count_include_pad: divide by the full window (default, as torch and
        flax) or by the number of real inputs in it (module docstring).

    Backward: each entry of a window receives `dy / count`.
    """
    return _pool_layer(1, "avg_pool1d", "avg", window, stride, padding, count_include_pad)


def avg_pool2d(
    window: int | tuple[int, ...],
    stride: int | tuple[int, ...] | None = None,
    padding: str | tuple = "VALID",
    count_include_pad: bool = True,
) -> Layer:
    """Average pooling over `(h, w)` windows of images `(m, H, W, C)`.

    Args:
      window, stride, padding: as for [`max_pool2d`][purenet.layers.pooling.max_pool2d] (padding is
          zeros).
      count_include_pad: divide by the full window (default, as torch and
        flax) or by the number of real inputs in it (module docstring).

    Backward: each entry of a window receives `dy / count`.
    """
    return _pool_layer(2, "avg_pool2d", "avg", window, stride, padding, count_include_pad)


def global_avg_pool() -> Layer:
    """The mean over every spatial axis: `(m, *S, C) -> (m, C)` (Lin et al.
    2014, "Network in Network"). Backward: `dx = dy / prod(S)` at every
    position."""

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        if len(in_shape) < 2:
            _checks.fail(
                "in_shape",
                "(*spatial, C) with at least one spatial axis for global_avg_pool",
                repr(in_shape),
            )
        return (in_shape[-1],), (), ()

    # no mask: the mean mixes positions, so a padding mask is refused
    def forward(params, x):
        if not hasattr(x, "shape") or jnp.ndim(x) < 3:
            _checks.fail(
                "x",
                "a batch (m, *spatial, C) with at least 3 axes for global_avg_pool",
                f"shape {tuple(jnp.shape(x))}",
            )
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), x  # kept for its shape

    def backward(params, cache, dy):
        shape = cache.shape
        count = math.prod(shape[1:-1])
        expanded = dy.reshape(shape[0], *(1,) * (len(shape) - 2), shape[-1])
        return (), jnp.broadcast_to(expanded / count, shape)

    return make_layer(init, forward, backward, name="global_avg_pool")
