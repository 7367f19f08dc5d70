"""Linear hidden units collapse the network into one linear map; a squashed output
cannot reach regression targets outside its range.

Claim (seed 001, "Neural Networks-4", pages 3-4): hidden layers with a linear
activation are as good as absent (the network is one linear map, so it cannot
solve a problem that is not linearly separable: XOR, two spirals), and that is
why the non-linearity belongs to the hidden layers; conversely, a sigmoid
output lies in (0, 1), so for regression targets in [-100, 100] the output
layer should be linear (`y = net`).

Setup:

* Classification: XOR (4 points) and two spirals (200 points, 1.5 turns), a
  `2 -> 32 -> 32 -> 1` network whose hidden activation is the identity,
  tanh or ReLU (the same initial weights for the three, per seed), logits
  with sigmoid cross-entropy, full-batch Adam (`purenet.train.make_train`
  with batches of the whole set), seeds at once with `jax.vmap`. The best accuracy any
  linear classifier can reach on each data set (the "linear limit") is
  computed exactly by trying every line through two data points.
* The collapse: for each trained linear-hidden network, `W = W1 W2 W3` and
  `b = (b1 W2 + b2) W3 + b3`; `x W + b` is compared with the network's
  output on the data and on the plotting grid.
* Regression: `t = 100 sin(x)` on 100 points, x uniform in [-pi, pi], a
  `1 -> 64 tanh -> 1` network with an identity, tanh or sigmoid output
  unit, MSE, full-batch Adam; measured: the largest `|prediction|` and the
  MSE (mean of `(y - t)^2`) on the training points.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    Mode,
    Verdict,
    init_many,
    num_seeds,
    pick,
    progress,
    pyplot,
    seed_stats,
    sweep,
)
from purenet import datasets, layers, losses, optim

NAME = "linear_hidden_collapse"
QUICK_SECONDS = 19  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Linear hidden units make the whole network one linear map (no XOR, no spirals); "
    "a squashed output cannot fit regression targets in [-100, 100], an identity output can"
)

HIDDEN = 32
CLASS_LR = 0.02
REG_HIDDEN = 64
REG_LR = 0.05
REG_SCALE = 100.0
ACTIVATIONS = {"linear": layers.identity, "tanh": layers.tanh, "relu": layers.relu}
HEADS = {"identity": layers.identity, "tanh": layers.tanh, "sigmoid": layers.sigmoid}


def classifier(activation: str):
    act = ACTIVATIONS[activation]
    return layers.serial(layers.dense(HIDDEN), act(), layers.dense(HIDDEN), act(), layers.dense(1))


def regressor(head: str):
    return layers.serial(layers.dense(REG_HIDDEN), layers.tanh(), layers.dense(1), HEADS[head]())


def train_many(model, loss, learning_rate, start, x, t, epochs, probe, linear=False):
    """Full-batch Adam (`make_train`, one step per epoch) from each of the
    stacked `start = (params, state)`, in one compiled call: final params,
    loss history, outputs on `x` and on `probe`, and for linear hidden
    units the collapse check."""
    m = x.shape[0]

    def finish(p, state, point):
        out = {"y": model.forward(p, x)[0], "y_probe": model.forward(p, probe)[0]}
        if linear:  # the network against its single linear map, on x and the grid
            W, b = compose(p)
            out["collapse_diff"] = jnp.maximum(
                jnp.max(jnp.abs(out["y"] - (x @ W + b))),
                jnp.max(jnp.abs(out["y_probe"] - (probe @ W + b))),
            )
            out["collapse_scale"] = jnp.maximum(
                jnp.max(jnp.abs(out["y"])), jnp.max(jnp.abs(out["y_probe"]))
            )
        return out

    # Full batch: any key gives the same run, up to the order of the batch sum.
    same_key = jnp.stack([jax.random.key(0)] * len(jax.tree.leaves(start)[0]))
    params, _, history = sweep(
        model,
        loss,
        optim.adam(learning_rate),
        m,
        epochs,
        (x, t),
        start,
        same_key,
        finish=finish,
        compile=jax.jit,
    )
    cost = history["step_loss"][..., 0]  # the cost before each step
    return jax.device_get({"params": params, "history": cost, **history["final"]})


def dense_params(p) -> list:
    """The dense layers' params of a classifier (what the JSON keeps of seed 0)."""
    return [p[i] for i in (0, 2, 4)]


def classifier_params(dense) -> tuple:
    """Back from `dense_params` (e.g. read from JSON) to the classifier's params."""
    d1, d2, d3 = ({k: jnp.asarray(v, jnp.float32) for k, v in d.items()} for d in dense)
    return (d1, (), d2, (), d3)


# --------------------------------------------------------------- linear limit


def linear_limit(x, t) -> float:
    """The best accuracy of any linear classifier on 2-D points: an optimal
    line can be moved to pass through two data points, which it may then put
    on either side, so trying every pair is exact for points in general
    position."""
    x = np.asarray(x, np.float64)
    y = np.asarray(t).reshape(-1) > 0.5
    n = len(x)
    best = max(y.mean(), 1 - y.mean())  # a constant classifier
    pairs = np.array(list(itertools.combinations(range(n), 2)))
    for chunk in np.array_split(pairs, max(1, len(pairs) // 2000)):
        i, j = chunk[:, 0], chunk[:, 1]
        d = x[j] - x[i]  # (P, 2)
        rel = x[None, :, :] - x[i][:, None, :]  # (P, n, 2)
        side = d[:, None, 0] * rel[:, :, 1] - d[:, None, 1] * rel[:, :, 0]
        off = np.ones_like(side, bool)
        off[np.arange(len(chunk)), i] = False
        off[np.arange(len(chunk)), j] = False
        on = (np.abs(side) < 1e-12) | ~off  # points on the line can go either way
        positive = (side > 0) & ~on
        negative = (side < 0) & ~on
        right = np.sum(positive & y, 1) + np.sum(negative & ~y, 1)
        flipped = np.sum(positive & ~y, 1) + np.sum(negative & y, 1)
        free = np.sum(on, 1)
        best = max(best, float(np.max(np.maximum(right, flipped) + free)) / n)
    return best


# ------------------------------------------------------------------- collapse


def compose(p):
    """The single linear map of a linear-hidden network: `(W, b)`."""
    (d1, _, d2, _, d3) = p
    W = d1["W"] @ d2["W"] @ d3["W"]
    b = (d1["b"] @ d2["W"] + d2["b"]) @ d3["W"] + d3["b"]
    return W, b


def grid_for(x, n=120):
    lo, hi = np.min(np.asarray(x), 0) - 0.3, np.max(np.asarray(x), 0) + 0.3
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))
    return g0, g1, jnp.asarray(np.stack([g0.ravel(), g1.ravel()], 1), jnp.float32)


# ------------------------------------------------------------------- figure


def _probabilities(task_pictures: dict, act: str, g):
    """Seed 0's output probabilities on the plotting grid, from its stored params."""
    p = classifier_params(task_pictures[f"{act}_params_seed0"])
    logits = classifier(act).forward(p, g)[0]
    return 1 / (1 + np.exp(-np.float64(np.asarray(logits))))


def draw(data: dict):
    numbers = data["numbers"]
    pictures = numbers["pictures"]
    plt = pyplot()

    fig = plt.figure(figsize=(16, 8.4))
    grid = fig.add_gridspec(2, 4)
    for col, (task, act) in enumerate(itertools.product(("xor", "spirals"), ("linear", "tanh"))):
        ax = fig.add_subplot(grid[0, col])
        pic = pictures[task]
        g0, g1, g = grid_for(pic["x"])
        prob = _probabilities(pic, act, g).reshape(g0.shape)
        ax.contourf(g0, g1, prob, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
        if np.ptp(prob) > 1e-3:
            ax.contour(g0, g1, prob, levels=[0.5], colors="k", linewidths=1.5)
        else:  # a flat output has no boundary, only rounding noise around p = 0.5
            ax.text(
                0.5,
                0.6,
                "p = 0.5 everywhere:\nno decision boundary",
                ha="center",
                transform=ax.transAxes,
                fontsize=9,
                bbox={"fc": "w", "alpha": 0.8},
            )
        x, t = np.asarray(pic["x"]), np.asarray(pic["t"]).reshape(-1)
        ax.scatter(
            x[t < 0.5, 0],
            x[t < 0.5, 1],
            c="C0",
            s=14 if task == "spirals" else 80,
            edgecolors="k",
            label="t = 0",
        )
        ax.scatter(
            x[t > 0.5, 0],
            x[t > 0.5, 1],
            c="C3",
            s=14 if task == "spirals" else 80,
            edgecolors="k",
            label="t = 1",
        )
        ax.text(
            0.02,
            0.02,
            f"p on this grid: {prob.min():.6f} .. {prob.max():.6f}",
            transform=ax.transAxes,
            fontsize=7,
            bbox={"fc": "w", "alpha": 0.8},
        )
        acc = numbers["classification"][task][act]["accuracy"]["mean"]
        ax.set_title(
            f"{task}, {act} hidden units: accuracy {acc:.2f}\n"
            f"(mean over seeds; seed 0 shown, black line p = 0.5)",
            fontsize=10,
        )
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
        if col == 0:
            ax.legend(fontsize=8, loc="center")

    bx = fig.add_subplot(grid[1, 0:2])
    tasks = ("xor", "spirals")
    acts = [a for a in ACTIVATIONS if a in numbers["classification"]["xor"]]
    width = 0.25
    for k, act in enumerate(acts):
        means = [numbers["classification"][task][act]["accuracy"]["mean"] for task in tasks]
        lows = [numbers["classification"][task][act]["accuracy"]["min"] for task in tasks]
        highs = [numbers["classification"][task][act]["accuracy"]["max"] for task in tasks]
        pos = np.arange(len(tasks)) + (k - (len(acts) - 1) / 2) * width
        err = [np.subtract(means, lows), np.subtract(highs, means)]
        bx.bar(pos, means, width, yerr=err, capsize=4, label=f"{act} hidden units")
    for i, task in enumerate(tasks):
        limit = numbers["classification"][task]["linear_limit"]
        bx.hlines(limit, i - 1.6 * width, i + 1.6 * width, colors="k", linestyles="--")
        bx.annotate(
            f"best linear classifier {limit:.3f}",
            (i, limit),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    bx.set_xticks(np.arange(len(tasks)), tasks)
    bx.set_ylim(0.2, 1.08)
    bx.set_ylabel("training accuracy (mean, bars = min..max)")
    bx.set_title("Linear hidden units never beat the best linear classifier")
    bx.legend(fontsize=8, loc="lower right")

    cx = fig.add_subplot(grid[1, 2:4])
    reg = pictures["regression"]
    order = np.argsort(np.asarray(reg["x"]).reshape(-1))
    xs = np.asarray(reg["x"]).reshape(-1)[order]
    cx.plot(
        xs, np.asarray(reg["t"]).reshape(-1)[order], "k", lw=4, alpha=0.3, label="target 100 sin(x)"
    )
    colors = {"identity": "C2", "tanh": "C1", "sigmoid": "C4"}
    heads = [h for h in HEADS if h in numbers["regression"]]
    for head in heads:
        color = colors[head]
        r = numbers["regression"][head]
        y = np.asarray(reg[head]).reshape(-1)[order]
        cx.plot(
            xs,
            y,
            color=color,
            label=f"{head} output: max |y| {r['max_abs_prediction']['mean']:.1f}"
            f", MSE {r['mse']['mean']:.3g}",
        )
    zoom = cx.inset_axes([0.62, 0.08, 0.35, 0.32])
    for head in heads[1:]:
        zoom.plot(xs, np.asarray(reg[head]).reshape(-1)[order], color=colors[head])
    zoom.set_ylim(-1.3, 1.3)
    zoom.axhline(1, color="0.6", lw=0.8, ls=":")
    zoom.axhline(-1, color="0.6", lw=0.8, ls=":")
    zoom.set_title("squashed outputs, zoomed", fontsize=8)
    zoom.tick_params(labelsize=7)
    cx.set_xlabel("x")
    cx.set_ylabel("y (target units)")
    cx.set_title("Regression to [-100, 100] (seed 0; MSE = mean (y - t)^2 over seeds)")
    cx.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------- run


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=8, full=32)
    epochs = pick(mode, smoke=30, quick=1500, full=3000)
    keys = jax.random.split(jax.random.key(1), seeds)
    # Smoke mode (tests) drops one non-linear activation and one squashed
    # output to save compilations; the code paths are the same.
    everything = (list(ACTIVATIONS), list(HEADS))
    activations, heads = pick(
        mode, smoke=(["linear", "tanh"], ["identity", "tanh"]), quick=everything, full=everything
    )
    spiral_points = pick(mode, smoke=40, quick=200, full=200)

    tasks = {
        "xor": datasets.xor(),
        "spirals": datasets.two_spirals(jax.random.key(0), n=spiral_points),
    }
    start = init_many(classifier("tanh"), keys, (2,))  # shared by all activations and tasks
    classification, pictures = {}, {}
    collapse = []
    units = len(tasks) * len(activations) + len(heads)
    for task, (x, t) in tasks.items():
        _, _, g = grid_for(x)
        result = {"linear_limit": linear_limit(x, t)}
        pictures[task] = {"x": x, "t": t}
        for act in activations:
            progress(
                len(activations) * list(tasks).index(task) + activations.index(act),
                units,
                f"{task}, {act}",
            )
            model = classifier(act)
            out = train_many(
                model,
                losses.sigmoid_binary_cross_entropy,
                CLASS_LR,
                start,
                x,
                t,
                epochs,
                g,
                linear=act == "linear",
            )
            accuracy = np.mean((out["y"] > 0) == (np.asarray(t) > 0.5), axis=(1, 2))
            result[act] = {
                "accuracy": seed_stats(accuracy),
                "accuracy_per_seed": accuracy,
                "final_loss": seed_stats(out["history"][:, -1]),
            }
            seed0 = jax.tree.map(lambda a: a[0], out["params"])
            pictures[task][f"{act}_params_seed0"] = dense_params(seed0)
            if act == "linear":
                collapse.append((out["collapse_diff"], out["collapse_scale"]))
                W, b = compose(jax.tree.map(lambda a: a[0], out["params"]))
                result["linear"]["composed_seed0"] = {"W": np.asarray(W), "b": np.asarray(b)}
        classification[task] = result

    x, _ = datasets.noisy_sine(jax.random.key(0), n=100, noise=0.0)
    t = REG_SCALE * jnp.sin(x)
    reg_start = init_many(regressor("identity"), keys, (1,))
    regression = {}
    pictures["regression"] = {"x": x, "t": t}
    for i, head in enumerate(heads):
        progress(units - len(heads) + i, units, f"regression, {head} output")
        out = train_many(regressor(head), losses.mse, REG_LR, reg_start, x, t, epochs, x)
        y, target = out["y"], np.asarray(t)
        regression[head] = {
            "max_abs_prediction": seed_stats(np.max(np.abs(y), axis=(1, 2))),
            "mse": seed_stats(np.mean((y - target) ** 2, axis=(1, 2))),
        }
        pictures["regression"][head] = y[0]
    target_variance = float(jnp.var(t))

    diffs = np.concatenate([np.asarray(d) for d, _ in collapse])
    scales = np.concatenate([np.asarray(sc) for _, sc in collapse])
    numbers = {
        "classification": classification,
        "collapse": {
            "max_abs_diff": float(diffs.max()),
            "max_abs_output": float(scales.max()),
            # relative to the output's size, or to 1 where the outputs are ~0
            # (the best linear fit to XOR is the constant logit 0)
            "max_scaled_diff": float(np.max(diffs / np.maximum(scales, 1.0))),
        },
        "regression": regression,
        "regression_target_variance": target_variance,
        "pictures": pictures,
    }
    settings = {
        "classifier": f"2 -> {HIDDEN} -> {HIDDEN} -> 1, hidden activation identity/tanh/relu, "
        "sigmoid cross-entropy on logits",
        "activations": activations,
        "heads": heads,
        "classification_optimizer": f"adam({CLASS_LR}), full batch",
        "xor": "the 4 patterns",
        "spirals": f"two_spirals(key 0, n={spiral_points}, noise=0, turns=1.5)",
        "regressor": f"1 -> {REG_HIDDEN} tanh -> 1, output identity/tanh/sigmoid, MSE",
        "regression_data": "x = noisy_sine(key 0, n=100, noise=0) inputs, t = 100 sin(x)",
        "regression_optimizer": f"adam({REG_LR}), full batch",
        "epochs": epochs,
        "seeds": seeds,
        "seed_keys": "jax.random.split(jax.random.key(1), seeds): initial weights, shared by the "
        "activations (and heads) compared",
        "linear_limit": "exact: every line through two data points, each side assignment",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Linear hidden units: the network equals its composed linear map (to
    1e-5 of the outputs' size) and never beats the best linear classifier;
    non-linear ones reach 95 % on XOR and spirals. Squashed outputs stay in
    their range with an MSE above half the targets' variance; the identity
    output fits to 1 % of it."""
    numbers, settings = data["numbers"], data["settings"]
    activations, heads, seeds = settings["activations"], settings["heads"], settings["seeds"]
    classification, regression = numbers["classification"], numbers["regression"]
    target_variance = numbers["regression_target_variance"]

    c = classification
    collapses = numbers["collapse"]["max_scaled_diff"] < 1e-5
    linear_bounded = all(
        c[task]["linear"]["accuracy"]["max"] <= c[task]["linear_limit"] + 1e-9 for task in c
    )
    nonlinear_solves = all(
        c[task][act]["accuracy"]["mean"] >= 0.95 for task in c for act in activations[1:]
    )
    reg = regression
    squashed_capped = all(
        reg[h]["max_abs_prediction"]["max"] <= 1.0 + 1e-6
        and reg[h]["mse"]["min"] > 0.5 * target_variance
        for h in heads[1:]
    )
    identity_fits = reg["identity"]["mse"]["mean"] < 0.01 * target_variance
    supported = collapses and linear_bounded and nonlinear_solves and squashed_capped
    supported = supported and identity_fits

    def acc(task, act):
        return c[task][act]["accuracy"]["mean"]

    def nonlinear(task):
        return " / ".join(f"{act} {acc(task, act):.2f}" for act in activations[1:])

    squashed = ", ".join(
        f"{h} output MSE {reg[h]['mse']['mean']:.0f}, max |y| "
        f"{reg[h]['max_abs_prediction']['max']:.2f}"
        for h in heads[1:]
    )
    verdict = (
        f"linear hidden = x W + b to {numbers['collapse']['max_abs_diff']:.0e} "
        f"(outputs up to {numbers['collapse']['max_abs_output']:.0f}); accuracy XOR linear "
        f"{acc('xor', 'linear'):.2f} (best linear classifier {c['xor']['linear_limit']:.2f}) vs "
        f"{nonlinear('xor')}, spirals linear {acc('spirals', 'linear'):.3f} (best "
        f"{c['spirals']['linear_limit']:.3f}) vs {nonlinear('spirals')}; t = 100 sin(x): "
        f"identity output MSE {reg['identity']['mse']['mean']:.2g}, max |y| "
        f"{reg['identity']['max_abs_prediction']['mean']:.1f} vs {squashed} ({seeds} seeds)"
    )
    summary = {
        "collapse_max_abs_diff": numbers["collapse"]["max_abs_diff"],
        "xor_linear": acc("xor", "linear"),
        "xor_tanh": acc("xor", "tanh"),
        "spirals_linear": acc("spirals", "linear"),
        "spirals_tanh": acc("spirals", "tanh"),
        "regression_mse_identity": reg["identity"]["mse"]["mean"],
        "regression_mse_tanh_output": reg["tanh"]["mse"]["mean"],
    }
    return Verdict(verdict, bool(supported), summary)
