"""Random feedback weights train a network nearly as well as backprop (Lillicrap et al. 2016).

Claim (Lillicrap, Cownden, Tweed & Akerman 2016, "Random synaptic feedback
weights support error backpropagation for deep learning", Nature
Communications 7:13276): a network whose hidden layer receives the output
error through a fixed random matrix `B` instead of `W^T` (feedback
alignment, FA) learns nearly as well as backprop, because the forward
weights come to align with `B`: the angle between the hidden layer's FA
update and backprop's falls below 90 degrees and keeps falling (their
Fig. 2).

Setup: scikit-learn's 8x8 digits (/16, 70 % train, 30 % test, one fixed
split), a `64 -> 64 tanh -> 10` network, softmax cross-entropy, Adam
(lr 0.01), batches of 64. Two arms from the same initial params per seed:
backprop, and [`purenet.feedback.feedback_alignment`][purenet.feedback.feedback_alignment]
of the same model (`B` drawn like `W` at initialisation, kept in the
state). Training: `_common.sweep`, vmapped over seeds; after every epoch
(and before the first) the training loss and
[`purenet.feedback.alignment`][purenet.feedback.alignment]'s angle between
the hidden layer's FA update and the true gradient on the training set.

Measured: test accuracy and final training loss of both arms (mean, std over
seeds), and the hidden-layer angle per epoch.
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
    num_seeds,
    pick,
    pyplot,
    seed_band,
    seed_stats,
    sweep,
    tracked,
)
from purenet import data, datasets, feedback, layers, losses, metrics, objective, optim

NAME = "feedback_alignment"
QUICK_SECONDS = 10  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Feedback alignment (fixed random feedback weights) learns nearly as well as backprop; "
    "the angle between the hidden layer's update and the gradient falls below 90 degrees "
    "and keeps falling (Lillicrap et al. 2016)"
)

HIDDEN = 64
LEARNING_RATE = 0.01
BATCH_SIZE = 64
HIDDEN_LAYER = f"serial[0], dense({HIDDEN})"
LOSS = losses.softmax_cross_entropy


def make_model():
    return layers.serial(layers.dense(HIDDEN), layers.tanh(), layers.dense(10))


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=4, full=16)
    epochs = pick(mode, smoke=2, quick=12, full=40)
    x, labels = datasets.digits()
    x = x / 16.0
    (x_train, t_train), (x_test, t_test) = data.split(jax.random.key(0), x, labels, (0.7, 0.3))
    init_keys, train_keys = jnp.split(jax.random.split(jax.random.key(1), 2 * seeds), 2)
    model = make_model()
    rule = feedback.feedback_alignment(model)
    angle = feedback.alignment(rule, LOSS)
    J = objective(model, LOSS)
    fa_start = init_many(rule, init_keys, (x_train.shape[1],))
    bp_start = (fa_start[0], ())  # the same initial params; backprop needs no state

    def evaluate_fa(p, s, point):
        return J(p, x_train, t_train), angle(p, x_train, t_train, state=s)[HIDDEN_LAYER].update

    def evaluate_bp(p, s, point):
        return J(p, x_train, t_train), jnp.zeros((), p[0]["W"].dtype)

    def finish(p, s, point):
        y, _ = model.forward(p, x_test)
        return metrics.multiclass_accuracy(y, t_test)

    numbers = {}
    arms = {
        "backprop": (model, bp_start, evaluate_bp),
        "feedback_alignment": (rule, fa_start, evaluate_fa),
    }
    for arm in tracked(list(arms)):
        net, start, evaluate = arms[arm]
        _, _, history = sweep(
            net,
            LOSS,
            optim.adam(LEARNING_RATE),
            BATCH_SIZE,
            epochs,
            (x_train, t_train),
            start,
            train_keys,
            evaluate=evaluate,
            evaluate_start=True,
            finish=finish,
        )
        history = jax.device_get(history)
        loss, hidden_angle = history["evaluation"]
        numbers[arm] = {
            "test_accuracy": seed_stats(history["final"]),
            "final_loss": seed_stats(np.asarray(loss)[:, -1]),
            "loss_per_epoch": np.asarray(loss),
        }
        if arm == "feedback_alignment":
            numbers[arm]["hidden_angle_per_epoch"] = np.asarray(hidden_angle)
    settings = {
        "data": "sklearn digits / 16, split 70/30 with key 0",
        "model": f"64 -> {HIDDEN} tanh -> 10, softmax cross-entropy",
        "optimizer": f"adam(lr={LEARNING_RATE})",
        "batch_size": BATCH_SIZE,
        "epochs": epochs,
        "seeds": seeds,
        "feedback": "B drawn like W at initialisation (Glorot uniform), fixed",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """FA's mean test accuracy within 0.05 of backprop's; the hidden angle
    below 90 degrees at the end for every seed, and lower at the end than
    halfway on average over seeds (it keeps falling)."""
    bp, fa = data["numbers"]["backprop"], data["numbers"]["feedback_alignment"]
    angles = np.asarray(fa["hidden_angle_per_epoch"], float)  # (seeds, epochs + 1)
    start, half, end = angles[:, 0], angles[:, angles.shape[1] // 2], angles[:, -1]
    gap = bp["test_accuracy"]["mean"] - fa["test_accuracy"]["mean"]
    supported = bool(gap <= 0.05 and (end < 90).all() and end.mean() < half.mean())
    text = (
        f"test accuracy backprop {bp['test_accuracy']['mean']:.3f} ± "
        f"{bp['test_accuracy']['std']:.3f}, FA {fa['test_accuracy']['mean']:.3f} ± "
        f"{fa['test_accuracy']['std']:.3f}; hidden update vs gradient: {start.mean():.1f} deg "
        f"at the start, {half.mean():.1f} halfway, {end.mean():.1f} at the end "
        f"(max over seeds {end.max():.1f}; {data['settings']['seeds']} seeds)"
    )
    summary = {
        "test_acc_backprop": bp["test_accuracy"]["mean"],
        "test_acc_fa": fa["test_accuracy"]["mean"],
        "angle_start": float(start.mean()),
        "angle_end": float(end.mean()),
    }
    return Verdict(text, supported, summary)


def draw(data: dict):
    numbers = data["numbers"]
    plt = pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, color in (("backprop", "C0"), ("feedback_alignment", "C3")):
        curves = np.asarray(numbers[arm]["loss_per_epoch"], float)
        acc = numbers[arm]["test_accuracy"]
        label = f"{arm} (test acc {acc['mean']:.3f})"
        seed_band(ax, np.arange(curves.shape[1]), curves, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy, nats)")
    ax.set_title(f"Training loss ({SPREAD})")
    ax.legend(fontsize=8)
    angles = np.asarray(numbers["feedback_alignment"]["hidden_angle_per_epoch"], float)
    seed_band(bx, np.arange(angles.shape[1]), angles, color="C3", label="FA vs gradient")
    bx.axhline(90, color="k", ls="--", lw=1, label="90 degrees (orthogonal)")
    bx.set_xlabel("epoch")
    bx.set_ylabel("angle (degrees)")
    bx.set_title("Hidden layer: FA update vs true gradient")
    bx.legend(fontsize=8)
    fig.tight_layout()
    return fig
