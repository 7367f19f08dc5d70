r"""Convolution (cross-correlation) layers with two hand-written backward passes.

Layout is channels-last, as in JAX, Flax and stax: signals `(m, L, C)`,
images `(m, H, W, C)`; kernels are `(k, C_in, C_out)` and
`(kh, kw, C_in, C_out)` (JAX's WIO / HWIO). The layers compute
cross-correlation, as every framework does (and call it convolution). One
n-d implementation serves [`conv1d`][purenet.layers.conv.conv1d] and
[`conv2d`][purenet.layers.conv.conv2d]: everything below is written per spatial axis and holds on
each axis independently.

**Geometry** (one spatial axis; cs231n notes "Convolutional Networks"; Saito,
*Deep Learning from Scratch*, eq. 7.1). Input length `N`, kernel size `K`,
stride `s`, dilation `d`, padding `(p_lo, p_hi)`. The dilated kernel
spans `K_eff = (K - 1) d + 1` input positions; with `P = N + p_lo + p_hi`
the padded length, the output has `O = floor((P - K_eff) / s) + 1`
positions, and `r = (P - K_eff) mod s` padded positions at the end are never
touched by any window (their input rows get a zero gradient). `"SAME"`
follows XLA: `O = ceil(N / s)`, total padding
`max((O - 1) s + K_eff - N, 0)`, `p_lo = total // 2` and any odd one at
the end.

**Forward.** With `x_pad` the zero-padded input,

$$
y[n, o, f] = b[f] + \sum_{k, c} x_{pad}[n, o s + k d, c]\, W[k, c, f].
$$

**Backward, the textbook way: im2col** (Saito ch. 7.4; cs231n assignment 2).
[`im2col`][purenet.layers.conv.im2col] copies every receptive field into one row of a matrix
`X_col` of shape `(m * O, K * C_in)`, so the layer is the matrix product
`Y = X_col W_mat + b` with `W_mat = W.reshape(K * C_in, C_out)`, and the
backward is `dense`'s: `dW_mat = X_col^T dY`, `db = sum_rows dY`,
`dX_col = dY W_mat^T`. `im2col` is a linear map `A` from inputs to
patch matrices; the gradient with respect to `x` of `<X_col, dX_col>` is
`A^T dX_col`: the adjoint [`col2im`][purenet.layers.conv.col2im], which *adds* every entry of every
patch back where it was copied from (an input read by several windows
collects several contributions), then crops the padding. Adjointness,
`<im2col(x), Y> = <x, col2im(Y)>`, is the whole derivation, and the tests
check it.

**Backward, the fast way: two more convolutions**, derived from the forward
sum by collecting, for each input position `i = o s + k d - p_lo`, the
terms it appears in.

* `dx`: `dx[n, i, c] = sum_{o, k : o s + k d - p_lo = i} dy[n, o, f] W[k, c, f]`.
  Put `s - 1` zeros between the entries of `dy` (`lhs_dilation = s`),
  so `dy_dil[o s] = dy[o]`; then `dx[i] = sum_k dy_dil[i + p_lo - k d] W[k]`.
  Substituting `k' = K - 1 - k` turns it into a correlation with the kernel
  flipped in space, its in/out channels swapped, dilated by `d`:

    ```text
    dx = corr(dy, flip(W)^{in<->out}; stride 1, lhs_dilation s, rhs_dilation d,
              padding (K_eff - 1 - p_lo, K_eff - 1 - p_hi + r))
    ```

    (the "full" correlation when `p = 0`; the `+ r` restores the rows the
    forward never reached, as zeros; either padding may be negative, which
    crops). That is the transposed convolution of Dumoulin & Visin (2016, ch. 4).

* `dW`: `dW[k, c, f] = sum_{n, o} x_pad[n, o s + k d, c] dy[n, o, f]`: a
  correlation of `x` with `dy` as the kernel, in which the batch axis is
  contracted (it plays the channel) and `C_in` plays the batch; the kernel
  index `o` moves by `s` (`rhs_dilation = s`) and the output index `k`
  by `d` (window stride `d`); padding `(p_lo, p_hi - r)`.

Both are single `lax.conv_general_dilated` calls
([`conv_backward`][purenet.layers.conv.conv_backward]), as fast as XLA's own gradient.
`db = sum_{n, o} dy[n, o, f]` in both.

Nothing here calls `jax.grad`, `jax.vjp`, `jax.jvp` or
`jax.linear_transpose`: both backward passes are derived above by hand.
"""

from __future__ import annotations

import itertools
import math
import numbers

import jax
import jax.numpy as jnp
from jax import lax

from purenet import _checks
from purenet.layers import per_example_rules as _rules
from purenet.layers.core import Layer, as_shape, check_rank, make_layer
from purenet.params import Initializer, get_initializer, zeros

# Spatial letters for lax's dimension-number strings, by spatial rank.
_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
METHODS = ("lax", "im2col")
"""The two backward passes a conv layer's `method=` chooses from: `"lax"` (two more
convolutions) and `"im2col"` (the textbook matrix products); module docstring."""


# -------------------------------------------------------------- argument parsing


def int_tuple(name: str, value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    """A positive int or a sequence of `n` positive ints, as an `n`-tuple."""
    if isinstance(value, tuple | list):
        if len(value) != n:
            _checks.fail(
                name, f"a positive integer or a tuple of {n} positive integers", repr(value)
            )
        return tuple(_checks.positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))
    return (_checks.positive_int(name, value),) * n


def _padding_amount(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _checks.fail_type(name, "a non-negative integer", f"{type(value).__name__} {value!r}")
    if not isinstance(value, numbers.Integral) or value < 0:
        _checks.fail(name, "a non-negative integer", repr(value))
    return int(value)


def padding_spec(padding: str | tuple, n: int) -> str | tuple[tuple[int, int], ...]:
    """Validate a padding argument; return `"VALID"`, `"SAME"` or `n` pairs.

    Accepted: `"VALID"`, `"SAME"` (either case); an int `p` (`(p, p)`
    on every spatial axis); a sequence of `n` entries, one per spatial axis,
    each an int or a `(low, high)` pair; and, for one spatial axis, a bare
    `(low, high)` pair.
    """
    expected = (
        f"'VALID', 'SAME', a non-negative int or {n} (low, high) pair(s) of non-negative ints"
    )
    if isinstance(padding, str):
        if padding.upper() not in ("VALID", "SAME"):
            _checks.fail("padding", expected, repr(padding))
        return padding.upper()
    if isinstance(padding, numbers.Number):
        p = _padding_amount("padding", padding)
        return ((p, p),) * n
    if not isinstance(padding, tuple | list):
        _checks.fail_type("padding", expected, type(padding).__name__)
    entries = list(padding)
    if n == 1 and len(entries) == 2 and all(isinstance(e, numbers.Number) for e in entries):
        entries = [tuple(entries)]  # one axis: a bare (low, high) pair
    if len(entries) != n:
        _checks.fail("padding", expected, repr(padding))
    pairs = []
    for i, entry in enumerate(entries):
        if isinstance(entry, tuple | list):
            if len(entry) != 2:
                _checks.fail(f"padding[{i}]", "a (low, high) pair", repr(entry))
            pairs.append(tuple(_padding_amount(f"padding[{i}]", e) for e in entry))
        else:
            p = _padding_amount(f"padding[{i}]", entry)
            pairs.append((p, p))
    return tuple(pairs)


def geometry(
    spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: str | tuple,
    dilation: tuple[int, ...],
    *,
    kernel_name: str = "kernel_size",
) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Padding pairs and output size on each spatial axis (module docstring).

    Args:
      spatial: input sizes `N` of the spatial axes.
      kernel, stride, dilation: per-axis ints.
      padding: from [`padding_spec`][purenet.layers.conv.padding_spec].
      kernel_name: the argument named when the window does not fit.

    Returns:
      `(pads, out)`: `n` pairs `(p_lo, p_hi)` and `n` output sizes.
    """
    pads, out = [], []
    for axis, (size, k, s, d) in enumerate(zip(spatial, kernel, stride, dilation, strict=True)):
        k_eff = (k - 1) * d + 1
        if padding == "VALID":
            lo = hi = 0
        elif padding == "SAME":
            total = max((-(-size // s) - 1) * s + k_eff - size, 0)
            lo, hi = total // 2, total - total // 2
        else:
            lo, hi = padding[axis]
        if size + lo + hi < k_eff:
            what = f"dilated to {k_eff}" if d > 1 else f"{k}"
            _checks.fail(
                kernel_name,
                f"a window no larger than the padded input along spatial axis {axis} "
                f"({size} + padding {lo} + {hi} = {size + lo + hi})",
                f"a window of {what}",
            )
        pads.append((lo, hi))
        out.append((size + lo + hi - k_eff) // s + 1)
    return tuple(pads), tuple(out)


def _untouched(size, k, s, d, pad, o):
    """`r`: padded positions after the last window, never read by the forward."""
    return size + pad[0] + pad[1] - ((k - 1) * d + 1) - (o - 1) * s


# ------------------------------------------------------------------- im2col / col2im


def patches(
    x: jax.Array,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    pad_value: float = 0.0,
) -> jax.Array:
    """Every receptive field of `x`: `(m, *S, C) -> (m, *O, *K, C)`.

    `patches(...)[n, o, k, c] = x_pad[n, o s + k d, c]`, built as in Saito's
    `im2col`: one strided slice of the padded input per kernel offset `k`.
    `pad_value` fills the padding (`-inf` for max pooling).
    """
    n = len(kernel)
    m, channels = x.shape[0], x.shape[-1]
    pad_config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
    x_pad = lax.pad(x, jnp.asarray(pad_value, x.dtype), pad_config)
    padded = x_pad.shape[1:-1]
    out = tuple(
        (p - ((k - 1) * d + 1)) // s + 1
        for p, k, s, d in zip(padded, kernel, stride, dilation, strict=True)
    )
    fields = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        start = [0] + [k * d for k, d in zip(offset, dilation, strict=True)] + [0]
        limit = (
            [m]
            + [
                k * d + (o - 1) * s + 1
                for k, d, o, s in zip(offset, dilation, out, stride, strict=True)
            ]
            + [channels]
        )
        fields.append(lax.slice(x_pad, start, limit, (1, *stride, 1)))
    stacked = jnp.stack(fields, axis=1 + n)  # (m, *O, K_1 * ... * K_n, C)
    return stacked.reshape(m, *out, *kernel, channels)


def unpatches(
    fields: jax.Array,
    in_shape: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
) -> jax.Array:
    """The adjoint of [`patches`][purenet.layers.conv.patches]: `(m, *O, *K, C) -> (m, *S, C)`.

    Each patch entry is added back at the input position it was copied from
    (`x_pad[n, o s + k d, c] += fields[n, o, k, c]`), then the padding is
    cropped. Placing the entries of offset `k` is a `lax.pad` of
    `fields[:, ..., k, :]` with `s - 1` zeros between entries and `k d`
    in front: no scatter.
    """
    n = len(kernel)
    m, channels = fields.shape[0], fields.shape[-1]
    out = fields.shape[1 : 1 + n]
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(in_shape[1:-1], pads, strict=True))
    total = jnp.zeros((m, *padded, channels), fields.dtype)
    zero = jnp.zeros((), fields.dtype)
    for offset in itertools.product(*(range(k) for k in kernel)):
        piece = fields[(slice(None),) * (1 + n) + offset]  # (m, *O, C)
        config = [(0, 0, 0)]
        for k, d, o, s, p in zip(offset, dilation, out, stride, padded, strict=True):
            config.append((k * d, p - k * d - ((o - 1) * s + 1), s - 1))
        total = total + lax.pad(piece, zero, config + [(0, 0, 0)])
    start = [0] + [lo for lo, _ in pads] + [0]
    return lax.slice(total, start, [a + b for a, b in zip(start, in_shape, strict=True)])


def _conv_args(x_or_shape, kernel_size, stride, padding, dilation, name="x"):
    shape = tuple(x_or_shape.shape) if hasattr(x_or_shape, "shape") else tuple(x_or_shape)
    n = len(shape) - 2
    if n not in _SPATIAL:
        _checks.fail(name, "a batch (m, *spatial, C) with 1 to 3 spatial axes", f"shape {shape}")
    kernel = int_tuple("kernel_size", kernel_size, n)
    stride = int_tuple("stride", stride, n)
    dilation = int_tuple("dilation", dilation, n)
    pads, out = geometry(shape[1:-1], kernel, stride, padding_spec(padding, n), dilation)
    return shape, kernel, stride, dilation, pads, out


def im2col(
    x: jax.Array,
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: str | tuple = "VALID",
    dilation: int | tuple[int, ...] = 1,
) -> jax.Array:
    """The receptive fields of `x` as the rows of a matrix (Saito ch. 7.4.3).

    Args:
      x: `(m, *S, C)` with 1 to 3 spatial axes `S`.
      kernel_size, stride, dilation: an int or one int per spatial axis.
      padding: `"VALID"`, `"SAME"`, an int or `(low, high)` pairs.

    Returns:
      `X_col` of shape `(m * prod(O), prod(K) * C)`: one row per output
      position `(n, o)` in row-major order, columns ordered `(k, c)` so
      that `X_col @ W.reshape(-1, C_out)` is the convolution with an HWIO
      kernel `W`. (Saito's channels-first layout orders columns `(c, k)`.)
    """
    shape, kernel, stride, dilation, pads, out = _conv_args(
        x, kernel_size, stride, padding, dilation
    )
    fields = patches(x, kernel, stride, pads, dilation)
    return fields.reshape(shape[0] * math.prod(out), math.prod(kernel) * shape[-1])


def col2im(
    cols: jax.Array,
    x_shape: tuple[int, ...],
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: str | tuple = "VALID",
    dilation: int | tuple[int, ...] = 1,
) -> jax.Array:
    """The adjoint of [`im2col`][purenet.layers.conv.im2col] (Saito ch. 7.4.3's `col2im`).

    `<im2col(x), cols> == <x, col2im(cols, x.shape)>` for every `x` and
    `cols`: each entry of `cols` is added to the input position its
    [`im2col`][purenet.layers.conv.im2col] entry was copied from, and the padding is cropped. Used
    as the gradient of `im2col`.

    Args:
      cols: `(m * prod(O), prod(K) * C)`.
      x_shape: the shape `(m, *S, C)` of the input of `im2col`.
      kernel_size, stride, padding, dilation: as given to [`im2col`][purenet.layers.conv.im2col].

    Returns:
      An array of shape `x_shape`.
    """
    shape, kernel, stride, dilation, pads, out = _conv_args(
        x_shape, kernel_size, stride, padding, dilation, "x_shape"
    )
    want = (shape[0] * math.prod(out), math.prod(kernel) * shape[-1])
    if tuple(jnp.shape(cols)) != want:
        _checks.fail(
            "cols",
            f"a matrix of shape {want} for x_shape {shape}",
            f"shape {tuple(jnp.shape(cols))}",
        )
    fields = cols.reshape(shape[0], *out, *kernel, shape[-1])
    return unpatches(fields, shape, kernel, stride, pads, dilation)


# -------------------------------------------------------------- the two passes


def _dimension_numbers(n):
    s = _SPATIAL[n]
    return f"N{s}C", f"{s}IO", f"N{s}C"


def _forward_lax(x, W, stride, pads, dilation):
    return lax.conv_general_dilated(
        x,
        W,
        window_strides=stride,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(W.ndim - 2),
    )


def _backward_lax(x, W, dy, stride, pads, dilation):
    """`(dW, dx)` as two correlations (module docstring, "the fast way")."""
    n = W.ndim - 2
    s = _SPATIAL[n]
    kernel = W.shape[:n]
    spatial = x.shape[1:-1]
    out = dy.shape[1:-1]
    untouched = [
        _untouched(size, k, st, d, p, o)
        for size, k, st, d, p, o in zip(spatial, kernel, stride, dilation, pads, out, strict=True)
    ]
    # dx: full correlation of the s-dilated dy with the flipped kernel, I and O swapped
    # (reading W's axes as spatial, O, I instead of transposing it).
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    dx_pads = [
        (ke - 1 - lo, ke - 1 - hi + r)
        for ke, (lo, hi), r in zip(k_eff, pads, untouched, strict=True)
    ]
    dx = lax.conv_general_dilated(
        dy,
        jnp.flip(W, axis=tuple(range(n))),
        window_strides=(1,) * n,
        padding=dx_pads,
        lhs_dilation=stride,
        rhs_dilation=dilation,
        dimension_numbers=(f"N{s}C", f"{s}OI", f"N{s}C"),
    )
    # dW: correlate x with dy; the batch axis m is contracted (x read as
    # C{s}N: m is the feature axis, C_in the batch), dy is the kernel (m = I,
    # C_out = O), the output is read back as HWIO ({s}NC: C_in = N, C_out = C).
    dW_pads = [(lo, hi - r) for (lo, hi), r in zip(pads, untouched, strict=True)]
    dW = lax.conv_general_dilated(
        x,
        dy,
        window_strides=dilation,
        padding=dW_pads,
        rhs_dilation=stride,
        dimension_numbers=(f"C{s}N", f"I{s}O", f"{s}NC"),
    )
    return dW, dx


def _forward_im2col(x, W, stride, pads, dilation):
    n = W.ndim - 2
    kernel, features = W.shape[:n], W.shape[-1]
    fields = patches(x, kernel, stride, pads, dilation)
    out = fields.shape[1 : 1 + n]
    cols = fields.reshape(-1, math.prod(W.shape[:-1]))
    y = (cols @ W.reshape(-1, features)).reshape(x.shape[0], *out, features)
    return y, cols


def _backward_im2col(x_shape, cols, W, dy, stride, pads, dilation):
    """`(dW, dx)` by im2col: `dense`'s backward on `X_col`, then col2im."""
    n = W.ndim - 2
    features = W.shape[-1]
    rows_dy = dy.reshape(-1, features)
    dW = (cols.T @ rows_dy).reshape(W.shape)
    dcols = rows_dy @ W.reshape(-1, features).T
    fields = dcols.reshape(dy.shape[:-1] + W.shape[:n] + (x_shape[-1],))
    dx = unpatches(fields, x_shape, W.shape[:n], stride, pads, dilation)
    return dW, dx


def _check_method(method):
    if method not in METHODS:
        _checks.fail("method", f"one of {list(METHODS)}", repr(method))
    return method


def _check_pair(x, W):
    _checks.array("x", x)
    _checks.array("W", W)
    n = jnp.ndim(W) - 2
    if n not in _SPATIAL:
        _checks.fail(
            "W", "a kernel (*K, C_in, C_out) with 1 to 3 spatial axes", f"shape {tuple(W.shape)}"
        )
    if jnp.ndim(x) != n + 2 or x.shape[-1] != W.shape[-2]:
        _checks.fail(
            "x",
            f"a batch (m, {n} spatial axes, {W.shape[-2]}) for W of shape {tuple(W.shape)}",
            f"shape {tuple(x.shape)}",
        )
    return n


def conv_forward(
    x: jax.Array,
    W: jax.Array,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: str | tuple = "VALID",
    dilation: int | tuple[int, ...] = 1,
    method: str = "lax",
) -> jax.Array:
    """The cross-correlation `y = x * W` (no bias), any spatial rank 1 to 3.

    Args:
      x: `(m, *S, C_in)`.
      W: `(*K, C_in, C_out)`.
      stride, dilation: an int or one per spatial axis.
      padding: `"VALID"`, `"SAME"`, an int or `(low, high)` pairs.
      method: `"lax"` (one `lax.conv_general_dilated`) or `"im2col"`
        (`im2col(x) @ W_mat`).

    Returns:
      `y` of shape `(m, *O, C_out)`.
    """
    n = _check_pair(x, W)
    _check_method(method)
    _, kernel, stride, dilation, pads, _ = _conv_args(x, W.shape[:n], stride, padding, dilation)
    if method == "lax":
        return _forward_lax(x, W, stride, pads, dilation)
    return _forward_im2col(x, W, stride, pads, dilation)[0]


def conv_backward(
    x: jax.Array,
    W: jax.Array,
    dy: jax.Array,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: str | tuple = "VALID",
    dilation: int | tuple[int, ...] = 1,
    method: str = "lax",
) -> tuple[jax.Array, jax.Array]:
    """The hand-written backward of [`conv_forward`][purenet.layers.conv.conv_forward]: `(dW, dx)`.

    `method="lax"` computes both as one `lax.conv_general_dilated` each
    (the fast way of the module docstring); `method="im2col"` as
    `dW = X_col^T dY` and `dx = col2im(dY W_mat^T)` (the textbook way).

    Args:
      x, W: the forward's input and kernel.
      dy: the upstream gradient, shaped like the forward's output.
      stride, padding, dilation, method: as for [`conv_forward`][purenet.layers.conv.conv_forward].

    Returns:
      `(dW, dx)`, shaped like `W` and `x`.
    """
    n = _check_pair(x, W)
    _check_method(method)
    shape, kernel, stride, dilation, pads, out = _conv_args(
        x, W.shape[:n], stride, padding, dilation
    )
    want = (shape[0], *out, W.shape[-1])
    if tuple(jnp.shape(dy)) != want:
        _checks.fail("dy", f"the forward's output shape {want}", f"shape {tuple(jnp.shape(dy))}")
    if method == "lax":
        return _backward_lax(x, W, dy, stride, pads, dilation)
    cols = patches(x, kernel, stride, pads, dilation).reshape(-1, math.prod(W.shape[:-1]))
    return _backward_im2col(shape, cols, W, dy, stride, pads, dilation)


# ------------------------------------------------------------------------ layers


def _layout(n):
    return "(m, L, C)" if n == 1 else "(m, H, W, C)" if n == 2 else "(m, D, H, W, C)"


def _conv_layer(
    n, name, features, kernel_size, stride, padding, dilation, W_init, b_init, method
) -> Layer:
    features = _checks.positive_int("features", features)
    kernel = int_tuple("kernel_size", kernel_size, n)
    stride = int_tuple("stride", stride, n)
    dilation = int_tuple("dilation", dilation, n)
    padding = padding_spec(padding, n)
    method = _check_method(method)
    W_init = get_initializer(W_init)
    b_init = zeros() if b_init is None else get_initializer(b_init)
    layout = _layout(n)

    def init(key, in_shape, dtype=jnp.float32):
        in_shape = as_shape(in_shape)
        if len(in_shape) != n + 1:
            _checks.fail(
                "in_shape",
                f"{n + 1} axes {layout[4:]} (without the batch) for {name}",
                repr(in_shape),
            )
        _, out = geometry(in_shape[:-1], kernel, stride, padding, dilation)
        k_W, k_b = jax.random.split(key)
        params = {
            "W": W_init(k_W, (*kernel, in_shape[-1], features), dtype),
            "b": b_init(k_b, (features,), dtype),
        }
        return (*out, features), params, ()

    # no mask: a kernel mixes neighbouring positions, so a padding mask is refused
    def forward(params, x):
        check_rank(x, n + 2, name, layout)
        W, b = params["W"], params["b"]
        if x.shape[-1] != W.shape[-2]:
            _checks.fail(
                "x",
                f"{W.shape[-2]} input channels (the last axis) for {name} with W "
                f"of shape {tuple(W.shape)}",
                f"shape {tuple(x.shape)}",
            )
        pads, _ = geometry(x.shape[1:-1], kernel, stride, padding, dilation)
        if method == "lax":
            return _forward_lax(x, W, stride, pads, dilation) + b, x
        y, cols = _forward_im2col(x, W, stride, pads, dilation)
        # x is kept for its shape only (an array, unlike a tuple of ints, stays
        # static when the cache crosses a jit boundary).
        return y + b, (cols, x)

    def backward(params, cache, dy):
        W = params["W"]
        db = jnp.sum(dy, axis=tuple(range(dy.ndim - 1)))
        if method == "lax":
            x = cache
            pads, _ = geometry(x.shape[1:-1], kernel, stride, padding, dilation)
            dW, dx = _backward_lax(x, W, dy, stride, pads, dilation)
        else:
            cols, x = cache
            pads, _ = geometry(x.shape[1:-1], kernel, stride, padding, dilation)
            dW, dx = _backward_im2col(x.shape, cols, W, dy, stride, pads, dilation)
        return {"W": dW, "b": db}, dx

    # Per example: with im2col the layer is a dense layer on the rows of X_col,
    # example i's P positions a sequence (dW_i = X_col_i^T dy_i, norms by the
    # cheaper of it and the Gram form); with lax, the backward on a batch of one.
    def per_example_im2col(params, cache, dy):
        cols, x = cache
        W, m = params["W"], dy.shape[0]
        dW, db = _rules.dense_per_example(cols.reshape(m, -1, cols.shape[-1]), dy)
        dx = backward(params, cache, dy)[1]
        return {"W": dW.reshape(m, *W.shape), "b": db}, dx

    def sq_norms_im2col(params, cache, dy):
        cols, x = cache
        m = dy.shape[0]
        sq_W, sq_b = _rules.dense_sq_norms(cols.reshape(m, -1, cols.shape[-1]), dy)
        return {"W": sq_W, "b": sq_b}, backward(params, cache, dy)[1]

    if method == "lax":
        rules = {"per_example": _rules.per_example_from_backward(backward)}
    else:
        rules = {"per_example": per_example_im2col, "sq_norms": sq_norms_im2col}
    return make_layer(init, forward, backward, name=f"{name}({features})", transport="W", **rules)


def conv1d(
    features: int,
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: str | tuple = "VALID",
    dilation: int | tuple[int, ...] = 1,
    W_init: str | Initializer = "he_normal",
    b_init: str | Initializer | None = None,
    method: str = "lax",
) -> Layer:
    """1-D convolution (cross-correlation) on signals `(m, L, C_in)`.

    `y[n, o, f] = b[f] + sum_{k, c} x_pad[n, o * stride + k * dilation, c] W[k, c, f]`
    (module docstring), output `(m, L_out, features)`.

    Args:
      features: output channels `C_out`.
      kernel_size, stride, dilation: positive ints (or 1-tuples).
      padding: `"VALID"` (none), `"SAME"` (XLA's rule: output length
        `ceil(L / stride)`, an odd total padding puts the extra zero at the
        end), an int, or a `(low, high)` pair.
      W_init: initialiser of `W` `(kernel_size, C_in, features)`: a name
        from `purenet.params.INITIALIZERS` or a function. The default, He
        normal (He et al. 2015), has std `sqrt(2 / fan_in)` with
        `fan_in = kernel_size * C_in`, the number of inputs of one output
        unit, for ReLU networks.
      b_init: initialiser of `b` `(features,)` (default zeros).
      method: `"lax"` (default: forward and backward are
        `lax.conv_general_dilated` calls derived by hand) or `"im2col"`
        (the textbook matrix form, Saito ch. 7); both give the same numbers.

    Params `{"W": (kernel_size, C_in, features), "b": (features,)}`; no state.
    """
    return _conv_layer(
        1, "conv1d", features, kernel_size, stride, padding, dilation, W_init, b_init, method
    )


def conv2d(
    features: int,
    kernel_size: int | tuple[int, ...],
    stride: int | tuple[int, ...] = 1,
    padding: str | tuple = "VALID",
    dilation: int | tuple[int, ...] = 1,
    W_init: str | Initializer = "he_normal",
    b_init: str | Initializer | None = None,
    method: str = "lax",
) -> Layer:
    """2-D convolution (cross-correlation) on images `(m, H, W, C_in)`.

    `y[n, i, j, f] = b[f] + sum_{p, q, c} x_pad[n, i s_h + p d_h, j s_w + q d_w, c]
    W[p, q, c, f]`, output `(m, H_out, W_out, features)`; the module docstring derives both
    backward passes.

    Args:
      features: output channels `C_out`.
      kernel_size, stride, dilation: an int or a pair `(h, w)`.
      padding: `"VALID"`, `"SAME"` (XLA's rule, odd padding at the end),
        an int, or one entry per spatial axis, each an int or `(low, high)`:
        `((1, 1), (0, 2))`.
      W_init: initialiser of `W` `(kh, kw, C_in, features)` (HWIO); default
        He normal with `fan_in = kh * kw * C_in`.
      b_init: initialiser of `b` (default zeros).
      method: `"lax"` (default, fast) or `"im2col"` (textbook).

    Params `{"W": (kh, kw, C_in, features), "b": (features,)}`; no state.
    """
    return _conv_layer(
        2, "conv2d", features, kernel_size, stride, padding, dilation, W_init, b_init, method
    )
