"""Regularisation against overfitting, and batch normalisation's larger learning rates.

Claim (seed 002, "solving overfitting" and "batch normalization"): a network
with many parameters trained on little data learns the noise as if it were
pattern (overfitting); weight penalties (L1: `lambda |w|`, L2:
`lambda / 2 * w^2` added to the cost), dropout (an ensemble of thinned
networks) and stopping early shrink the gap between training and test
performance. Batch normalisation lets the network train with much larger
learning rates, which speeds training up.

Setup, overfitting: 300 training digits, 300 validation and the remaining 1197
for testing (a new split per seed), pixels in [0, 1]; 20% of the *training*
labels are replaced by a random class (validation and test labels are clean),
which makes memorisation visible: on clean digits the same network reaches
100% training and ~95% test accuracy whatever the regulariser, so the clean
no-penalty run is reported too, for reference. A 64-256-256-10 ReLU network
(He init, softmax cross-entropy), plain SGD, lr 0.1, batches of 32, trained
with no penalty, L2 at three strengths (`purenet.penalty(l2=...)`; purenet's
penalty is `(l2 / 2) * sum W^2` whatever the batch size, so `l2` is
torch's `weight_decay`), L1, and dropout (`layers.dropout(0.5)` after each
hidden ReLU). Early stopping takes the no-penalty run at the evaluation with
the lowest mean validation loss. Training is `experiments._common.sweep`
(`purenet.train.make_train`, `every` epochs at a time, then an
evaluation; each seed's split, label noise and init drawn inside the
program). The penalty is a value
whose strengths are traced: every penalized configuration (no penalty, the
L2 and L1 strengths, and no penalty on clean labels) and every seed train in
ONE `jax.vmap` over `(l2, l1, label noise)`, one compiled program; the
dropout net is a second one.

Setup, batch norm: the 80% digits training split (1438 images, standardised),
the same 64-128-128-10 ReLU net with and without `layers.batchnorm()`
after each hidden dense layer, plain SGD with batches of 64 at three learning
rates (one `sweep` over the rates per net), several seeds; measured: the
training-set loss (evaluation mode) after every epoch, epochs to reach a
loss of 0.05, and divergence (non-finite loss).
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
    drawn_start,
    init_inside,
    num_seeds,
    pick,
    progress,
    pyplot,
    returning,
    sweep,
)
from purenet import data, datasets, losses, metrics, optim, train
from purenet import layers as L

NAME = "regularization"
QUICK_SECONDS = 28  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "L1/L2 penalties, dropout and early stopping narrow the train/test gap of a large net on "
    "little data; batch norm allows larger learning rates and trains faster."
)

LOSS = losses.softmax_cross_entropy
WIDTH = 128
N_TRAIN = N_VAL = 300
LABEL_NOISE = 0.2
LR, BATCH = 0.1, 32
METHODS = {
    # name: (penalty strengths, dropout rate)
    "none": ({}, 0.0),
    "L2 1e-3": ({"l2": 1e-3}, 0.0),
    "L2 3e-3": ({"l2": 3e-3}, 0.0),
    "L2 1e-2": ({"l2": 1e-2}, 0.0),
    "L1 3e-4": ({"l1": 3e-4}, 0.0),
    "dropout 0.5": ({}, 0.5),
}
CLEAN = "none (clean labels)"  # the no-penalty net on clean labels, for reference
BN_LRS = (0.1, 1.0, 3.0)
BN_BATCH, BN_THRESHOLD = 64, 0.05


def _net(dropout_rate: float = 0.0, batchnorm: bool = False):
    layers = []
    for _ in range(2):
        layers.append(L.dense(WIDTH, W_init="he_normal"))
        if batchnorm:
            layers.append(L.batchnorm())
        layers.append(L.relu())
        if dropout_rate:
            layers.append(L.dropout(dropout_rate))
    return L.serial(*layers, L.dense(10, W_init="he_normal"))


# ---------------------------------------------------------------------- overfitting


def _overfit_runs(configs: dict, dropout_rate: float, seeds: int, chunks: int, every: int):
    """Train one network for every configuration `name: (l2, l1, label
    noise)` and seed, in one compiled program (`sweep` over a grid of
    configurations: the strengths are traced values of one
    `purenet.penalty`); accuracies and losses every `every` epochs:
    `{name: {quantity: array (seeds, chunks)}}`."""
    model = _net(dropout_rate)
    evaluate = train.make_evaluate(model, LOSS, metrics.multiclass_accuracy)  # eval mode
    x, t = datasets.digits()
    m = x.shape[0]
    fractions = (N_TRAIN / m, N_VAL / m, 1 - (N_TRAIN + N_VAL) / m)

    def draw(key, point):  # per seed: its split, its label noise, its init
        split_key, init_key, train_key, noise_key = jax.random.split(key, 4)
        (x_tr, t_tr), (x_va, t_va), (x_te, t_te) = data.split(split_key, x, t, fractions)
        flip_key, class_key = jax.random.split(noise_key)
        flip = jax.random.bernoulli(flip_key, point["noise"], t_tr.shape)
        t_tr = jnp.where(flip, jax.random.randint(class_key, t_tr.shape, 0, 10), t_tr)
        _, params, state = model.init(init_key, (x.shape[1],))
        sets = {"train": (x_tr, t_tr), "val": (x_va, t_va), "test": (x_te, t_te)}
        return {"key": train_key, "sets": sets, "params": params, "state": state}

    def record(params, state, point):
        return tuple(v for s in point["sets"].values() for v in evaluate(params, *s, state))

    keys = jax.random.split(jax.random.key(5), seeds)  # seed s: same split and init everywhere
    l2, l1, noise = (jnp.asarray(v, jnp.float32) for v in zip(*configs.values(), strict=True))
    evaluations = sweep(
        model,
        LOSS,
        optim.sgd(LR),
        BATCH,
        chunks * every,
        lambda point: point["sets"]["train"],
        drawn_start,
        keys,
        grid={"l2": l2, "l1": l1, "noise": noise},
        draw=draw,
        penalty=lambda point: purenet.penalty(l2=point["l2"], l1=point["l1"]),
        evaluate=record,
        every=every,
        compile=returning(lambda p, s, h: h["evaluation"]),  # the numbers of the run it was
    )
    names = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
    return {
        config: {n: np.asarray(h[c]) for n, h in zip(names, evaluations, strict=True)}
        for c, config in enumerate(configs)
    }


# ----------------------------------------------------------------------- batch norm


def _batchnorm_runs(batchnorm: bool, seeds: int, epochs: int):
    """Training-set loss after each epoch (index 0: before training) for every
    learning rate and seed: shape (rates, seeds, epochs + 1). One compiled
    program (`sweep` over the rates, traced values)."""
    x, t = datasets.digits()
    (x_tr, t_tr), _ = data.split(jax.random.key(0), x, t, (0.8, 0.2))
    stats = data.standardize_fit(x_tr)
    x_tr = data.standardize_apply(stats, x_tr)
    model = _net(batchnorm=batchnorm)
    evaluate = train.make_evaluate(model, LOSS)

    keys = jax.random.split(jax.random.key(6), seeds)  # same init keys with and without BN
    history = sweep(
        model,
        LOSS,
        lambda point: optim.sgd(point["lr"]),
        BN_BATCH,
        epochs,
        (x_tr, t_tr),
        drawn_start,
        keys,
        grid={"lr": jnp.asarray(BN_LRS, jnp.float32)},
        draw=init_inside(model, (x_tr.shape[1],)),  # per seed: its init, then its batch order
        evaluate=lambda p, s, point: evaluate(p, x_tr, t_tr, s)[0],  # s: batch norm's statistics
        evaluate_start=True,
        compile=returning(lambda p, s, h: h["evaluation"]),
    )
    return np.asarray(history)


def _epochs_to(threshold, curve):
    below = np.flatnonzero(np.isfinite(curve) & (curve <= threshold))
    return int(below[0]) if below.size else None


# -------------------------------------------------------------------------- figure


def draw(data: dict):
    numbers, every = data["numbers"], data["settings"]["evaluated_every_epochs"]
    plt = pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(16, 11))
    fig.suptitle(
        f"Overfitting {N_TRAIN} digits ({LABEL_NOISE:.0%} of training labels randomised), "
        f"64-{WIDTH}-{WIDTH}-10 ReLU, SGD lr {LR}; and batch norm at larger learning rates"
    )
    final = numbers["final"]
    names = list(final)
    ax = axes[0, 0]
    xs = np.arange(len(names))
    train_m = [final[n]["train_acc"] for n in names]
    # the stored spread is the std over seeds (ddof 0): one standard error is std / sqrt(n - 1)
    per = 1 / np.sqrt(max(int(data["settings"]["seeds"]) - 1, 1))
    train_s = [final[n]["train_acc_std"] * per for n in names]
    test_m = [final[n]["test_acc"] for n in names]
    test_s = [final[n]["test_acc_std"] * per for n in names]
    ax.bar(
        xs - 0.2,
        train_m,
        0.4,
        yerr=train_s,
        capsize=3,
        color="C0",
        label="training accuracy (on the noisy training labels)",
    )
    ax.bar(
        xs + 0.2,
        test_m,
        0.4,
        yerr=test_s,
        capsize=3,
        color="C1",
        label="test accuracy (clean labels)",
    )
    for i in range(len(names)):
        ax.text(i + 0.2, test_m[i] + test_s[i] + 0.01, f"{test_m[i]:.3f}", ha="center", fontsize=8)
        ax.text(
            i - 0.2, train_m[i] + train_s[i] + 0.01, f"{train_m[i]:.2f}", ha="center", fontsize=8
        )
    ax.set_xticks(xs, [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel(f"accuracy ({SPREAD})")
    ax.set_title("after the last epoch (early stopping: at the best validation loss)")
    ax.legend(fontsize=8, loc="upper right")

    ax = axes[0, 1]
    curves = numbers["curves"]
    epochs = (np.arange(len(curves["none"]["test_acc"])) + 1) * every
    shown = [n for n in ("none", numbers["best_l2"], "dropout 0.5") if n in curves]
    for n, color in zip(shown, ("C3", "C2", "C4"), strict=False):
        ax.plot(epochs, curves[n]["train_acc"], "--", color=color, label=f"{n}: train")
        ax.plot(epochs, curves[n]["test_acc"], "-", color=color, label=f"{n}: test")
    ax.plot(
        epochs,
        curves[CLEAN]["test_acc"],
        ":",
        color="k",
        label="none, clean labels: test",
    )
    stop = numbers["early_stopping_epoch"]
    ax.axvline(stop, color="gray", ls=":", lw=1)
    ax.text(stop, 0.52, f" early stop\n epoch {stop}", fontsize=8, color="gray")
    ax.set(
        xlabel="epoch",
        ylabel="accuracy (seed mean)",
        ylim=(0.5, 1.02),
        title="learning curves: the gap opens as the net memorises the noise",
    )
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    ax.grid(alpha=0.3)

    ax = axes[1, 0]
    for n in names:
        if n in curves:
            ax.plot(epochs, curves[n]["val_loss"], label=n)
    ax.axvline(stop, color="gray", ls=":", lw=1)
    ax.set(
        xlabel="epoch",
        ylabel="validation loss (clean labels, seed mean)",
        yscale="log",
        title="validation loss: where early stopping stops (no penalty run)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 1]
    bn = numbers["batchnorm"]
    for i, lr in enumerate(BN_LRS):
        for key, style in (("without", "--"), ("with", "-")):
            c = np.asarray(bn[key]["curves"][i], dtype=float)  # (seeds, epochs + 1)
            mean = np.exp(np.mean(np.log(np.where(np.isfinite(c), c, np.nan)), axis=0))
            diverged = bn[key]["diverged"][i]
            label = f"lr {lr:g}, {key} BN" + (f" (diverged: {diverged} seeds)" if diverged else "")
            ax.plot(np.arange(len(mean)), mean, style, color=f"C{i}", label=label)
    ax.axhline(BN_THRESHOLD, color="gray", ls=":", lw=1)
    ax.set(
        yscale="log",
        xlabel="epoch",
        ylabel="training loss (whole set, evaluation mode)",
        title=f"batch norm: 1438 digits, plain SGD, batch {BN_BATCH} (geometric mean over "
        "seeds;\nnon-finite runs are not drawn)",
    )
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- run


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=3, full=8)
    every = 5
    chunks = pick(mode, smoke=2, quick=20, full=40)  # evaluations; epochs = chunks * every
    bn_epochs = pick(mode, smoke=2, quick=10, full=20)
    everything = tuple(METHODS)
    methods = pick(
        mode, smoke=("none", "L2 1e-2", "dropout 0.5"), quick=everything, full=everything
    )

    # Every penalized configuration in one vmap, the dropout net in another.
    penalized = {
        name: (options.get("l2", 0.0), options.get("l1", 0.0), LABEL_NOISE)
        for name, (options, rate) in METHODS.items()
        if name in methods and not rate
    }
    penalized[CLEAN] = (0.0, 0.0, 0.0)
    progress(0, 3, "penalties")
    runs = _overfit_runs(penalized, 0.0, seeds, chunks, every)
    progress(1, 3, "dropout")
    for name in methods:
        rate = METHODS[name][1]
        if rate:
            runs.update(_overfit_runs({name: (0.0, 0.0, LABEL_NOISE)}, rate, seeds, chunks, every))
    runs = {name: runs[name] for name in (*methods, CLEAN)}  # in METHODS' order

    def final_of(h, i=-1):
        return {
            "train_acc": float(h["train_acc"][:, i].mean()),
            "train_acc_std": float(h["train_acc"][:, i].std()),
            "test_acc": float(h["test_acc"][:, i].mean()),
            "test_acc_std": float(h["test_acc"][:, i].std()),
            "test_loss": float(h["test_loss"][:, i].mean()),
        }

    final = {method: final_of(h) for method, h in runs.items() if method != CLEAN}
    none = runs["none"]
    best_chunk = int(np.argmin(none["val_loss"].mean(axis=0)))
    final["early stopping"] = final_of(none, best_chunk)
    final[CLEAN] = final_of(runs[CLEAN])
    curves = {
        method: {k: h[k].mean(axis=0) for k in ("train_acc", "test_acc", "val_loss")}
        for method, h in runs.items()
    }
    epochs = chunks * every
    l2_names = [n for n in runs if n.startswith("L2")]
    best_l2 = max(l2_names, key=lambda n: final[n]["test_acc"]) if l2_names else None

    progress(2, 3, "batch norm")
    bn = {}
    for key, flag in (("without", False), ("with", True)):
        c = _batchnorm_runs(flag, seeds, bn_epochs)
        bn[key] = {
            "curves": c,
            "diverged": [
                int(np.sum(~np.all(np.isfinite(c[i]), axis=1))) for i in range(len(BN_LRS))
            ],
            "final_loss": [
                float(np.mean(c[i][:, -1])) if np.all(np.isfinite(c[i])) else float("inf")
                for i in range(len(BN_LRS))
            ],
            "epochs_to_threshold": [
                _epochs_to(BN_THRESHOLD, np.exp(np.mean(np.log(c[i]), axis=0)))
                if np.all(np.isfinite(c[i]))
                else None
                for i in range(len(BN_LRS))
            ],
        }

    numbers = {
        "final": final,
        "curves": curves,
        "history": runs,
        "best_l2": best_l2,
        "early_stopping_epoch": (best_chunk + 1) * every,
        "batchnorm": bn,
    }
    settings = {
        "seeds": seeds,
        "split": f"{N_TRAIN} train / {N_VAL} validation / rest test, new split per seed",
        "label_noise": f"{LABEL_NOISE:.0%} of training labels replaced by a uniform random class",
        "model": f"64-{WIDTH}-{WIDTH}-10 ReLU, he_normal, softmax cross-entropy",
        "optimizer": f"sgd(lr={LR}), batch {BATCH}",
        "epochs": epochs,
        "evaluated_every_epochs": every,
        "methods": {n: {"penalty": o, "dropout": r} for n, (o, r) in METHODS.items() if n in runs},
        "one_vmap": "no penalty, every L2 and L1 strength and the clean-label run train as one "
        "jax.vmap over purenet.penalty(l2, l1) and the label noise (one compiled program)",
        "l2_convention": "(l2/2)*sum W^2, independent of batch size (torch weight_decay)",
        "early_stopping": "no-penalty run at the evaluation with the lowest seed-mean val loss",
        "batchnorm": {
            "data": "digits 80% split, standardised",
            "lrs": BN_LRS,
            "batch_size": BN_BATCH,
            "epochs": bn_epochs,
            "threshold": BN_THRESHOLD,
            "placement": "dense -> batchnorm -> relu, both hidden layers",
        },
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Overfitting: the no-penalty net's train/test gap exceeds 10 points,
    and the best regulariser (L2, L1, dropout or early stopping) beats its
    test accuracy by more than twice its seed std and narrows the gap. Batch
    norm: its quickest run reaches the loss threshold in fewer epochs than
    the plain net's quickest, and at the largest rate it stays finite where
    the plain net diverges (or ends lower)."""
    numbers, settings = data["numbers"], data["settings"]
    final, bn, seeds = numbers["final"], numbers["batchnorm"], settings["seeds"]
    epochs = settings["epochs"]
    final_loss = {k: [float(v) for v in bn[k]["final_loss"]] for k in bn}  # JSON: "inf"
    # Tests. Overfitting: the no-penalty run has a train/test gap of > 10 points;
    # the best regulariser (L2, L1, dropout or early stopping) beats its test
    # accuracy by more than twice its seed std and narrows the gap.
    gap = {n: f["train_acc"] - f["test_acc"] for n, f in final.items()}
    regularisers = [n for n in final if n not in ("none", CLEAN)]
    best = max(regularisers, key=lambda n: final[n]["test_acc"])
    overfit_ok = gap["none"] > 0.10
    helps_ok = (
        final[best]["test_acc"] - final["none"]["test_acc"] > 2 * final["none"]["test_acc_std"]
        and gap[best] < gap["none"]
    )

    # Batch norm: at the largest rate the plain net diverges or is slower, and
    # BN's fastest run reaches the threshold in fewer epochs than the plain
    # net's fastest run.
    def fastest(key):
        e = [v for v in bn[key]["epochs_to_threshold"] if v is not None]
        return min(e) if e else None

    fast_with, fast_without = fastest("with"), fastest("without")
    bn_ok = fast_with is not None and (fast_without is None or fast_with < fast_without)
    bn_stable_ok = bn["with"]["diverged"][-1] == 0 and (
        bn["without"]["diverged"][-1] > 0 or final_loss["with"][-1] < final_loss["without"][-1]
    )
    supported = bool(overfit_ok and helps_ok and bn_ok and bn_stable_ok)

    def acc(n):
        return f"{final[n]['test_acc']:.3f}"

    text = (
        f"{N_TRAIN} digits, {LABEL_NOISE:.0%} noisy labels, {epochs} epochs: no penalty train "
        f"{final['none']['train_acc']:.2f} / test {acc('none')}; test with "
        + ", ".join(f"{n} {acc(n)}" for n in regularisers)
        + f" (clean labels, no penalty: {final[CLEAN]['train_acc']:.2f} / "
        f"{acc(CLEAN)}); batch norm, epochs to loss {BN_THRESHOLD} at lr "
        + "/".join(f"{lr:g}" for lr in BN_LRS)
        + ": without "
        + "/".join(
            "div" if d else ("-" if e is None else str(e))
            for d, e in zip(
                bn["without"]["diverged"], bn["without"]["epochs_to_threshold"], strict=True
            )
        )
        + ", with "
        + "/".join(
            "div" if d else ("-" if e is None else str(e))
            for d, e in zip(bn["with"]["diverged"], bn["with"]["epochs_to_threshold"], strict=True)
        )
        + f" ({seeds} seeds)"
    )
    summary = {
        "no_penalty_test": final["none"]["test_acc"],
        "best_regulariser": best,
        "best_test": final[best]["test_acc"],
        "bn_epochs_to_threshold": fast_with,
        "plain_epochs_to_threshold": fast_without,
    }
    summary["tests"] = {
        "no_penalty_gap_over_10_points": bool(overfit_ok),
        "best_regulariser_helps": bool(helps_ok),
        "batchnorm_faster": bool(bn_ok),
        "batchnorm_stable_at_largest_lr": bool(bn_stable_ok),
    }
    return Verdict(text, supported, summary)
