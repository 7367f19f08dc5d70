"""Where a LeNet-5 step spends its time: each convolution's forward, ``dW``
and ``dx`` timed alone, with both hand-written backward methods.

``python -m benchmarks.conv_profile`` prints one line per piece (jitted,
float32, batch 128, median of 30 calls after one warm-up). In the network the
first layer's ``dx`` is never used and XLA removes it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from purenet.layers import conv

BATCH = 128
CASES = {
    "conv1 28x28x1 -> 6, k5, SAME": ((BATCH, 28, 28, 1), (5, 5, 1, 6), "SAME"),
    "conv2 14x14x6 -> 16, k5, VALID": ((BATCH, 14, 14, 6), (5, 5, 6, 16), "VALID"),
}


def median_ms(fn, *args, calls: int = 30) -> float:
    """Median wall time of ``jax.jit(fn)(*args)`` in milliseconds, after a warm-up."""
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


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


if __name__ == "__main__":
    main()
