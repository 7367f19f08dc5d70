"""Attention against recurrence on associative recall, at growing lengths.

Claim (issue 15; Vaswani et al. 2017, section 4, "Why self-attention"; Ba et
al. 2016 and Graves et al. 2014 for the task): self-attention connects every
pair of positions by a path of length one, so a query can read any earlier
position directly, whatever the distance; a recurrent network must carry
everything it may later be asked about in a fixed-size state, through one
step per position. On associative recall the transformer's accuracy should
therefore not depend on the sequence length, while the LSTM's falls as the
number of stored pairs grows.

Task (associative recall): a sequence of `n` (key, value) pairs, then a
query key; the answer is the value stored with that key. Each of the first
`n` positions carries one pair as features, `[one_hot(key, K),
one_hot(value, V), 0]`; the last position is `[one_hot(query, K), 0,
1]`. Keys are distinct within a sequence (drawn without replacement from
`K = max n` keys), values uniform over `V = 8` (chance accuracy 1/8),
the query uniform over the sequence's keys. `n` grows, `T = n + 1`.

Models (float32, about the same size; the LSTM has more parameters):

* transformer: `dense(32)`, `transformer_block(32, heads=2, mlp_dim=64)`
  (pre-layer-norm, GELU), `last_step()`, `layer_norm()`, `dense(8)`.
  No position encoding: the pairs form a set, and the query is told apart by
  its flag feature;
* LSTM: `lstm(64)`, `last_step()`, `dense(8)` (Hochreiter &
  Schmidhuber 1997, purenet's hand-written BPTT).

Training: softmax cross-entropy on the answer, Adam (`3e-3`), batches of
64, the same number of epochs for both models, `purenet.train.make_train`
`jax.vmap`-ed over seeds (`experiments._common.sweep`: one compiled
program per model and length; the lengths differ in shape, so they cannot
share one). The budget is small on purpose (quick mode: 7 epochs of 2,048
sequences, the lengths 8 and 32; full: 40 epochs of 8,192): the
transformer solves the task within it at every length; the LSTM, given the
same steps, stays near chance at long lengths. Whether much longer training
lets the LSTM catch up is not measured here: the claim is about what each
architecture makes easy at equal cost, not about what it can never learn.

Measured: test accuracy after each epoch on 512 held-out sequences, and
whether a seed *succeeds* (final test accuracy `>= 0.9`); the success
rate over seeds against `n`. The attention maps are the probabilities
`P` of the trained block (first seed, largest `n`) from its forward
cache: the query's row over the `T` positions, with the position holding
the queried key marked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    SPREAD,
    Mode,
    Verdict,
    init_many,
    jit,
    num_seeds,
    pick,
    progress,
    pyplot,
    seed_band,
    seed_stats,
    sweep,
)
from purenet import layers as L
from purenet import losses, metrics, optim

NAME = "attention_vs_recurrence"
QUICK_SECONDS = 30  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "On associative recall a one-block transformer reads the queried pair directly and keeps "
    "its accuracy as sequences grow; an LSTM trained with the same budget, which must hold "
    "every pair in its state, falls behind and gets worse as the number of pairs grows"
)

VALUES, WIDTH, HEADS, MLP_DIM, HIDDEN = 8, 32, 2, 64, 64
LEARNING_RATE, BATCH_SIZE, SUCCESS = 3e-3, 64, 0.9
TEST_ROWS = 512
MODELS = ("transformer", "lstm")


def make_model(name: str):
    if name == "transformer":
        return L.serial(
            L.dense(WIDTH),
            L.transformer_block(WIDTH, HEADS, mlp_dim=MLP_DIM),
            L.last_step(),
            L.layer_norm(),
            L.dense(VALUES),
        )
    return L.serial(L.lstm(HIDDEN), L.last_step(), L.dense(VALUES))


def recall_data(rng: np.random.Generator, rows: int, pairs: int, keys: int):
    """`(x, t)`: features `(rows, pairs + 1, keys + VALUES + 1)`, answers `(rows,)`."""
    key_ids = np.argsort(rng.random((rows, keys)), axis=1)[:, :pairs]  # distinct keys
    values = rng.integers(0, VALUES, (rows, pairs))
    asked = rng.integers(0, pairs, rows)
    x = np.zeros((rows, pairs + 1, keys + VALUES + 1), np.float32)
    r = np.arange(rows)[:, None]
    p = np.arange(pairs)[None, :]
    x[r, p, key_ids] = 1.0
    x[r, p, keys + values] = 1.0
    x[np.arange(rows), pairs, key_ids[np.arange(rows), asked]] = 1.0
    x[:, pairs, -1] = 1.0
    return x, values[np.arange(rows), asked].astype(np.int32), asked


def attention_probabilities(model, params, x):
    """The block's attention probabilities `(m, heads, T, T)` from the
    forward cache: serial -> block (serial of the attention residual and the
    MLP) -> residual branch (serial of layer norm and attention) -> attention
    cache `(x, o, (q, k, v, P, out))`."""
    _, cache = model.forward(params, x)
    branch_cache = cache[1][0]
    return branch_cache[1][2][3]


def train_seeds(name: str, data, seeds: int, epochs: int, jit_fn=jax.jit):
    """Train model `name` from `seeds` initialisations at once (vmap);
    returns the first seed's final params and the test accuracy per epoch
    `(seeds, epochs)`."""
    x, t, x_test, t_test = data
    model = make_model(name)
    start = init_many(model, jax.random.split(jax.random.key(1), seeds), x.shape[1:])

    def evaluate(p, s, point):
        return metrics.multiclass_accuracy(model.forward(p, x_test)[0], t_test)

    # jax.jit, not _common.jit, except in smoke mode: these runs train longer
    # than they compile, and unoptimised code (level 0) runs the LSTM's scans
    # three times slower.
    final, _, history = sweep(
        model,
        losses.softmax_cross_entropy,
        optim.adam(LEARNING_RATE),
        BATCH_SIZE,
        epochs,
        (x, t),
        start,
        jax.random.split(jax.random.key(2), seeds),
        evaluate=evaluate,
        compile=jit_fn,
    )
    return jax.tree.map(lambda a: a[0], final), np.asarray(history["evaluation"])


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, smoke=2, quick=3, full=8)
    lengths = pick(mode, smoke=[3], quick=[8, 32], full=[4, 8, 16, 32, 64])
    epochs = pick(mode, smoke=2, quick=7, full=40)
    train_rows = pick(mode, smoke=64, quick=2048, full=8192)
    keys = max(lengths)
    rng = np.random.default_rng(0)
    numbers = {
        name: {"test_accuracy": [], "success_rate": [], "accuracy_per_epoch": []} for name in MODELS
    }
    maps = None
    for n in lengths:
        x, t, _ = recall_data(rng, train_rows, n, keys)
        x_test, t_test, asked = recall_data(rng, TEST_ROWS, n, keys)
        data = tuple(map(jnp.asarray, (x, t, x_test, t_test)))
        for name in MODELS:
            progress(
                len(MODELS) * lengths.index(n) + MODELS.index(name),
                len(MODELS) * len(lengths),
                f"{name}, n={n}",
            )
            first, curves = train_seeds(
                name, data, seeds, epochs, pick(mode, smoke=jit, quick=jax.jit, full=jax.jit)
            )
            accuracy = curves[:, -1]
            numbers[name]["test_accuracy"].append(seed_stats(accuracy))
            numbers[name]["success_rate"].append(float(np.mean(accuracy >= SUCCESS)))
            numbers[name]["accuracy_per_epoch"].append(curves)
            if name == "transformer" and n == max(lengths):
                P = np.asarray(attention_probabilities(make_model(name), first, data[2][:8]))
                maps = {"query_rows": P[:, :, -1, :], "asked": asked[:8], "full": P[0]}
    numbers["attention"] = maps
    settings = {
        "task": f"associative recall: n (key, value) pairs + a query; {VALUES} values, "
        f"{keys} keys, distinct keys per sequence",
        "lengths_n": lengths,
        "train_rows": train_rows,
        "test_rows": TEST_ROWS,
        "epochs": epochs,
        "seeds": seeds,
        "success_threshold": SUCCESS,
        "transformer": f"dense({WIDTH}), transformer_block({HEADS} heads, mlp {MLP_DIM}, gelu), "
        f"last_step, layer_norm, dense({VALUES})",
        "lstm": f"lstm({HIDDEN}), last_step, dense({VALUES})",
        "optimizer": f"adam({LEARNING_RATE}), batch {BATCH_SIZE}",
        "data_seed": "numpy default_rng(0); init keys split(key(1)); shuffling split(key(2))",
    }
    return {"settings": settings, "numbers": numbers}


def _mean_accuracy(numbers, name):
    return np.asarray([s["mean"] for s in numbers[name]["test_accuracy"]], float)


def judge(data: dict) -> Verdict:
    lengths = data["settings"]["lengths_n"]
    numbers = data["numbers"]
    att, rnn = _mean_accuracy(numbers, "transformer"), _mean_accuracy(numbers, "lstm")
    att_rate = np.asarray(numbers["transformer"]["success_rate"], float)
    rnn_rate = np.asarray(numbers["lstm"]["success_rate"], float)
    longest = int(np.argmax(lengths))
    supported = bool(
        att[longest] >= SUCCESS
        and att_rate[longest] >= 0.5
        and rnn[longest] < att[longest] - 0.1
        and rnn[longest] < rnn[0]
    )
    rows = ", ".join(
        f"n={n}: {a:.2f} vs {r:.2f}" for n, a, r in zip(lengths, att, rnn, strict=True)
    )
    text = (
        f"test accuracy transformer vs LSTM (mean over seeds): {rows}; success rate at "
        f"n={lengths[longest]}: {att_rate[longest]:.2f} vs {rnn_rate[longest]:.2f}"
    )
    summary = {
        f"transformer n={lengths[longest]}": round(float(att[longest]), 3),
        f"lstm n={lengths[longest]}": round(float(rnn[longest]), 3),
    }
    return Verdict(text, supported, summary)


def draw(data: dict):
    plt = pyplot()
    settings, numbers = data["settings"], data["numbers"]
    lengths = np.asarray(settings["lengths_n"])
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    colors = {"transformer": "C0", "lstm": "C3"}

    ax = axes[0]
    for name in MODELS:
        ax.plot(lengths, numbers[name]["success_rate"], "o-", color=colors[name], label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("pairs n (sequence length n + 1)")
    ax.set_ylabel(f"success rate (test accuracy >= {settings['success_threshold']})")
    ax.set_title(f"Success over {settings['seeds']} seeds")
    ax.legend()

    ax = axes[1]
    for name in MODELS:
        final = np.stack(
            [np.asarray(c, float)[:, -1] for c in numbers[name]["accuracy_per_epoch"]], axis=1
        )  # (seeds, lengths)
        seed_band(ax, lengths, final, color=colors[name], label=name, style="o-")
    ax.axhline(1 / VALUES, color="gray", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("pairs n")
    ax.set_ylabel(f"test accuracy ({SPREAD})")
    ax.set_title("Accuracy against length")
    ax.legend()

    ax = axes[2]
    for name in MODELS:
        curves = np.asarray(numbers[name]["accuracy_per_epoch"][-1], float)
        epochs = np.arange(1, curves.shape[1] + 1)
        ax.plot(epochs, curves.T, color=colors[name], alpha=0.6)
        ax.plot([], [], color=colors[name], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Learning curves at n = {lengths.max()} (one line per seed)")
    ax.legend()

    ax = axes[3]
    maps = numbers["attention"]
    if maps:
        rows = np.asarray(maps["query_rows"], float)  # (examples, heads, T)
        asked = np.asarray(maps["asked"])
        examples, heads, T = rows.shape
        image = rows.transpose(0, 1, 2).reshape(examples * heads, T)
        ax.imshow(image, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        for e in range(examples):
            for h in range(heads):
                ax.plot(asked[e], e * heads + h, "r+", ms=7)
        ax.set_yticks(
            np.arange(examples) * heads + (heads - 1) / 2, [f"ex {e}" for e in range(examples)]
        )
        ax.set_xlabel("position attended to (last = the query itself)")
        ax.set_title(f"Query's attention, {heads} heads per example (+ = queried pair)")
    fig.suptitle(
        "Associative recall: attention reads the pair directly, the LSTM must remember", y=1.02
    )
    fig.tight_layout()
    return fig
