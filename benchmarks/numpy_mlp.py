"""A from-scratch NumPy training loop in the style of *Deep Learning from
Scratch* (Saito, 2016, ch. 5-6): layer objects with `forward` / `backward`
that keep their caches on `self`, `SoftmaxWithLoss`, and an `Adam` class
updating a dict of arrays in place. It is the baseline of the `train_epoch`
benchmark: the same network, batch size and optimizer as purenet's epoch,
in float32 (the book's code runs in float64; float32 is used here so that the
comparison is like for like).
"""

from __future__ import annotations

import numpy as np


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b
        self.x = self.dW = self.db = None

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T


class Relu:
    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout = dout.copy()
        dout[self.mask] = 0
        return dout


class SoftmaxWithLoss:
    def __init__(self):
        self.y = self.t = None

    def forward(self, x, t):
        x = x - x.max(axis=1, keepdims=True)
        e = np.exp(x)
        self.y = e / e.sum(axis=1, keepdims=True)
        self.t = t
        m = x.shape[0]
        return -np.log(self.y[np.arange(m), t] + 1e-7).mean()

    def backward(self):
        m = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(m), self.t] -= 1
        return dx / m


class Adam:
    """Adam (Kingma & Ba, 2015) as in the book's `common/optimizer.py`."""

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.iter, self.m, self.v = 0, None, None

    def update(self, params, grads):
        if self.m is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        # A Python float, so that float32 arrays stay float32 (NumPy 2 promotion).
        lr_t = float(self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter))
        for k in params:
            self.m[k] += (1 - self.beta1) * (grads[k] - self.m[k])
            self.v[k] += (1 - self.beta2) * (grads[k] ** 2 - self.v[k])
            params[k] -= lr_t * self.m[k] / (np.sqrt(self.v[k]) + self.eps)


class TwoLayerNet:
    """`Affine - Relu - Affine - SoftmaxWithLoss` with Glorot-uniform weights."""

    def __init__(self, n_in, n_hidden, n_out, seed=0, dtype=np.float32):
        rng = np.random.default_rng(seed)

        def glorot(a, b):
            limit = np.sqrt(6.0 / (a + b))
            return rng.uniform(-limit, limit, (a, b)).astype(dtype)

        self.params = {
            "W1": glorot(n_in, n_hidden),
            "b1": np.zeros(n_hidden, dtype),
            "W2": glorot(n_hidden, n_out),
            "b2": np.zeros(n_out, dtype),
        }
        self.affine1 = Affine(self.params["W1"], self.params["b1"])
        self.relu = Relu()
        self.affine2 = Affine(self.params["W2"], self.params["b2"])
        self.last = SoftmaxWithLoss()

    def loss_and_grads(self, x, t):
        h = self.relu.forward(self.affine1.forward(x))
        loss = self.last.forward(self.affine2.forward(h), t)
        dout = self.affine2.backward(self.last.backward())
        self.affine1.backward(self.relu.backward(dout))
        grads = {
            "W1": self.affine1.dW,
            "b1": self.affine1.db,
            "W2": self.affine2.dW,
            "b2": self.affine2.db,
        }
        return loss, grads


def train_epoch(net: TwoLayerNet, opt: Adam, x, t, batch_size: int, rng) -> np.ndarray:
    """One shuffled pass (leftover examples dropped); returns the step losses."""
    order = rng.permutation(x.shape[0])
    steps = x.shape[0] // batch_size
    losses = np.empty(steps, np.float32)
    for i in range(steps):
        rows = order[i * batch_size : (i + 1) * batch_size]
        loss, grads = net.loss_and_grads(x[rows], t[rows])
        opt.update(net.params, grads)  # in place: the layers see the new arrays
        losses[i] = loss
    return losses
