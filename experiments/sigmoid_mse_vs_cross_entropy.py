"""Sigmoid + MSE stalls when the output is confidently wrong; cross-entropy does not.

Claim (seed 001, "Neural Networks-4", pages 9-12; Nielsen, *Neural Networks
and Deep Learning*, ch. 3): with a sigmoid output `o = sigmoid(z)` and the
squared error `E = 1/2 (o - t)^2`, the gradient that reaches the output
unit's input is `dE/dz = (o - t) o (1 - o)`, which vanishes when the output
is completely wrong (`t = 1`, `o -> 0`), so the network cannot learn its
way out; with cross-entropy it is `dE/dz = o - t`, close to `-1` there.

Part 1, the gradient: for a grid of outputs `o` in (0, 1) and target 1,
`dE/dz` is computed by the library's hand-written backprop as the gradient
with respect to the bias `b` of a one-unit dense layer whose input is 0
(so `z = b`): `serial(dense(1), sigmoid())` with `losses.mse` versus
`serial(dense(1))` with `losses.sigmoid_binary_cross_entropy` (logits),
and compared with the two formulas.

Part 2, training from a wrong start: two interleaving moons (200 points), a
`2 -> 8 tanh -> 1` network, full-batch gradient descent (`purenet.train.make_train`
with batches of the whole set: an epoch is one step; the same learning rate
for both losses), the output
bias set to `b0 = -6` so that every output starts near
`sigmoid(-6) = 0.0025`: right for the `t = 0` half, confidently wrong for
the `t = 1` half. The same initial weights (per seed, `jax.vmap` over
seeds) train once with sigmoid + MSE and once with cross-entropy; as a
control, both also train from a neutral start (`b0 = 0`). Measured per
epoch: training accuracy and the mean output on the `t = 1` examples; the
number of epochs until that mean output first exceeds 0.5 ("recovered").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from experiments._common import (
    SPREAD,
    Mode,
    Verdict,
    num_seeds,
    pick,
    pyplot,
    seed_band,
    seed_stats,
    stateless,
    sweep,
    tracked,
)
from purenet import datasets, layers, losses, optim

NAME = "sigmoid_mse_vs_cross_entropy"
QUICK_SECONDS = 8  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "With a sigmoid output, MSE's gradient dE/dz = (o - t) o (1 - o) vanishes when the output "
    "is confidently wrong, so training stalls; cross-entropy's dE/dz = o - t does not"
)

HIDDEN = 8
LEARNING_RATE = 1.0
BAD_BIAS = -6.0
START_NAMES, START_BIASES = ("bad", "neutral"), (BAD_BIAS, 0.0)  # output bias b0
N_POINTS = 200


# ------------------------------------------------------------ part 1: dE/dz


def output_gradients(o_grid):
    """`dE/dz` at target 1 by the library's backprop, for each output in
    `o_grid`: the bias gradient of a one-unit dense layer with input 0."""
    mse_model = layers.serial(layers.dense(1), layers.sigmoid())
    ce_model = layers.serial(layers.dense(1))
    mse_grad = purenet.backprop(mse_model, losses.mse)
    ce_grad = purenet.backprop(ce_model, losses.sigmoid_binary_cross_entropy)
    x = jnp.zeros((1, 1), jnp.float32)
    t = jnp.ones((1, 1), jnp.float32)

    def both(z):
        dense = {"W": jnp.ones((1, 1), jnp.float32), "b": jnp.reshape(z, (1,))}
        d_mse = mse_grad((dense, ()), x, t)[1][0]["b"][0]
        d_ce = ce_grad((dense,), x, t)[1][0]["b"][0]
        return d_mse, d_ce

    z = jnp.asarray(np.log(o_grid / (1 - o_grid)), jnp.float32)  # logit: z with sigmoid(z) = o
    d_mse, d_ce = jax.jit(jax.vmap(both))(z)
    return np.asarray(d_mse, np.float64), np.asarray(d_ce, np.float64)


# ------------------------------------------------------------- part 2: training


def logits_network():
    return layers.serial(*logits_network_layers())


def initial_params(keys, n_in: int):
    """Each seed's initial weights (Glorot uniform), stacked; the output bias
    is replaced by the start's `b0` in training. One eager init per key:
    compiling the random kernels under vmap and jit costs seconds more."""
    seeds = [logits_network().init(k, (n_in,), jnp.float32)[1] for k in keys]
    return jax.tree.map(lambda *a: np.stack(a), *seeds)


def train_starts(loss_name: str, initial, x, t, epochs: int):
    """Train one loss from both starts (`START_BIASES`), every seed's initial
    weights with the start's output bias: one compiled program (`sweep`,
    per-start params). Full batch: an epoch is one step. The accuracy and
    the mean output on the t = 1 rows, before training and after each epoch,
    shape `(starts, seeds, epochs + 1)`."""
    logits_model = logits_network()
    if loss_name == "mse":
        model = layers.serial(*logits_network_layers(), layers.sigmoid())
        loss = losses.mse
    else:
        model, loss = logits_model, losses.sigmoid_binary_cross_entropy
    positive = t > 0.5

    def observe(p, state, point):
        o = jax.nn.sigmoid(logits_model.forward(p[:3], x)[0])
        accuracy = jnp.mean((o > 0.5) == positive)
        o_positive = jnp.sum(jnp.where(positive, o, 0.0)) / jnp.sum(positive)
        return accuracy, o_positive

    def with_bias(b0):
        p = (*initial[:2], {"W": initial[2]["W"], "b": np.full_like(initial[2]["b"], b0)})
        return (*p, ()) if loss_name == "mse" else p  # the sigmoid layer's (empty) params

    starts = jax.tree.map(lambda *a: np.stack(a), *[with_bias(b0) for b0 in START_BIASES])
    m = x.shape[0]
    # Full batch: one step per epoch, on a permutation of all the rows (the
    # same gradient up to the order of the batch mean's sum). Full-batch GD
    # draws nothing at random: the seeds share key 0.
    *_, history = sweep(
        model,
        loss,
        optim.sgd(LEARNING_RATE),
        m,
        epochs,
        (x, t),
        (starts, stateless(model, x.shape[1:])),
        jax.random.key(0),
        start_per_point=True,
        points_in_sequence=True,  # bit for bit the runs of their own they were
        evaluate=observe,
        evaluate_start=True,
        compile=jax.jit,
    )
    accuracy, o_positive = history["evaluation"]
    return {"accuracy": accuracy, "o_positive": o_positive}


def logits_network_layers():
    return [layers.dense(HIDDEN), layers.tanh(), layers.dense(1)]


def first_epoch(history, threshold):
    """First epoch (0 = before training) at which `history >= threshold`;
    `-1` where it never happens."""
    h = np.asarray(history) >= threshold
    return np.where(h.any(axis=1), h.argmax(axis=1), -1)


# -------------------------------------------------------------------- figure


def draw(data: dict):
    numbers = data["numbers"]
    plt = pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    g = numbers["gradient"]
    o = np.asarray(g["o"])
    ax = axes[0, 0]
    ax.plot(o, g["mse_backprop"], "C3", lw=2.5, label="sigmoid + MSE (backprop)")
    ax.plot(o, g["mse_formula"], "k:", label="(o - t) o (1 - o)")
    ax.plot(o, g["ce_backprop"], "C0", lw=2.5, label="sigmoid + cross-entropy (backprop)")
    ax.plot(o, g["ce_formula"], "k--", lw=1, label="o - t")
    ax.set_xlabel("output o (target t = 1)")
    ax.set_ylabel("dE/dz (per unit of z)")
    ax.set_title("Gradient at the output unit's input")
    ax.legend(fontsize=8)

    bx = axes[0, 1]
    bx.loglog(o, np.abs(g["mse_backprop"]), "C3", lw=2.5, label="|dE/dz|, sigmoid + MSE")
    bx.loglog(o, np.abs(g["ce_backprop"]), "C0", lw=2.5, label="|dE/dz|, cross-entropy")
    bx.axvline(
        np.exp(BAD_BIAS) / (1 + np.exp(BAD_BIAS)),
        color="0.5",
        ls=":",
        label=f"o at the wrong start (b0 = {BAD_BIAS:g})",
    )
    bx.set_xlabel("output o (target t = 1, log scale)")
    bx.set_ylabel("|dE/dz| (log scale)")
    bx.set_title("Near o = 0 the MSE gradient is ~o, cross-entropy's ~1")
    bx.legend(fontsize=8)

    styles = {
        ("ce", "bad"): ("C0", "-"),
        ("mse", "bad"): ("C3", "-"),
        ("ce", "neutral"): ("C0", ":"),
        ("mse", "neutral"): ("C3", ":"),
    }
    names = {"ce": "cross-entropy", "mse": "sigmoid + MSE"}
    for key, (color, ls) in styles.items():
        run = numbers["training"][f"{key[0]}_{key[1]}"]
        start = f"b0 = {BAD_BIAS:g}" if key[1] == "bad" else "b0 = 0"
        for ax_, field in ((axes[1, 0], "accuracy"), (axes[1, 1], "o_positive")):
            curves = np.asarray(run[field])
            epochs = np.arange(curves.shape[1])
            seed_band(
                ax_,
                epochs,
                curves,
                color=color,
                style=ls,
                alpha=0.15,
                label=f"{names[key[0]]}, {start}",
            )
    axes[1, 0].set_ylabel("training accuracy")
    axes[1, 0].set_title(f"Moons, 2-8-1 net, full-batch GD ({SPREAD})")
    axes[1, 1].set_ylabel("mean output o on the t = 1 examples")
    axes[1, 1].axhline(0.5, color="0.5", lw=1)
    axes[1, 1].set_title("Escaping the confidently wrong start")
    for ax_ in axes[1]:
        ax_.set_xlabel("epoch (= one gradient step)")
        ax_.set_xscale("symlog", linthresh=10)
        ax_.set_xlim(0, len(epochs) - 1)
        ax_.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------- run


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=8, full=32)
    epochs = pick(mode, smoke=20, quick=500, full=2000)

    o_grid = np.concatenate(
        [
            np.geomspace(1e-4, 0.01, 40, endpoint=False),
            np.linspace(0.01, 0.99, 99),
            1 - np.geomspace(0.01, 1e-4, 40)[1:],
        ]
    )
    d_mse, d_ce = output_gradients(o_grid)
    # The formulas at the output the network computed (z rounded to float32).
    o32 = 1 / (1 + np.exp(-np.float64(np.float32(np.log(o_grid / (1 - o_grid))))))
    f_mse, f_ce = (o32 - 1) * o32 * (1 - o32), o32 - 1
    at = int(np.argmin(np.abs(o_grid - 0.01)))
    gradient = {
        "o": o_grid,
        "mse_backprop": d_mse,
        "ce_backprop": d_ce,
        "mse_formula": f_mse,
        "ce_formula": f_ce,
        "max_abs_diff_mse": float(np.max(np.abs(d_mse - f_mse))),
        "max_abs_diff_ce": float(np.max(np.abs(d_ce - f_ce))),
        "at_o_0.01": {"mse": float(d_mse[at]), "ce": float(d_ce[at])},
    }

    x, t = datasets.moons(jax.random.key(0), n=N_POINTS, noise=0.1)
    initial = initial_params(jax.random.split(jax.random.key(1), seeds), x.shape[1])
    training = {}
    for loss_name in tracked(("ce", "mse")):
        runs = jax.device_get(train_starts(loss_name, initial, x, t, epochs))
        for i, start in enumerate(START_NAMES):
            out = jax.tree.map(lambda a, i=i: a[i], runs)
            recovered = first_epoch(out["o_positive"], 0.5)
            training[f"{loss_name}_{start}"] = {
                "accuracy": np.asarray(out["accuracy"]),
                "o_positive": np.asarray(out["o_positive"]),
                "epochs_to_recover": recovered,
                "recover_stats": seed_stats(recovered, missing=-1),
                "not_recovered": int(np.sum(recovered < 0)),
                "final_accuracy": seed_stats(np.asarray(out["accuracy"])[:, -1]),
                "accuracy_at_50": seed_stats(np.asarray(out["accuracy"])[:, min(50, epochs)]),
            }
    numbers = {"gradient": gradient, "training": training}
    settings = {
        "gradient_grid": "o in (1e-4, 1 - 1e-4), 178 points; t = 1; input 0, z = b",
        "data": f"moons(key 0, n={N_POINTS}, noise=0.1)",
        "model": f"2 -> {HIDDEN} tanh -> 1 (Glorot uniform), sigmoid output",
        "bad_start_output_bias": BAD_BIAS,
        "neutral_start_output_bias": 0.0,
        "optimizer": f"sgd({LEARNING_RATE}), full batch ({N_POINTS})",
        "epochs": epochs,
        "seeds": seeds,
        "seed_keys": "jax.random.split(jax.random.key(1), seeds): initial weights",
        "recovered": "first epoch at which the mean output on the t = 1 examples exceeds 0.5",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Backprop equals both formulas; at o = 0.01 MSE's dE/dz is ~o and
    cross-entropy's ~-1; from the wrong start every cross-entropy seed
    recovers, and MSE's quickest seed takes at least five times as long as
    cross-entropy's slowest."""
    numbers, settings = data["numbers"], data["settings"]
    seeds, epochs = settings["seeds"], settings["epochs"]
    gradient, training = numbers["gradient"], numbers["training"]
    ce, mse = training["ce_bad"], training["mse_bad"]
    ce_epochs = ce["recover_stats"]["max"]
    mse_recover = np.asarray(mse["epochs_to_recover"])
    mse_epochs = np.where(mse_recover < 0, epochs + 1, mse_recover)
    formulas_match = gradient["max_abs_diff_mse"] < 1e-6 and gradient["max_abs_diff_ce"] < 1e-6
    vanishes = abs(gradient["at_o_0.01"]["mse"]) < 0.011 and gradient["at_o_0.01"]["ce"] < -0.98
    stalls = (
        ce["not_recovered"] == 0
        and ce_epochs is not None
        and float(np.min(mse_epochs)) >= 5 * ce_epochs
    )
    supported = formulas_match and vanishes and stalls

    def fmt_recover(r):
        s = r["recover_stats"]
        text = f"{s['mean']:.0f} (range {s['min']:.0f}-{s['max']:.0f})" if s["count"] else "never"
        if r["not_recovered"]:
            text += f", {r['not_recovered']}/{seeds} not within {epochs}"
        return text

    text = (
        f"dE/dz at o=0.01, t=1: sigmoid+MSE {gradient['at_o_0.01']['mse']:.4f} vs cross-entropy "
        f"{gradient['at_o_0.01']['ce']:.2f} (backprop = formulas to "
        f"{max(gradient['max_abs_diff_mse'], gradient['max_abs_diff_ce']):.0e}); from outputs "
        f"~0.0025 on t=1, epochs until mean output > 0.5: cross-entropy {fmt_recover(ce)}, "
        f"MSE {fmt_recover(mse)}; accuracy after 50 epochs "
        f"{ce['accuracy_at_50']['mean']:.2f} vs {mse['accuracy_at_50']['mean']:.2f} ({seeds} seeds)"
    )
    summary = {
        "dEdz_mse_at_0.01": gradient["at_o_0.01"]["mse"],
        "dEdz_ce_at_0.01": gradient["at_o_0.01"]["ce"],
        "recover_epochs_ce_mean": ce["recover_stats"]["mean"],
        "recover_epochs_mse_mean": mse["recover_stats"]["mean"],
        "mse_not_recovered": mse["not_recovered"],
    }
    return Verdict(text, bool(supported), summary)
