"""Run the experiments: ``python -m experiments``.

For now: a short demo that trains XOR with a 2-2-1 sigmoid network and prints
a gradient check of the hand-written backward pass.
"""

import jax
import jax.numpy as jnp

from purenet import datasets, gradcheck, losses, optim
from purenet import layers as L
from purenet.train import fit


def main():
    x, t = datasets.xor()
    model = L.serial(L.dense(2), L.sigmoid(), L.dense(1), L.sigmoid())
    _, params = model.init(jax.random.key(3), (2,))
    result = fit(
        model,
        losses.mse,
        optim.momentum(0.5, 0.9),
        params,
        x,
        t,
        key=jax.random.key(0),
        epochs=1500,
        batch_size=4,
        metric=None,
    )
    y, _ = model.forward(result.params, x)
    print("XOR, 2-2-1 sigmoid network, MSE, momentum 0.9:")
    for xi, yi in zip(x.tolist(), y[:, 0].tolist(), strict=True):
        print(f"  {xi} -> {yi:.3f}")
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: a.astype(jnp.float64), result.params)
        print(
            gradcheck.check_gradients(
                model, losses.mse, p64, x.astype(jnp.float64), t.astype(jnp.float64)
            )
        )


if __name__ == "__main__":
    main()
