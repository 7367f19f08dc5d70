"""Zero or constant initialisation never breaks the symmetry between hidden units.

Claim (seed 000, Ng's "Random initialization"): if every weight starts at
zero, every hidden unit of a layer computes the same value, receives the same
delta in backprop and the same update, so the units stay identical forever and
the layer is as good as one unit; random initialisation breaks the symmetry.

Setup: scikit-learn's 8x8 digits (10 classes; 70 % train, 30 % test, one
fixed split), a `64 -> 16 sigmoid -> 10` network, softmax cross-entropy,
mini-batch SGD with momentum, the hand-written gradient. Three arms, each run
over several seeds at once with `jax.vmap` (the seed draws the shuffling
and, for the random arm, the weights):

* `zeros`: every weight and bias 0 (`dense(..., W_init="zeros")`);
* `constant`: every weight `c` (`purenet.params.constant(c)`), biases 0;
* `random`: Glorot uniform weights (the library's default), biases 0.

What actually happens with zeros and sigmoid hidden units: the hidden outputs
are all `sigmoid(0) = 0.5` and the output weights get identical rows; at the
first step the hidden deltas are zero (the output weights are zero), after it
they are equal but non-zero, so the first-layer weights *do* move, all in
lockstep. With a constant the units are identical and active from the start.
(With tanh or ReLU hidden units and zero weights the hidden outputs and their
gradients are exactly zero and nothing but the output biases ever moves.)

Training: `purenet.train.make_train`, `jax.vmap`-ed over seeds, one
compiled program for the three arms (they differ only in their initial
params), recording the training loss and the units' spread after each epoch.

Measured: for each arm, the largest difference between the incoming weight
vectors (with biases) of any two hidden units, `max_{i,j,k} |W1[k,i] -
W1[k,j]|`, against the size of those weights, the number of distinct hidden
units, train loss per epoch, and test accuracy (mean, std, min and max over
seeds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    SPREAD,
    Mode,
    Verdict,
    num_seeds,
    pick,
    progress,
    pyplot,
    seed_band,
    seed_stats,
    stateless,
    sweep,
)
from purenet import data, datasets, layers, losses, metrics, objective, optim, params

NAME = "zero_init_symmetry"
QUICK_SECONDS = 10  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Zero or constant initial weights keep all hidden units identical through training "
    "(the layer acts as one unit); random initial weights break the symmetry and learn"
)

HIDDEN = 16
CONSTANT = 0.1
LEARNING_RATE = 0.1
MASS = 0.9
BATCH_SIZE = 32
ARMS = ("zeros", "constant", "random")


INITIALIZERS = {
    "zeros": params.zeros(),
    "constant": params.constant(CONSTANT),
    "random": params.xavier_uniform(),
}


def make_model(arm: str):
    """The 64-16-10 sigmoid network with the arm's initialisers."""
    init = INITIALIZERS[arm]
    return layers.serial(
        layers.dense(HIDDEN, W_init=init), layers.sigmoid(), layers.dense(10, W_init=init)
    )


def initial_params(arm: str, keys, n_in: int):
    """Each seed's initial params for one arm, stacked along a leading axis."""
    model = make_model(arm)
    if arm == "random":
        # One eager init per key: compiling the random kernels under vmap and
        # jit costs seconds more than this loop.
        seeds = [model.init(k, (n_in,), jnp.float32)[1] for k in keys]
        return jax.tree.map(lambda *a: np.stack(a), *seeds)
    # Zeros and constants need no key: call the initialiser as dense() would,
    # (W_init for W, zeros for b), without compiling model.init's key splits.
    init = INITIALIZERS[arm]
    f32 = jnp.float32
    p = (
        {"W": init(None, (n_in, HIDDEN), f32), "b": params.zeros()(None, (HIDDEN,), f32)},
        (),
        {"W": init(None, (HIDDEN, 10), f32), "b": params.zeros()(None, (10,), f32)},
    )
    return jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (len(keys), *a.shape)), p)


def hidden_spread(p):
    """Largest difference between the incoming weight vectors (bias included)
    of any two hidden units, and the largest incoming weight in magnitude."""
    first = p[0]
    incoming = jnp.concatenate([first["W"], first["b"][None, :]], axis=0)  # (65, H)
    diff = jnp.abs(incoming[:, :, None] - incoming[:, None, :])
    return jnp.max(diff), jnp.max(jnp.abs(incoming))


def train_arms(starts, keys, x, t, x_test, t_test, epochs):
    """Train from each arm's and seed's initial params (`starts`, leading
    axes `(arms, seeds)`), shuffling with the seed's key: one compiled
    program for the three arms (`sweep` with per-arm starts); per-epoch
    loss and spread history, final spread, scale and accuracies."""
    model = make_model("random")  # the initialiser plays no part in training
    loss = losses.softmax_cross_entropy
    J = objective(model, loss)
    state = stateless(model, x.shape[1:])

    def evaluate(p, state, point):
        return J(p, x, t), hidden_spread(p)[0]

    def finish(p, state, point):
        spread, scale = hidden_spread(p)
        return {
            "spread": spread,
            "scale": scale,
            "test_accuracy": metrics.multiclass_accuracy(model.forward(p, x_test)[0], t_test),
            "train_accuracy": metrics.multiclass_accuracy(model.forward(p, x)[0], t),
        }

    params, _, history = sweep(
        model,
        loss,
        optim.momentum(LEARNING_RATE, MASS),
        BATCH_SIZE,
        epochs,
        (x, t),
        (starts, state),
        keys,
        start_per_point=True,
        points_in_sequence=True,  # bit for bit the three runs of its own it was
        evaluate=evaluate,
        finish=finish,
        compile=jax.jit,
    )
    loss_history, spread_history = history["evaluation"]
    return {
        "params": params,
        "loss": loss_history,
        "spread_history": spread_history,
        **history["final"],
    }


def distinct_units(W1, b1, tol: float) -> int:
    """Number of distinct hidden units: columns further apart than `tol`."""
    incoming = np.concatenate([W1, b1[None, :]], axis=0).T
    reps = []
    for unit in incoming:
        if not any(np.max(np.abs(unit - r)) <= tol for r in reps):
            reps.append(unit)
    return len(reps)


def draw(data: dict):
    numbers = data["numbers"]
    example = numbers["example_W1_seed0"]
    plt = pyplot()

    fig = plt.figure(figsize=(14, 7.2))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 1])
    ax = fig.add_subplot(grid[0, 0])
    colors = {"zeros": "C3", "constant": "C1", "random": "C0"}
    styles = {"zeros": "-", "constant": "--", "random": "-"}
    for arm in ARMS:
        curves = np.asarray(numbers[arm]["loss_per_epoch"])
        epochs = np.arange(1, curves.shape[1] + 1)
        acc = numbers[arm]["test_accuracy"]
        label = f"{arm} (test acc {acc['mean']:.2f} ± {acc['std']:.2f})"
        seed_band(ax, epochs, curves, color=colors[arm], style=styles[arm], label=label, alpha=0.25)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy, nats)")
    ax.set_title(f"Training loss ({SPREAD})")
    ax.set_yscale("log")
    ax.legend(fontsize=8)

    bx = fig.add_subplot(grid[0, 1])
    for arm in ARMS:
        spread = np.asarray(numbers[arm]["spread_per_epoch"])
        epochs = np.arange(1, spread.shape[1] + 1)
        bx.plot(
            epochs,
            np.maximum(spread.max(0), 1e-12),
            color=colors[arm],
            ls=styles[arm],
            lw=3 if arm == "zeros" else 1.5,
            label=arm,
        )
    bx.set_yscale("log")
    bx.set_xlabel("epoch")
    bx.set_ylabel("max |W1[:, i] - W1[:, j]| (weight units)")
    bx.set_title(
        "Largest difference between two hidden units\n(max over seeds; exact 0 drawn at 1e-12)"
    )
    bx.legend(fontsize=8)

    cx = fig.add_subplot(grid[0, 2])
    arms = list(ARMS)
    distinct = [numbers[arm]["distinct_units"]["max"] for arm in arms]
    cx.bar(arms, distinct, color=[colors[a] for a in arms])
    for i, d in enumerate(distinct):
        cx.annotate(f"{d:.0f}", (i, d), ha="center", va="bottom")
    cx.axhline(HIDDEN, color="k", ls="--", lw=1, label=f"{HIDDEN} hidden units")
    cx.set_ylabel("distinct hidden units (max over seeds)")
    cx.set_title("Effective width of the hidden layer")
    cx.set_ylim(0, HIDDEN * 1.2)
    cx.legend(fontsize=8, loc="center right")

    for i, arm in enumerate(arms):
        hx = fig.add_subplot(grid[1, i])
        w = np.asarray(example[arm]).T  # (hidden, inputs)
        limit = max(np.max(np.abs(w)), 1e-12)
        image = hx.imshow(w, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
        hx.set_xlabel("input pixel (0..63)")
        hx.set_ylabel("hidden unit")
        hx.set_title(f"{arm} init: incoming weights after training (seed 0)")
        fig.colorbar(image, ax=hx, label="weight")
    fig.tight_layout()
    return fig


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=8, full=32)
    epochs = pick(mode, smoke=3, quick=40, full=150)
    x, labels = datasets.digits()
    (x_train, t_train), (x_test, t_test) = data.split(jax.random.key(0), x, labels, (0.7, 0.3))
    init_keys, train_keys = jnp.split(jax.random.split(jax.random.key(1), 2 * seeds), 2)
    starts = [initial_params(arm, init_keys, x_train.shape[1]) for arm in ARMS]
    starts = jax.tree.map(lambda *a: np.stack(a), *starts)  # (arms, seeds, ...)
    progress(0, 1, "three arms")
    runs = jax.device_get(train_arms(starts, train_keys, x_train, t_train, x_test, t_test, epochs))

    numbers, example = {}, {}
    for i, arm in enumerate(ARMS):
        out = jax.tree.map(lambda a, i=i: a[i], runs)
        W1, b1 = out["params"][0]["W"], out["params"][0]["b"]
        scale = np.asarray(out["scale"])
        distinct = [distinct_units(W1[s], b1[s], 1e-6 * max(scale[s], 1.0)) for s in range(seeds)]
        numbers[arm] = {
            "test_accuracy": seed_stats(out["test_accuracy"]),
            "train_accuracy": seed_stats(out["train_accuracy"]),
            "unit_spread": seed_stats(out["spread"]),
            "weight_scale": seed_stats(scale),
            "distinct_units": seed_stats(distinct),
            "loss_per_epoch": np.asarray(out["loss"]),
            "spread_per_epoch": np.asarray(out["spread_history"]),
            "final_loss": seed_stats(np.asarray(out["loss"])[:, -1]),
        }
        example[arm] = W1[0]
    numbers["example_W1_seed0"] = example
    settings = {
        "data": "sklearn digits / 16, split 70/30 with key 0",
        "train_rows": int(x_train.shape[0]),
        "test_rows": int(x_test.shape[0]),
        "model": f"64 -> {HIDDEN} sigmoid -> 10, softmax cross-entropy",
        "constant": CONSTANT,
        "optimizer": f"momentum(lr={LEARNING_RATE}, mass={MASS})",
        "batch_size": BATCH_SIZE,
        "epochs": epochs,
        "seeds": seeds,
        "seed_keys": "jax.random.split(jax.random.key(1), 2 * seeds): the first half draws "
        "the random arm's initial weights, the second half the shuffling of every arm",
        "distinct_unit_tolerance": "1e-6 * max(1, max |incoming weight|)",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Zeros and constant: one distinct unit (spread within rounding of the
    weights' size); random: every unit distinct, test accuracy >= 0.9 and at
    least 0.1 above both symmetric arms."""
    numbers, settings = data["numbers"], data["settings"]
    z, c, r = numbers["zeros"], numbers["constant"], numbers["random"]
    symmetric = all(
        arm["unit_spread"]["max"] <= 1e-5 * max(arm["weight_scale"]["max"], 1.0)
        and arm["distinct_units"]["max"] == 1
        for arm in (z, c)
    )
    learns = r["test_accuracy"]["mean"] >= 0.9 and r["distinct_units"]["min"] == HIDDEN
    gap = r["test_accuracy"]["mean"] - max(z["test_accuracy"]["max"], c["test_accuracy"]["max"])
    supported = symmetric and learns and gap >= 0.1

    text = (
        f"after {settings['epochs']} epochs, max difference between hidden units: zeros "
        f"{z['unit_spread']['max']:.1e} (weights up to {z['weight_scale']['max']:.2f}), "
        f"constant {c['unit_spread']['max']:.1e}, random {r['unit_spread']['min']:.2f}; "
        f"distinct units {z['distinct_units']['max']:.0f}/{c['distinct_units']['max']:.0f}/"
        f"{r['distinct_units']['min']:.0f} of {HIDDEN}; test accuracy zeros "
        f"{z['test_accuracy']['mean']:.2f}, constant {c['test_accuracy']['mean']:.2f}, random "
        f"{r['test_accuracy']['mean']:.3f} ± {r['test_accuracy']['std']:.3f} "
        f"({settings['seeds']} seeds)"
    )
    summary = {
        "spread_zeros": z["unit_spread"]["max"],
        "spread_constant": c["unit_spread"]["max"],
        "spread_random": r["unit_spread"]["min"],
        "test_acc_zeros": z["test_accuracy"]["mean"],
        "test_acc_constant": c["test_accuracy"]["mean"],
        "test_acc_random": r["test_accuracy"]["mean"],
        "moved_from_zero": z["weight_scale"]["min"] > 0,  # the zero units move, in lockstep
    }
    return Verdict(text, bool(supported), summary)
