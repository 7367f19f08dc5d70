"""LeNet on scikit-learn's 8x8 digits: a small CNN against an MLP, and its filters.

Claim (Saito, *Deep Learning from Scratch*, ch. 7; LeCun et al. 1998): a
convolutional network, which shares one small filter across every position
of the image and pools, classifies handwritten digits better than a fully
connected network with more parameters. The figure also shows the
first-layer filters before and after training, as the book's fig. 7-24 does
(there 5x5 filters on 28x28 MNIST become edge and blob detectors; here 3x3
filters on 8x8 images: the drawing is shown, not judged).

Setup: scikit-learn's digits (1797 images of 8x8 pixels in [0, 1]), a new
70 / 30 train / test split per seed. The CNN, LeNet-style for 8x8 inputs:
`conv2d(8, 3, SAME) - relu - max_pool2d(2) - conv2d(16, 3, SAME) - relu -
max_pool2d(2) - flatten - dense(32) - relu - dense(10)` (3,658 parameters),
its convolutions by im2col, the book's own method (`method="im2col"`: on
8x8 images and one XLA:CPU thread, twice as fast as `lax`'s convolution,
with the same accuracies, measured);
the MLP `64 - 64 - relu - 10` (4,810 parameters). Both with He-normal
weights (purenet's conv default; `dense(W_init="he_normal")`), softmax
cross-entropy, Adam (lr 3e-3), batches of 32, the same epochs; gradients by
the layers' hand-written backward passes (`purenet.train.make_train`
through `experiments._common.sweep`), the seeds one after the other in one
compiled `lax.map` (not `vmap`: see `_run`). Reported: test accuracy after every epoch,
mean and standard deviation over seeds, and seed 0's first-layer filters
before and after training.
"""

from __future__ import annotations

import jax
import numpy as np

from experiments._common import (
    SPREAD,
    Mode,
    Verdict,
    num_seeds,
    pick,
    pyplot,
    returning,
    seed_band,
    seed_bar,
    seed_stats,
    sweep,
    tracked,
)
from purenet import data, datasets, losses, metrics, optim
from purenet import layers as L

NAME = "lenet_digits"
QUICK_SECONDS = 22  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "A LeNet-style CNN beats an MLP with more parameters on 8x8 digits (test accuracy over "
    "seeds); its first-layer filters are drawn before and after training."
)

LOSS = losses.softmax_cross_entropy
LEARNING_RATE, BATCH = 3e-3, 32
IN_SHAPE = (8, 8, 1)


def cnn() -> L.Layer:
    return L.serial(
        L.conv2d(8, 3, padding="SAME", method="im2col"),
        L.relu(),
        L.max_pool2d(2),
        L.conv2d(16, 3, padding="SAME", method="im2col"),
        L.relu(),
        L.max_pool2d(2),
        L.flatten(),
        L.dense(32, W_init="he_normal"),
        L.relu(),
        L.dense(10),
    )


def mlp() -> L.Layer:
    return L.serial(L.flatten(), L.dense(64, W_init="he_normal"), L.relu(), L.dense(10))


MODELS = {"CNN": cnn, "MLP": mlp}


def _count(params) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def _run(model, x_all, t_all, keys, epochs):
    """Per seed: split, init, train `epochs` of Adam; test accuracy after
    every epoch, the initial and the final params. One compiled program
    for all seeds (`sweep`)."""

    def draw(key, point):  # per seed, inside the program: its split, init, batch order
        split_key, init_key, train_key = jax.random.split(key, 3)
        (x_tr, t_tr), (x_te, t_te) = data.split(split_key, x_all, t_all, (0.7, 0.3))
        _, params, state = model.init(init_key, IN_SHAPE)
        return {
            "key": train_key,
            "train": (x_tr, t_tr),
            "test": (x_te, t_te),
            "start": (params, state),
        }

    def evaluate(params, state, point):
        x_te, t_te = point["test"]
        return metrics.multiclass_accuracy(model.forward(params, x_te)[0], t_te)

    # seeds_in_sequence (lax.map, not vmap): as fast as vmap with im2col's
    # matrix products, and what the lax method needs (vmapping a lax
    # convolution over per-seed kernels makes it a grouped convolution,
    # which XLA:CPU runs about 3x slower); and jax.jit, not _common.jit:
    # XLA's backend optimisation level 0 slows this code down at run time by
    # more than it saves in compile time (measured on 2 CPU cores).
    return sweep(
        model,
        LOSS,
        optim.adam(LEARNING_RATE),
        BATCH,
        epochs,
        lambda point: point["train"],
        lambda point: point["start"],
        keys,
        draw=draw,
        evaluate=evaluate,
        finish=lambda params, state, point: point["start"][0],  # the initial params
        seeds_in_sequence=True,
        compile=returning(lambda p, s, h: (h["evaluation"], h["final"], p), compile=jax.jit),
    )


def measure(mode: Mode, seeds: int | None) -> dict:
    # The CNN's lead is small (about half a point) and shows only once both
    # nets have converged: at 25 epochs it is within the noise. Quick mode
    # trains as long as the full one, with the 12 seeds its paired test needs.
    seeds = num_seeds(mode, seeds, quick=12, full=16)
    epochs = pick(mode, smoke=1, quick=60, full=60)
    x, t = datasets.digits()
    x = x.reshape(-1, *IN_SHAPE)
    keys = jax.random.split(jax.random.key(7), seeds)
    numbers = {}
    for name, factory in tracked(MODELS.items(), label=lambda item: item[0]):
        model = factory()
        accuracy, initial, final = _run(model, x, t, keys, epochs)
        numbers[name] = {
            "test_accuracy": np.asarray(accuracy),  # (seeds, epochs)
            "parameters": _count(jax.tree.map(lambda a: a[0], initial)),
        }
        if name == "CNN":  # seed 0's first-layer filters, (3, 3, 1, 8) -> (8, 3, 3)
            numbers[name]["filters_before"] = np.moveaxis(
                np.asarray(initial[0]["W"][0, :, :, 0]), -1, 0
            )
            numbers[name]["filters_after"] = np.moveaxis(
                np.asarray(final[0]["W"][0, :, :, 0]), -1, 0
            )
    settings = {
        "seeds": seeds,
        "epochs": epochs,
        "optimizer": f"adam(lr={LEARNING_RATE})",
        "batch_size": BATCH,
        "split": "70/30 train/test, a new split per seed",
        "nets": {
            "CNN": "conv2d(8,3,SAME)-relu-maxpool2-conv2d(16,3,SAME)-relu-maxpool2-"
            "flatten-dense(32)-relu-dense(10), convolutions by im2col",
            "MLP": "64-64-relu-10",
        },
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """The CNN has fewer parameters and a higher test accuracy after the last
    epoch, by more than two standard errors of the paired difference (seed
    `s` trains both networks on the same split, so the split's luck cancels
    in `CNN_s - MLP_s`)."""
    numbers, seeds = data["numbers"], data["settings"]["seeds"]
    last = {name: np.asarray(numbers[name]["test_accuracy"], float)[:, -1] for name in MODELS}
    final = {name: seed_stats(v) for name, v in last.items()}
    diff = last["CNN"] - last["MLP"]
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("inf")
    fewer = numbers["CNN"]["parameters"] < numbers["MLP"]["parameters"]
    supported = bool(diff.mean() > 2 * se and fewer)
    cnn, mlp_ = final["CNN"], final["MLP"]
    text = (
        f"test accuracy: CNN {cnn['mean']:.4f} ± {cnn['std']:.4f} "
        f"({numbers['CNN']['parameters']} params) vs MLP {mlp_['mean']:.4f} ± {mlp_['std']:.4f} "
        f"({numbers['MLP']['parameters']} params); paired difference {diff.mean():+.4f} "
        f"(standard error {se:.4f}), {seeds} seeds"
    )
    summary = {"cnn_acc": cnn["mean"], "mlp_acc": mlp_["mean"], "paired_diff": float(diff.mean())}
    return Verdict(text, supported, summary)


def _filters(fig, grid, filters, title):
    filters = np.asarray(filters, float)
    limit = np.abs(filters).max()
    axes = grid.subgridspec(1, len(filters), wspace=0.1).subplots()
    for ax, f in zip(axes, filters, strict=True):
        ax.imshow(f, cmap="gray", vmin=-limit, vmax=limit)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=9)


def draw(data: dict):
    numbers, settings = data["numbers"], data["settings"]
    plt = pyplot()
    fig = plt.figure(figsize=(12, 7.5))
    grid = fig.add_gridspec(3, 2, height_ratios=[3, 0.8, 0.8], hspace=0.45)
    fig.suptitle(f"LeNet-style CNN vs MLP on 8x8 digits ({settings['seeds']} seeds, {SPREAD})")

    ax = fig.add_subplot(grid[0, 0])
    for i, name in enumerate(MODELS):
        acc = np.asarray(numbers[name]["test_accuracy"], float)[:, -1]
        seed_bar(ax, i, acc, 0.6, color=f"C{i}", dots=False, alpha=0.8)
        ax.plot(i + np.random.default_rng(0).uniform(-0.12, 0.12, acc.size), acc, "k.", ms=4)
        ax.text(i, acc.min() - 0.004, f"{acc.mean():.4f}", ha="center", va="top")
    low = min(np.asarray(numbers[n]["test_accuracy"], float)[:, -1].min() for n in MODELS)
    ax.set_ylim(max(0.0, low - 0.03), 1.0)
    ax.set_xticks(range(len(MODELS)), [f"{n}\n{numbers[n]['parameters']:,} params" for n in MODELS])
    ax.set_ylabel("test accuracy after the last epoch")
    ax.set_title("final test accuracy (dots = seeds)")

    ax = fig.add_subplot(grid[0, 1])
    for i, name in enumerate(MODELS):
        acc = np.asarray(numbers[name]["test_accuracy"], float)
        epochs = np.arange(1, acc.shape[1] + 1)
        seed_band(ax, epochs, acc, color=f"C{i}", label=name, alpha=0.25)
    lowest = min(np.asarray(numbers[n]["test_accuracy"], float).mean(axis=0)[-1] for n in MODELS)
    ax.set_ylim(max(0.0, min(0.8, lowest - 0.05)), 1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title("test accuracy during training")
    ax.legend()

    _filters(fig, grid[1, :], numbers["CNN"]["filters_before"], "first-layer\nfilters, init")
    _filters(fig, grid[2, :], numbers["CNN"]["filters_after"], "after\ntraining")
    return fig
