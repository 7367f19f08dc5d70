"""Output heads: the right output layer and loss for each kind of target.

Claim (seed 001, "Neural Networks-4", pp. 5-26; seed 002, "losses"): a binary
task takes one sigmoid output with binary cross-entropy; a multi-class task
takes one-hot targets, a softmax output and cross-entropy; a multi-label task
takes one independent sigmoid per label and the sum of their binary
cross-entropies. Coding three nominal classes as one output with targets
1 / 0.5 / 0 and MSE is a bad idea: it tells the network that mistaking the
"1" class for the "0.5" class is a smaller error than mistaking it for the "0"
class, an order that nominal classes do not have.

Setup:

* heads: binary, breast cancer (30 features, standardised), a 30-16-1 tanh
  net, `sigmoid_binary_cross_entropy` on the logit, `binary_accuracy`;
  multi-class, digits (64 pixels), 64-32-10 tanh, one-hot targets with
  `softmax_cross_entropy`, `multiclass_accuracy`; multi-label,
  `datasets.multi_label` (2-D points, three independent labels), 2-32-32-3
  tanh, `multilabel_sigmoid_cross_entropy`, `multilabel_accuracy` (Hamming
  accuracy and exact match);
* three classes, iris and wine (standardised), an `n`-8-k tanh net: one-hot
  targets with softmax cross-entropy (k = 3) against one sigmoid output trained
  with MSE on the codes 1 / 0.5 / 0 (k = 1; the prediction is the nearest
  code). Which class gets the middle code is arbitrary for nominal classes, so
  all three assignments are run (the reverse of an assignment is the same
  problem mirrored) and the claim is tested on their average. Iris's species
  happen to be ordered by petal size, so the coding that follows that order
  does almost as well as one-hot there; the other two do not.

Every configuration is trained with plain SGD (`purenet.train.make_train`)
for a fixed number of epochs, for several seeds at once (`jax.vmap`); each
seed draws its own 70 / 30
train / test split, initialisation and batch order. Reported: test accuracy,
mean and standard deviation across seeds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    SPREAD,
    Mode,
    Verdict,
    drawn_start,
    num_seeds,
    pick,
    progress,
    pyplot,
    returning,
    seed_bar,
    sweep,
    tracked,
)
from purenet import data, datasets, losses, metrics, optim
from purenet import layers as L

NAME = "output_heads"
QUICK_SECONDS = 12  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Binary: sigmoid + BCE; multi-class: one-hot + softmax + cross-entropy; multi-label: "
    "independent sigmoids + summed BCE; coding 3 classes as one output 1/0.5/0 with MSE "
    "imposes a false order and does worse than one-hot."
)

F32 = jnp.float32
LEARNING_RATE = 0.1  # plain SGD, every head
BATCH_SIZE = 16
CODES = (1.0, 0.5, 0.0)  # the single-output codes, given to the classes in some order
CLASS_NAMES = {
    "iris": ("setosa", "versicolor", "virginica"),
    "wine": ("cultivar 0", "cultivar 1", "cultivar 2"),
}


# ---------------------------------------------------------------------------- data


def _split_standardized(key, x, t, fractions=(0.7, 0.3)):
    """A 70 / 30 split, standardised with the training part's statistics.
    Traceable, so every seed draws its own split inside the vmapped run."""
    (x_tr, t_tr), (x_te, t_te) = data.split(key, x, t, fractions)
    stats = data.standardize_fit(x_tr)
    return data.standardize_apply(stats, x_tr), t_tr, data.standardize_apply(stats, x_te), t_te


# ------------------------------------------------------------------------ training


def _train(model, loss, in_features: int, epochs: int, keys, split, finish, grid=None):
    """Train `model` with plain SGD for `epochs` from every seed's key (and
    every point of `grid`), in one compiled program (`sweep`): per seed,
    `split(key, point) -> (x_train, t_train, x_test, t_test, train_key)`
    draws the data inside the program, then the seed inits from the first
    half of `train_key` and shuffles with the second. Returns the history:
    `history["final"]` is `finish(params, x_test, t_test, point)`,
    `history["last_epoch_loss"]` the last epoch's mean training loss."""

    def draw(key, point):
        x_tr, t_tr, x_te, t_te, train_key = split(key, point)
        init_key, train_key = jax.random.split(train_key)
        _, params, state = model.init(init_key, (in_features,))
        return {
            "key": train_key,
            "x": x_tr,
            "t": t_tr,
            "x_test": x_te,
            "t_test": t_te,
            "params": params,
            "state": state,
        }

    def read(params, state, history):  # only what is read: the program it was, bit for bit
        last_epoch_loss = jnp.mean(history["step_loss"], axis=-1)[..., -1]
        return {"final": history["final"], "last_epoch_loss": last_epoch_loss}

    return sweep(
        model,
        loss,
        optim.sgd(LEARNING_RATE),
        BATCH_SIZE,
        epochs,
        lambda point: (point["x"], point["t"]),
        drawn_start,
        keys,
        grid=grid,
        draw=draw,
        finish=lambda p, s, point: finish(p, point["x_test"], point["t_test"], point),
        compile=returning(read),
    )


def _mlp(hidden: tuple[int, ...], outputs: int, last=()):
    layers = []
    for n in hidden:
        layers += [L.dense(n), L.tanh()]
    return L.serial(*layers, L.dense(outputs), *last)


def _sizes(load):
    """(features, training rows) of `load`'s data set, from shapes alone."""
    x, _ = jax.eval_shape(load, jax.random.key(0))
    return x.shape[1], data.split_sizes(x.shape[0], (0.7, 0.3))[0]


def _seed_keys(base: int, seeds: int):
    return jax.random.split(jax.random.key(base), seeds)


def _head_accuracy(model, loss, metric, load, epochs, seeds, base, *, one_hot_classes=None):
    """Train one head for every seed (own data, split, init and batch order);
    test accuracy, exact-match accuracy (meaningful for multi-label) and the
    last epoch's mean training loss, per seed."""
    n_in, _ = _sizes(load)

    def split(key, point):
        data_key, split_key, train_key = jax.random.split(key, 3)
        x_tr, t_tr, x_te, t_te = _split_standardized(split_key, *load(data_key))
        if one_hot_classes is not None:  # one-hot rows, as the claim prescribes
            t_tr = data.one_hot(t_tr, one_hot_classes)
        return x_tr, t_tr, x_te, t_te, train_key

    def finish(params, x_te, t_te, point):
        y, _ = model.forward(params, x_te)
        exact = metrics.multilabel_accuracy(y, t_te, exact_match=True) if t_te.ndim == 2 else 0.0
        return metric(y, t_te), exact

    history = _train(model, loss, n_in, epochs, _seed_keys(base, seeds), split, finish)
    acc, exact = history["final"]
    return np.asarray(acc), np.asarray(exact), np.asarray(history["last_epoch_loss"])


def _three_class(name: str, epochs: int, seeds: int, hidden: int, base: int):
    """One-hot + softmax against the single 1 / 0.5 / 0 output, every coding."""
    x_all, t_all = getattr(datasets, name)()

    def load(key):
        return x_all, t_all

    n_in, _ = _sizes(load)
    keys = _seed_keys(base, seeds)

    def split(key, point):
        split_key, train_key = jax.random.split(key)
        x_tr, t_tr, x_te, t_te = _split_standardized(split_key, x_all, t_all)
        t_tr = data.one_hot(t_tr, 3) if point is None else point["codes"][t_tr][:, None]
        return x_tr, t_tr, x_te, t_te, train_key

    # One-hot, softmax cross-entropy.
    soft = _mlp((hidden,), 3)

    def one_hot_finish(params, x_te, t_te, point):
        return metrics.multiclass_accuracy(soft.forward(params, x_te)[0], t_te)

    history = _train(
        soft,
        losses.softmax_cross_entropy,
        n_in,
        epochs,
        keys,
        lambda key, point: split(key, None),
        one_hot_finish,
    )
    one_hot_acc = np.asarray(history["final"])

    # One sigmoid output, MSE on codes. The coding is data, so every coding
    # and seed trains in one program (a grid of codings); seed s uses the
    # same split and initialisation key under every coding.
    single = _mlp((hidden,), 1, last=(L.sigmoid(),))
    orders = [(0, 1, 2), (1, 0, 2), (0, 2, 1)]  # the classes given the codes 1, 0.5, 0
    code_tables = jnp.stack(
        [jnp.zeros(3, F32).at[jnp.array(o)].set(jnp.array(CODES, F32)) for o in orders]
    )

    def ordinal_finish(params, x_te, t_te, point):
        codes = point["codes"]
        y, _ = single.forward(params, x_te)
        predicted = jnp.argmin(jnp.abs(y - codes[None, :]), axis=1)  # the nearest code
        return jnp.mean(predicted == t_te), y[:, 0], t_te

    history = _train(
        single, losses.mse, n_in, epochs, keys, split, ordinal_finish, {"codes": code_tables}
    )
    acc, outputs, labels = history["final"]
    names = CLASS_NAMES[name]
    coding_names = [f"{names[o[0]]}=1, {names[o[1]]}=.5, {names[o[2]]}=0" for o in orders]
    # The single output on seed 0's test set, per true class, for the figure.
    labels0 = np.asarray(labels[0, 0])
    outputs0 = [
        {str(c): np.asarray(outputs[i, 0])[labels0 == c].tolist() for c in range(3)}
        for i in range(len(orders))
    ]
    return {
        "one_hot_accuracy": one_hot_acc,
        "ordinal_accuracy": np.asarray(acc),  # (codings, seeds)
        "codings": coding_names,
        "orders": orders,
        "seed0_outputs_by_class": outputs0,
    }


# -------------------------------------------------------------------------- figure


def draw(data: dict):
    numbers = data["numbers"]
    plt = pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    fig.suptitle(f"Output heads: test accuracy across seeds ({SPREAD}, dots = seeds)")

    ax = axes[0, 0]
    heads = numbers["heads"]
    labels = [
        "binary\nbreast cancer\nsigmoid + BCE",
        "multi-class\ndigits\nsoftmax + CE",
        "multi-label\n3 labels\nsigmoids + sum BCE\n(Hamming)",
        "multi-label\n(exact match,\nall 3 right)",
    ]
    values = [
        heads["binary"]["accuracy"],
        heads["multiclass"]["accuracy"],
        heads["multilabel"]["accuracy"],
        heads["multilabel"]["exact_match"],
    ]
    _bars(ax, labels, values, ["C0", "C1", "C2", "C2"])
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_title("each head on its own kind of task")

    ax = axes[0, 1]
    width = 0.2
    for d, name in enumerate(numbers["three_class"]):
        three = numbers["three_class"][name]
        series = [three["one_hot_accuracy"]] + list(three["ordinal_accuracy"])
        for i, values in enumerate(series):
            x = d + (i - 1.5) * width
            mean = np.mean(values)
            color = "C0" if i == 0 else ["C3", "C1", "C4"][i - 1]
            label = None
            if d == 0:
                order = three["orders"][i - 1]
                label = (
                    "one-hot + softmax + CE"
                    if i == 0
                    else f"one output + MSE, class {order[0]}=1, {order[1]}=.5, {order[2]}=0"
                )
            seed_bar(ax, x, values, width * 0.9, color=color, label=label, dots=False, alpha=0.8)
            ax.plot(np.full(len(values), x), values, "k.", ms=3, alpha=0.5)
            ax.text(x, 0.02, f"{mean:.2f}", ha="center", va="bottom", fontsize=8, rotation=90)
    ticks = {
        "iris": "iris\n(0 setosa, 1 versicolor, 2 virginica)",
        "wine": "wine\n(3 cultivars 0, 1, 2)",
    }
    ax.set_xticks(range(len(numbers["three_class"])), [ticks[n] for n in numbers["three_class"]])
    ax.set_ylim(0, 1.35)
    ax.set_ylabel("test accuracy")
    ax.set_title("3 classes: one-hot vs one output coded 1 / 0.5 / 0")
    ax.legend(fontsize=8, loc="upper center", ncol=2, framealpha=0.95)

    three = numbers["three_class"]["iris"]
    for panel, coding in zip(axes[1], (0, 1), strict=True):
        outputs = three["seed0_outputs_by_class"][coding]
        order = three["orders"][coding]
        rng = np.random.default_rng(0)
        for c in range(3):
            ys = np.asarray(outputs[str(c)])
            panel.plot(c + rng.uniform(-0.15, 0.15, len(ys)), ys, "o", ms=4, alpha=0.7)
            target = CODES[order.index(c)]
            panel.hlines(target, c - 0.3, c + 0.3, colors="k", lw=2)
        for boundary in (0.25, 0.75):
            panel.axhline(boundary, color="gray", ls=":", lw=1)
        panel.set_xticks(range(3), CLASS_NAMES["iris"])
        panel.set_ylim(-0.05, 1.05)
        panel.set_ylabel("single sigmoid output (test set, seed 0)")
        acc = np.mean(three["ordinal_accuracy"][coding])
        panel.set_title(
            f"iris, coding {three['codings'][coding]}\n"
            f"black bar = class code, dotted = decision boundaries; mean acc {acc:.2f}",
            fontsize=9,
        )
    fig.tight_layout()
    return fig


def _bars(ax, labels, values, colors):
    rng = np.random.default_rng(0)
    for i, (v, c) in enumerate(zip(values, colors, strict=True)):
        v = np.asarray(v)
        seed_bar(ax, i, v, 0.6, color=c, dots=False, alpha=0.8)
        ax.plot(i + rng.uniform(-0.12, 0.12, len(v)), v, "k.", ms=4, alpha=0.6)
        ax.text(i, 0.05, f"{v.mean():.3f}", ha="center", va="bottom", color="white", weight="bold")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)


# ----------------------------------------------------------------------------- run


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=8, full=16)
    epochs = pick(mode, smoke=5, quick=60, full=120)
    three_epochs = pick(mode, smoke=5, quick=200, full=400)
    three_sets = pick(mode, smoke=("iris",), quick=("iris", "wine"), full=("iris", "wine"))
    hidden = 8

    def real(name):
        x, t = getattr(datasets, name)()  # loaded once, a constant of the traced run
        return lambda key: (x, t)

    def multi_label(key):
        return datasets.multi_label(key, n=1000)

    x_bc, t_bc = datasets.breast_cancer()

    def breast_cancer(key):
        return x_bc, t_bc[:, None].astype(F32)  # the binary column

    heads = {}
    units = 3 + len(three_sets)
    progress(0, units, "binary")
    acc, _, loss = _head_accuracy(
        _mlp((16,), 1),
        losses.sigmoid_binary_cross_entropy,
        metrics.binary_accuracy,
        breast_cancer,
        epochs,
        seeds,
        10,
    )
    heads["binary"] = {"accuracy": acc, "final_train_loss": loss}
    progress(1, units, "multi-class")
    acc, _, loss = _head_accuracy(
        _mlp((32,), 10),
        losses.softmax_cross_entropy,
        metrics.multiclass_accuracy,
        real("digits"),
        epochs,
        seeds,
        11,
        one_hot_classes=10,
    )
    heads["multiclass"] = {"accuracy": acc, "final_train_loss": loss}
    progress(2, units, "multi-label")
    acc, exact, loss = _head_accuracy(
        _mlp((32, 32), 3),
        losses.multilabel_sigmoid_cross_entropy,
        metrics.multilabel_accuracy,
        multi_label,
        epochs,
        seeds,
        12,
    )
    heads["multilabel"] = {"accuracy": acc, "exact_match": exact, "final_train_loss": loss}

    three_class = {
        name: _three_class(name, three_epochs, seeds, hidden, 13)
        for name in tracked(three_sets, start=3, total=units)
    }
    numbers = {"heads": heads, "three_class": three_class}

    settings = {
        "seeds": seeds,
        "optimizer": f"sgd(lr={LEARNING_RATE})",
        "batch_size": BATCH_SIZE,
        "epochs_heads": epochs,
        "epochs_three_class": three_epochs,
        "split": "70/30 train/test per seed, standardised on train",
        "nets": {
            "binary": "30-16-1 tanh, sigmoid_binary_cross_entropy (logit)",
            "multiclass": "64-32-10 tanh, softmax_cross_entropy, one-hot targets",
            "multilabel": "2-32-32-3 tanh, multilabel_sigmoid_cross_entropy, multi_label(n=1000)",
            "three_class": f"n-{hidden}-3 softmax vs n-{hidden}-1 sigmoid + mse on codes 1/.5/0",
        },
        "ordinal_prediction": "nearest code",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Every head reaches 90 % test accuracy on its task; one-hot beats the
    single 1 / 0.5 / 0 output, averaged over the codings, by more than its
    own seed spread on every three-class data set."""
    numbers, seeds = data["numbers"], data["settings"]["seeds"]
    heads, three_class = numbers["heads"], numbers["three_class"]
    means = {k: float(np.mean(v["accuracy"])) for k, v in heads.items()}
    heads_good = all(m >= 0.9 for m in means.values())
    gaps = {}
    for name, three in three_class.items():
        one_hot = np.asarray(three["one_hot_accuracy"])
        ordinal = np.asarray(three["ordinal_accuracy"])
        gaps[name] = {
            "one_hot": float(one_hot.mean()),
            "one_hot_std": float(one_hot.std()),
            "ordinal_mean_over_codings": float(ordinal.mean()),
            "ordinal_per_coding": ordinal.mean(axis=1).tolist(),
            "ordinal_worst_coding": float(ordinal.mean(axis=1).min()),
        }
    # One-hot must beat the single output averaged over the (arbitrary)
    # codings by more than its own seed spread, on both data sets.
    ordinal_worse = all(
        g["one_hot"] - g["ordinal_mean_over_codings"] > g["one_hot_std"] for g in gaps.values()
    )
    supported = heads_good and ordinal_worse

    def fmt(name):
        g = gaps[name]
        per = "/".join(f"{v:.2f}" for v in g["ordinal_per_coding"])
        return f"{name} one-hot {g['one_hot']:.2f} vs 1/.5/0 {per} (3 codings)"

    text = (
        f"test acc: binary {means['binary']:.3f}, multi-class {means['multiclass']:.3f}, "
        f"multi-label {means['multilabel']:.3f} (exact "
        f"{float(np.mean(heads['multilabel']['exact_match'])):.3f}); "
        + "; ".join(fmt(name) for name in three_class)
        + f" ({seeds} seeds)"
    )
    summary = {
        "binary_acc": means["binary"],
        "multiclass_acc": means["multiclass"],
        "multilabel_acc": means["multilabel"],
    }
    for name, g in gaps.items():
        summary[f"{name}_one_hot"] = g["one_hot"]
        summary[f"{name}_ordinal_mean"] = g["ordinal_mean_over_codings"]
    return Verdict(text, bool(supported), summary)
