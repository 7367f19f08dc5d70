"""MNIST-1D: the table of "Scaling Down Deep Learning" (Greydanus 2020).

Claim (Greydanus 2020, table 1 and the "shuffled" experiment): on MNIST-1D,
a procedurally generated 1-D analogue of MNIST (40-sample signals, 4,000
training and 1,000 test examples), test accuracy separates the model
families clearly, logistic regression 32%, MLP 68%, CNN 94%, a
bidirectional GRU 91% (taking "at least 10x the walltime of the CNN"),
unlike MNIST where all of them exceed 90%. The CNN's advantage is its spatial prior
(local, translation-equivariant filters): shuffle the 40 positions of every
signal with one fixed permutation and the CNN falls to 56% while the MLP,
to which the order of its inputs means nothing, keeps 68%.

Setup, the paper's models (its repository's `notebooks/models.py`) and
training: logistic regression `dense(10)`; the residual MLP
`h = relu(x W1 + b1); h = h + relu(h W2 + b2); y = h W3 + b3` with 100
hidden units (`residual`); the CNN, three `conv1d(25, k, stride=2,
padding=1)` with `k = 5, 3, 3` and ReLU (lengths 40 -> 19 -> 10 -> 5),
flatten, `dense(10)`, its convolutions by im2col (`method="im2col"`: on
one XLA:CPU thread four times as fast as `lax`'s convolution here,
measured); the GRU (`GRUBase`), a bidirectional `gru(6)` (zero initial
state, PyTorch's initialisation) reading the signal as 40 steps of one
feature, all 40 steps' 12 outputs flattened into `dense(10)`.
Adam, learning rate 1e-2, batches of 100; the paper
trains 6,000 steps (150 epochs; `--full`), the quick mode 400 (10 epochs). Data:
`mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())`, generated
offline (the paper's default arguments and seed), the same for every seed;
each seed draws its own initialisation and batch order. The shuffled variant
permutes the 40 positions of train and test signals with one permutation
(`numpy.random.default_rng(0)`). Differences from the paper: purenet's
default initialisers (Glorot uniform for `dense`, He normal for
`conv1d`) instead of PyTorch's, and test accuracy after the last epoch
(the paper plots it over training). Gradients by the layers' hand-written
backward passes (`purenet.train.make_train` through
`experiments._common.sweep`); the seeds of one model run one after the
other in one compiled `lax.map`.

Walltime (the paper: "the GRU takes at least 10x the walltime of the
CNN"): each model's compiled run is timed without its compilation, and the
GRU's seconds per training step (batch 100, per seed, the per-epoch test
evaluation included) are divided by the CNN's from the same run, same seeds
and steps. The ratio depends on the hardware: the paper's is PyTorch's
(cuDNN) on a GPU, where the CNN is a few kernel launches and the GRU 40
sequential steps each way; on one XLA:CPU thread the 6-unit GRU's steps
are tiny, and the ratio was 3.1x in the full run (quick runs 3.6x to 5x;
0.5x with `lax`'s convolutions). The judge reports it (and the device) but
does not judge it.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    SPREAD,
    Mode,
    Verdict,
    init_many,
    num_seeds,
    pick,
    pyplot,
    seed_band,
    seed_bar,
    seed_stats,
    sweep,
    tracked,
)
from purenet import layers as L
from purenet import losses, metrics, optim

NAME = "mnist1d"
QUICK_SECONDS = 23  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "MNIST-1D separates models (Greydanus 2020): logistic 32%, MLP 68%, CNN 94%, "
    "bidirectional GRU 91% test accuracy (the GRU at least 10x the CNN's walltime); "
    "shuffling the signal positions drops the CNN to 56% while the MLP keeps 68%."
)

LOSS = losses.softmax_cross_entropy
LEARNING_RATE, BATCH = 1e-2, 100
PAPER = {
    "logistic": 0.32,
    "MLP": 0.68,
    "CNN": 0.94,
    "GRU": 0.91,
    "MLP, shuffled": 0.68,
    "CNN, shuffled": 0.56,
}
PAPER_WALLTIME_RATIO = 10.0  # "the GRU takes at least 10x the walltime of the CNN"


def logistic() -> L.Layer:
    return L.serial(L.dense(10))


def residual_mlp(hidden: int = 100) -> L.Layer:
    return L.serial(
        L.dense(hidden), L.relu(), L.residual(L.serial(L.dense(hidden), L.relu())), L.dense(10)
    )


def cnn(channels: int = 25) -> L.Layer:
    return L.serial(
        L.conv1d(channels, 5, stride=2, padding=1, method="im2col"),
        L.relu(),
        L.conv1d(channels, 3, stride=2, padding=1, method="im2col"),
        L.relu(),
        L.conv1d(channels, 3, stride=2, padding=1, method="im2col"),
        L.relu(),
        L.flatten(),
        L.dense(10),
    )


def bigru(hidden: int = 6) -> L.Layer:
    """The paper's `GRUBase`: a bidirectional GRU, 6 hidden units per
    direction, zero initial state, over the signal as 40 steps of one
    feature; all 40 steps' outputs, `(40, 12)`, flattened into `dense(10)`."""
    return L.serial(L.bidirectional(L.gru(hidden)), L.flatten(), L.dense(10))


# name: (model factory, input layout, shuffled positions)
ARMS = {
    "logistic": (logistic, "flat", False),
    "MLP": (residual_mlp, "flat", False),
    "CNN": (cnn, "signal", False),
    "GRU": (bigru, "signal", False),
    "MLP, shuffled": (residual_mlp, "flat", True),
    "CNN, shuffled": (cnn, "signal", True),
}


def load_data(train_rows=None, test_rows=None, samples=None):
    """MNIST-1D with the paper's default arguments, as float32 signals and
    int32 labels: the first `train_rows` and `test_rows` of its split, of
    `samples` signals generated (`None`: the paper's 5,000)."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ImportError(
            "experiments.mnist1d needs the mnist1d package: pip install 'purenet[experiments]'"
        ) from error
    args = get_dataset_args()
    if samples is not None:
        args.num_samples = samples
    data = make_dataset(args)
    x, t = np.asarray(data["x"], np.float32), np.asarray(data["y"], np.int32)
    x_test, t_test = np.asarray(data["x_test"], np.float32), np.asarray(data["y_test"], np.int32)
    return x[:train_rows], t[:train_rows], x_test[:test_rows], t_test[:test_rows]


def _run(model, x, t, x_test, t_test, keys, epochs):
    """Test accuracy after every epoch, `(seeds, epochs)`, and the seconds
    the compiled run took (compiled ahead, so compilation is not counted)."""
    in_shape = x.shape[1:]
    init_keys, train_keys = zip(*(jax.random.split(key) for key in keys), strict=True)
    start = init_many(model, init_keys, in_shape)
    seconds = []

    def timed(fn):  # compile first, then time the run alone
        def run(*args):
            compiled = jax.jit(fn).lower(*args).compile()
            started = time.perf_counter()
            out = jax.block_until_ready(compiled(*args))
            seconds.append(time.perf_counter() - started)
            return out

        return run

    def evaluate(params, state, point):
        return metrics.multiclass_accuracy(model.forward(params, x_test)[0], t_test)

    _, _, history = sweep(
        model,
        LOSS,
        optim.adam(LEARNING_RATE),
        BATCH,
        epochs,
        (x, t),
        start,
        jnp.stack(train_keys),
        evaluate=evaluate,
        compile=timed,
        seeds_in_sequence=True,
    )
    return np.asarray(history["evaluation"]), seconds[0]


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=3, full=10)
    epochs = pick(mode, smoke=1, quick=10, full=150)
    rows = pick(mode, smoke=(400, 200), quick=(None, None), full=(None, None))
    x, t, x_test, t_test = load_data(*rows)
    permutation = np.random.default_rng(0).permutation(x.shape[1])
    keys = jax.random.split(jax.random.key(1), seeds)
    steps_per_epoch = x.shape[0] // BATCH
    numbers = {}
    for name, (factory, layout, shuffled) in tracked(ARMS.items(), label=lambda a: a[0]):
        a, b = (x[:, permutation], x_test[:, permutation]) if shuffled else (x, x_test)
        if layout == "signal":  # (m, 40) -> (m, 40, 1): one input channel / feature
            a, b = a[..., None], b[..., None]
        accuracy, seconds = _run(
            factory(),
            jnp.asarray(a),
            jnp.asarray(t),
            jnp.asarray(b),
            jnp.asarray(t_test),
            keys,
            epochs,
        )
        numbers[name] = {
            "test_accuracy": accuracy,
            "paper": PAPER[name],
            "train_seconds": seconds,
            "seconds_per_step": seconds / (seeds * epochs * steps_per_epoch),
        }
    settings = {
        "seeds": seeds,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "train_examples": int(x.shape[0]),
        "test_examples": int(x_test.shape[0]),
        "optimizer": f"adam(lr={LEARNING_RATE})",
        "batch_size": BATCH,
        "shuffle": "one permutation of the 40 positions, numpy default_rng(0)",
        "paper_steps": 6000,
        "walltime": "seconds per training step (batch 100, one seed; the per-epoch test "
        "evaluation included, compilation not), GRU over CNN, same run, "
        "same seeds and steps",
        "device": jax.devices()[0].device_kind,
    }
    return {"settings": settings, "numbers": numbers}


def _final(numbers) -> dict:
    return {
        name: seed_stats(np.asarray(v["test_accuracy"], float)[:, -1])
        for name, v in numbers.items()
    }


def walltime_ratio(numbers) -> float | None:
    """GRU over CNN training seconds per step (same batch, one seed)."""
    if "GRU" not in numbers or "seconds_per_step" not in numbers["GRU"]:
        return None
    return numbers["GRU"]["seconds_per_step"] / numbers["CNN"]["seconds_per_step"]


def judge(data: dict) -> Verdict:
    """The paper's order, logistic < MLP < CNN with gaps of at least 10
    points; shuffling costs the CNN at least 10 points and the MLP at most 3;
    the GRU, like the CNN, at least 10 points above the MLP. The GRU's
    accuracy against the paper's 91% and its walltime against the CNN's are
    reported, not judged (the walltime depends on the hardware)."""
    final = _final(data["numbers"])
    mean = {name: s["mean"] for name, s in final.items()}
    ordered = mean["MLP"] - mean["logistic"] >= 0.10 and mean["CNN"] - mean["MLP"] >= 0.10
    cnn_drop = mean["CNN"] - mean["CNN, shuffled"]
    mlp_drop = mean["MLP"] - mean["MLP, shuffled"]
    gru_ok = "GRU" not in mean or mean["GRU"] - mean["MLP"] >= 0.10
    supported = bool(ordered and cnn_drop >= 0.10 and abs(mlp_drop) <= 0.03 and gru_ok)
    parts = [
        f"{name} {s['mean']:.3f} ± {s['std']:.3f} (paper {PAPER[name]:.2f})"
        for name, s in final.items()
    ]
    settings = data["settings"]
    text = (
        f"test accuracy: {'; '.join(parts)}; {settings['seeds']} seeds, {settings['steps']} steps"
    )
    summary = {name.replace(", ", "_"): s["mean"] for name, s in final.items()}
    ratio = walltime_ratio(data["numbers"])
    if ratio is not None:
        text += (
            f"; GRU/CNN training walltime per step {ratio:.1f}x on "
            f"{settings.get('device', '?')} (paper: at least {PAPER_WALLTIME_RATIO:.0f}x)"
        )
        summary["GRU_over_CNN_walltime"] = ratio
    return Verdict(text, supported, summary)


def draw(data: dict):
    numbers, settings = data["numbers"], data["settings"]
    final = _final(numbers)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    fig.suptitle(
        f"MNIST-1D (Greydanus 2020): test accuracy, {settings['seeds']} seeds, "
        f"{settings['steps']} Adam steps (paper: 6000)"
        + (
            f"; GRU/CNN walltime per step {walltime_ratio(numbers):.1f}x (paper: >= 10x)"
            if walltime_ratio(numbers) is not None
            else ""
        )
    )
    names = list(numbers)
    for i, name in enumerate(names):
        s = final[name]
        values = np.asarray(numbers[name]["test_accuracy"], float)[:, -1]
        seed_bar(
            left,
            i - 0.2,
            values,
            0.4,
            color=f"C{i}",
            label=f"purenet ({SPREAD}, dots = seeds)" if i == 0 else None,
        )
        left.bar(
            i + 0.2,
            PAPER[name],
            0.4,
            color="lightgray",
            edgecolor="k",
            label="paper" if i == 0 else None,
        )
        left.text(i - 0.2, values.max() + 0.01, f"{s['mean']:.2f}", ha="center")
        left.text(i + 0.2, PAPER[name] + 0.01, f"{PAPER[name]:.2f}", ha="center")
    left.set_xticks(range(len(names)), [n.replace(", ", "\n") for n in names])
    left.set_ylim(0, 1.18)
    left.set_ylabel("test accuracy after the last epoch")
    left.legend(loc="upper center", ncol=2, fontsize=8)
    for i, name in enumerate(names):
        acc = np.asarray(numbers[name]["test_accuracy"], float)
        epochs = np.arange(1, acc.shape[1] + 1)
        seed_band(
            right, epochs, acc, color=f"C{i}", label=name, style="--" if "shuffled" in name else "-"
        )
    right.set_xlabel("epoch (40 steps)")
    right.set_ylabel("test accuracy")
    right.set_ylim(0, 1.0)
    right.legend()
    right.set_title(f"during training ({SPREAD})")
    fig.tight_layout()
    return fig
