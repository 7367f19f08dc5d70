"""Benchmark `conv`: convolutional networks, hand-written backward vs `jax.grad`,
the im2col path vs NumPy, and PyTorch eager when it is installed.

Two networks, float32, softmax cross-entropy on random integer labels:

* LeNet-5 on 28x28x1 at batch 128 (LeCun et al. 1998, with ReLU and max
  pooling): `conv2d(6, 5, SAME) - relu - max_pool2d(2) - conv2d(16, 5) -
  relu - max_pool2d(2) - flatten - dense(120) - relu - dense(84) - relu -
  dense(10)`;
* the MNIST-1D CNN at batch 100 (Greydanus 2020, `notebooks/models.py`):
  three `conv1d(25, k, stride=2, padding=1)` with `k = 5, 3, 3`, ReLU,
  flatten, `dense(10)`, on signals of length 40.

Contenders, under `jax.jit`, interleaved (`benchmarks.timing`):

* `hand`: `purenet.backprop(model, loss)`, the layers' default backward
  (two `lax.conv_general_dilated` calls per convolution, derived by hand);
* `hand, im2col`: the same network with `method="im2col"` (the textbook
  matrix form);
* `jax.grad`: `jax.value_and_grad(purenet.objective(model, loss))`;
* `control`: a second jitted copy of `jax.grad` (the noise floor);
* `numpy im2col`: LeNet-5 as a *Deep Learning from Scratch* (Saito ch. 7)
  network, channels-last, float32: `Convolution` and `Pooling` objects
  with the book's `im2col`/`col2im` loops over filter offsets (each
  contender computes the loss and every gradient of one batch);
* `torch`: `torch.nn.Conv2d`/`Conv1d` modules, eager on the CPU,
  `loss.backward()`; skipped when `import torch` fails.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from benchmarks import numpy_mlp
from benchmarks.gradient import gradient_contenders
from benchmarks.registry import Config, register
from benchmarks.timing import compare, fmt_ratio, fmt_spread
from purenet import layers as L
from purenet import losses


def lenet5(method: str = "lax") -> L.Layer:
    """LeNet-5 for 28x28x1 inputs (padding 2 in the first layer, as 32x32)."""
    return L.serial(
        L.conv2d(6, 5, padding="SAME", method=method),
        L.relu(),
        L.max_pool2d(2),
        L.conv2d(16, 5, method=method),
        L.relu(),
        L.max_pool2d(2),
        L.flatten(),
        L.dense(120),
        L.relu(),
        L.dense(84),
        L.relu(),
        L.dense(10),
    )


def mnist1d_cnn(method: str = "lax") -> L.Layer:
    """The `ConvBase` of the MNIST-1D repository, channels-last."""
    return L.serial(
        L.conv1d(25, 5, stride=2, padding=1, method=method),
        L.relu(),
        L.conv1d(25, 3, stride=2, padding=1, method=method),
        L.relu(),
        L.conv1d(25, 3, stride=2, padding=1, method=method),
        L.relu(),
        L.flatten(),
        L.dense(10),
    )


NETWORKS = {  # name: (factory, input shape, batch, quick rounds, full rounds)
    "LeNet-5 28x28x1 @ 128": (lenet5, (28, 28, 1), 128, 60, 300),
    "MNIST-1D CNN 40x1 @ 100": (mnist1d_cnn, (40, 1), 100, 200, 1000),
}


def _data(in_shape, batch, seed=0):
    k_x, k_t = jax.random.split(jax.random.key(seed))
    return (
        jax.random.normal(k_x, (batch, *in_shape), jnp.float32),
        jax.random.randint(k_t, (batch,), 0, 10),
    )


# ----------------------------------------------------- the book's NumPy network


def np_im2col(x, kh, kw, stride=1, pad=0):
    """Saito's `im2col` (`common/util.py`), channels-last: one strided copy
    per filter offset; rows `(n, i, j)`, columns `(p, q, c)`."""
    n, h, w, c = x.shape
    out_h, out_w = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    img = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    col = np.empty((n, out_h, out_w, kh, kw, c), x.dtype)
    for p in range(kh):
        for q in range(kw):
            col[:, :, :, p, q, :] = img[
                :, p : p + stride * out_h : stride, q : q + stride * out_w : stride
            ]
    return col.reshape(n * out_h * out_w, -1)


def np_col2im(col, x_shape, kh, kw, stride=1, pad=0):
    """Saito's `col2im`: the entries of `col` added back, padding cropped."""
    n, h, w, c = x_shape
    out_h, out_w = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    col = col.reshape(n, out_h, out_w, kh, kw, c)
    img = np.zeros((n, h + 2 * pad, w + 2 * pad, c), col.dtype)
    for p in range(kh):
        for q in range(kw):
            img[:, p : p + stride * out_h : stride, q : q + stride * out_w : stride] += col[
                :, :, :, p, q
            ]
    return img[:, pad : h + pad, pad : w + pad]


class Convolution:
    """Saito's `Convolution` layer (ch. 7.4.3), channels-last, HWIO `W`."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        kh, kw, _, f = self.W.shape
        self.x_shape = x.shape
        self.col = np_im2col(x, kh, kw, self.stride, self.pad)
        out = self.col @ self.W.reshape(-1, f) + self.b
        n, h, w, _ = x.shape
        out_h = (h + 2 * self.pad - kh) // self.stride + 1
        out_w = (w + 2 * self.pad - kw) // self.stride + 1
        return out.reshape(n, out_h, out_w, f)

    def backward(self, dout):
        kh, kw, _, f = self.W.shape
        dout = dout.reshape(-1, f)
        self.db = dout.sum(axis=0)
        self.dW = (self.col.T @ dout).reshape(self.W.shape)
        dcol = dout @ self.W.reshape(-1, f).T
        return np_col2im(dcol, self.x_shape, kh, kw, self.stride, self.pad)


class Pooling:
    """Saito's max `Pooling` layer (ch. 7.4.4), window = stride, channels-last."""

    def __init__(self, size):
        self.size = size

    def forward(self, x):
        s = self.size
        n, h, w, c = x.shape
        self.x_shape, self.out = x.shape, (n, (h - s) // s + 1, (w - s) // s + 1, c)
        col = np_im2col(x, s, s, s).reshape(-1, s * s, c)
        self.arg_max = col.argmax(axis=1)
        return col.max(axis=1).reshape(self.out)

    def backward(self, dout):
        s, c = self.size, self.x_shape[-1]
        dmax = np.zeros((dout.size // c, s * s, c), dout.dtype)
        np.put_along_axis(dmax, self.arg_max[:, None, :], dout.reshape(-1, 1, c), axis=1)
        return np_col2im(dmax.reshape(-1, s * s * c), self.x_shape, s, s, s)


class Flatten:
    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.shape)


class NumpyLeNet:
    """`lenet5` as a list of the book's layer objects, same params."""

    def __init__(self, params):
        p = [{k: np.asarray(v) for k, v in layer.items()} if layer else None for layer in params]
        self.layers = [
            Convolution(p[0]["W"], p[0]["b"], pad=2),
            numpy_mlp.Relu(),
            Pooling(2),
            Convolution(p[3]["W"], p[3]["b"]),
            numpy_mlp.Relu(),
            Pooling(2),
            Flatten(),
            numpy_mlp.Affine(p[7]["W"], p[7]["b"]),
            numpy_mlp.Relu(),
            numpy_mlp.Affine(p[9]["W"], p[9]["b"]),
            numpy_mlp.Relu(),
            numpy_mlp.Affine(p[11]["W"], p[11]["b"]),
        ]
        self.last = numpy_mlp.SoftmaxWithLoss()

    def loss_and_grads(self, x, t):
        for layer in self.layers:
            x = layer.forward(x)
        loss = self.last.forward(x, t)
        dout = self.last.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return loss, [(layer.dW, layer.db) for layer in self.layers if hasattr(layer, "dW")]


# --------------------------------------------------------------------- PyTorch


def torch_step(name, params, x, t):
    """A thunk computing loss and gradients with torch eager, or `(None, why)`."""
    try:
        import torch
    except ImportError as e:
        return None, f"torch not importable ({e})"
    F = torch.nn.functional
    p = [
        {k: torch.tensor(np.asarray(v)) for k, v in layer.items()} if layer else None
        for layer in params
    ]
    weights = [v for layer in p if layer for v in layer.values()]
    for v in weights:
        v.requires_grad_(True)
    tt = torch.tensor(np.asarray(t)).long()
    if name.startswith("LeNet"):
        xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous()  # NCHW

        def net(x):
            conv = [(p[i]["W"].permute(3, 2, 0, 1), p[i]["b"]) for i in (0, 3)]
            h = F.max_pool2d(F.relu(F.conv2d(x, conv[0][0], conv[0][1], padding=2)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, conv[1][0], conv[1][1])), 2)
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
            h = F.relu(h @ p[7]["W"] + p[7]["b"])
            h = F.relu(h @ p[9]["W"] + p[9]["b"])
            return h @ p[11]["W"] + p[11]["b"]
    else:
        xt = torch.tensor(np.asarray(x)).permute(0, 2, 1).contiguous()  # NCL

        def net(x):
            h = x
            for i in (0, 2, 4):
                h = F.relu(F.conv1d(h, p[i]["W"].permute(2, 1, 0), p[i]["b"], stride=2, padding=1))
            h = h.permute(0, 2, 1).reshape(h.shape[0], -1)
            return h @ p[7]["W"] + p[7]["b"]

    def step():
        for v in weights:
            v.grad = None
        loss = F.cross_entropy(net(xt), tt)
        loss.backward()
        return loss.detach()

    return step, f"torch {torch.__version__}, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------- driver


def contenders(name):
    factory, in_shape, batch, _, _ = NETWORKS[name]
    loss = losses.softmax_cross_entropy
    model = factory()
    _, params, _ = model.init(jax.random.key(0), in_shape, jnp.float32)
    x, t = _data(in_shape, batch)
    fns = gradient_contenders(model, loss)
    fns["hand, im2col"] = jax.jit(purenet.backprop(factory("im2col"), loss))
    thunks = {k: (lambda f=f: f(params, x, t)) for k, f in fns.items()}
    notes = {}
    if name.startswith("LeNet"):
        net, xn, tn = NumpyLeNet(params), np.asarray(x), np.asarray(t)
        thunks["numpy im2col"] = lambda: net.loss_and_grads(xn, tn)
    step, info = torch_step(name, params, x, t)
    if step is None:
        notes["torch"] = info
    else:
        thunks["torch"] = step
        notes["torch"] = info
    return thunks, notes


def check_numpy_network_agrees(rtol=1e-3):
    """The NumPy LeNet's gradients equal purenet's (float32 tolerance)."""
    thunks, _ = contenders("LeNet-5 28x28x1 @ 128")
    _, grads = thunks["hand"]()
    _, numpy_grads = thunks["numpy im2col"]()
    mine = [(g["W"], g["b"]) for g in grads if g]
    for (a, b), (c, d) in zip(mine, numpy_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), c, rtol=rtol, atol=1e-5)
        np.testing.assert_allclose(np.asarray(b), d, rtol=rtol, atol=1e-5)


@register("conv", "CNNs: hand-written conv backward vs jax.grad; im2col vs NumPy; torch eager")
def run(config: Config) -> dict:
    rows, data, notes = [], {}, []
    for name, (_, _, _, quick, full) in NETWORKS.items():
        config.log(f"conv: {name}")
        thunks, info = contenders(name)
        rounds = config.repeats(quick, full)
        # The JAX contenders interleaved together; NumPy and torch each in a
        # comparison of their own against a purenet contender, because their
        # thread pools (OpenBLAS, OpenMP) keep spinning after a call and slow
        # down whoever runs next (always the same contender in a rotation).
        jax_names = ["hand", "hand, im2col", "jax.grad", "control"]
        timing = compare(
            {k: thunks[k] for k in jax_names}, baseline="jax.grad", rounds=rounds, sample_s=0.02
        )
        timing.pop("samples")
        data[name] = {**timing, "info": info, "others": {}}
        t, r = timing["times"], timing["ratios"]
        for contender in jax_names:
            ratio = "1" if contender == "jax.grad" else fmt_ratio(r[contender])
            if contender == "hand":
                ratio = f"**{ratio}**"
            rows.append([name, contender, fmt_spread(t[contender]), ratio, ""])
        for other, mine in (("numpy im2col", "hand, im2col"), ("torch", "hand")):
            if other not in thunks:
                continue
            pair = compare(
                {mine: thunks[mine], other: thunks[other]},
                baseline=mine,
                rounds=config.repeats(max(quick // 6, 3), max(full // 6, 3)),
                sample_s=0.02,
            )
            pair.pop("samples")
            data[name]["others"][other] = pair
            rows.append(
                [
                    name,
                    other,
                    fmt_spread(pair["times"][other]),
                    "",
                    f"{fmt_ratio(pair['ratios'][other])} x {mine}",
                ]
            )
        if "torch" not in thunks:
            notes.append(f"{name}: PyTorch skipped: {info['torch']}.")
    notes.insert(
        0,
        "Each contender computes the loss and every gradient of one batch. 'hand' "
        "is purenet.backprop with the default backward (lax convolutions derived by "
        "hand), 'hand, im2col' the textbook backward, 'control' a second jitted "
        "jax.grad (its ratio is the noise floor). Ratios are per-round "
        "(interleaved) ratios, median [quartiles]: the JAX contenders to jax.grad; "
        "NumPy and torch, timed in separate interleaved pairs (their thread pools "
        "spin after a call), to the purenet contender named.",
    )
    return {
        "description": __doc__.split("\n\n")[0],
        "tables": [
            {
                "title": "conv: time per loss-and-gradient call, median [quartiles]",
                "headers": ["network @ batch", "contender", "time", "/ jax.grad", "/ purenet"],
                "rows": rows,
            }
        ],
        "notes": notes,
        "data": data,
    }
