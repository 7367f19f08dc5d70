"""Where a LeNet-5 step spends its time: each convolution's forward, `dW`
and `dx` timed alone, with both hand-written backward methods, then the
whole step against the same step with every convolution replaced by a
near-free stand-in of the same shapes.

`python -m benchmarks.investigations.conv_profile` prints one line per piece
(jitted, float32, batch 128, median of 30 calls after one warm-up). In the
network the first layer's `dx` is never used and XLA removes it.

The last lines bound what any convolution code could gain: with `t_rest`
the step without convolutions and `t_goal` a target step time, the five
convolution products of a step (conv1 forward and `dW`; conv2 forward,
`dW` and `dx`; `2 * m * prod(O) * prod(K) * C_in * C_out` FLOP each)
must run at `FLOP / (t_goal - t_rest)`. With PyTorch installed, `t_goal`
is its eager step divided by 1.5 (the conv issue's goal).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from benchmarks.conv import _data, lenet5, torch_step
from benchmarks.timing import interleave, summary
from purenet import layers as L
from purenet import losses
from purenet.layers import conv

BATCH = 128
CASES = {
    "conv1 28x28x1 -> 6, k5, SAME": ((BATCH, 28, 28, 1), (5, 5, 1, 6), "SAME"),
    "conv2 14x14x6 -> 16, k5, VALID": ((BATCH, 14, 14, 6), (5, 5, 6, 16), "VALID"),
}


def median_ms(fn, *args, calls: int = 30) -> float:
    """Median wall time of `jax.jit(fn)(*args)` in milliseconds, after a warm-up."""
    fn = jax.jit(fn)
    return median_thunk_ms(lambda: fn(*args), calls)


def median_thunk_ms(thunk, calls: int = 30) -> float:
    """Median wall time of `thunk()` (its result blocked on) in milliseconds,
    after a warm-up call."""
    return summary(interleave({"thunk": thunk}, rounds=calls, warmup=1)["thunk"])["median"] * 1e3


def main() -> None:
    key = jax.random.key(0)
    for name, (x_shape, w_shape, padding) in CASES.items():
        x = jax.random.normal(key, x_shape)
        W = 0.1 * jax.random.normal(key, w_shape)
        dy = jnp.ones_like(conv.conv_forward(x, W, padding=padding))
        for method in ("lax", "im2col"):
            options = {"padding": padding, "method": method}

            def forward(x, W, options=options):
                return conv.conv_forward(x, W, **options)

            def dW(x, W, dy, options=options):
                return conv.conv_backward(x, W, dy, **options)[0]

            def dx(x, W, dy, options=options):
                return conv.conv_backward(x, W, dy, **options)[1]

            print(
                f"{name:32s} {method:7s} forward {median_ms(forward, x, W):6.2f} ms  "
                f"dW {median_ms(dW, x, W, dy):6.2f} ms  dx {median_ms(dx, x, W, dy):6.2f} ms"
            )
    bound()


def stand_in(features: int, crop: int) -> L.Layer:
    """A convolution's shapes at almost no cost: `x[:, :H-crop, :W-crop, :1] * w`
    with `w` of shape `(features,)`; hand-written backward."""

    def init(key, in_shape, dtype=jnp.float32):
        h, w, _ = in_shape
        return (h - crop, w - crop, features), {"w": jnp.ones((features,), dtype)}, ()

    def forward(params, x, *, state=(), train=False, key=None, mask=None):
        return x[:, : x.shape[1] - crop, : x.shape[2] - crop, :1] * params["w"], x

    def backward(params, x, dy):
        h, w = dy.shape[1], dy.shape[2]
        corner = x[:, :h, :w, :1]
        dx = jnp.zeros_like(x).at[:, :h, :w, :1].set(jnp.sum(dy * params["w"], -1, keepdims=True))
        return {"w": jnp.sum(dy * corner, axis=(0, 1, 2))}, dx

    return L.Layer(init, forward, backward)


def lenet5_without_convolutions() -> L.Layer:
    """`benchmarks.conv.lenet5` with each convolution a `stand_in`."""
    return L.serial(
        stand_in(6, 0),
        L.relu(),
        L.max_pool2d(2),
        stand_in(16, 4),
        L.relu(),
        L.max_pool2d(2),
        L.flatten(),
        L.dense(120),
        L.relu(),
        L.dense(84),
        L.relu(),
        L.dense(10),
    )


def conv_flop() -> int:
    """Multiply-add FLOP of the five convolution products of one LeNet-5 step."""
    conv1 = 2 * BATCH * 28 * 28 * 25 * 1 * 6  # forward, dW (its dx is dead code)
    conv2 = 2 * BATCH * 10 * 10 * 25 * 6 * 16  # forward, dW, dx
    return 2 * conv1 + 3 * conv2


def bound() -> None:
    x, t = _data((28, 28, 1), BATCH)
    steps = {}
    for name, model in (
        ("LeNet-5 step", lenet5()),
        ("without convolutions", lenet5_without_convolutions()),
    ):
        _, params, _ = model.init(jax.random.key(0), (28, 28, 1), jnp.float32)
        steps[name] = median_ms(
            purenet.backprop(model, losses.softmax_cross_entropy), params, x, t, calls=60
        )
        print(f"{name:32s} {steps[name]:6.2f} ms")
    flop = conv_flop()
    rest = steps["without convolutions"]
    print(
        f"convolution products per step: {flop / 1e6:.0f} MFLOP, now at "
        f"{flop / (steps['LeNet-5 step'] - rest) / 1e6:.0f} GFLOP/s"
    )
    _, params, _ = lenet5().init(jax.random.key(0), (28, 28, 1), jnp.float32)
    step, info = torch_step("LeNet-5", params, x, t)
    if step is None:
        print(f"PyTorch: {info}")
        return
    torch_ms = median_thunk_ms(step)
    torch_rest = median_thunk_ms(_torch_without_convolutions(params, x, t))
    print(
        f"PyTorch eager step ({info}) {torch_ms:.2f} ms, without convolutions "
        f"{torch_rest:.2f} ms: its convolutions at {flop / (torch_ms - torch_rest) / 1e6:.0f} "
        "GFLOP/s"
    )
    goal = torch_ms / 1.5
    print(
        f"goal {goal:.2f} ms: purenet's convolutions would need "
        f"{flop / (goal - rest) / 1e6:.0f} GFLOP/s"
        if goal > rest
        else f"goal {goal:.2f} ms is below purenet's step without convolutions"
    )


def _torch_without_convolutions(params, x, t):
    """PyTorch's LeNet-5 step with `stand_in`'s convolutions (eager, autograd)."""
    import torch

    F = torch.nn.functional
    dense = [
        {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in params[i].items()}
        for i in (7, 9, 11)
    ]
    w = [torch.ones(f, requires_grad=True) for f in (6, 16)]
    xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()  # NCHW
    tt = torch.tensor(np.asarray(t)).long()

    def step():
        for v in w + [v for d in dense for v in d.values()]:
            v.grad = None
        h = F.max_pool2d(F.relu(xt[:, :1] * w[0][None, :, None, None]), 2)
        h = F.max_pool2d(F.relu(h[:, :1, :10, :10] * w[1][None, :, None, None]), 2)
        h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
        for i, d in enumerate(dense):
            h = h @ d["W"] + d["b"]
            h = F.relu(h) if i < 2 else h
        loss = F.cross_entropy(h, tt)
        loss.backward()
        return loss.detach()

    return step


if __name__ == "__main__":
    main()
