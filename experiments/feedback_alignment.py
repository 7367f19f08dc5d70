"""Random feedback weights train networks nearly as well as backprop, and
straight from the output error (Lillicrap et al. 2016; Noekland 2016).

Claims. Lillicrap, Cownden, Tweed & Akerman 2016 ("Random synaptic feedback
weights support error backpropagation for deep learning", Nature
Communications 7:13276): a network whose hidden layer receives the output
error through a fixed random matrix `B` instead of `W^T` (feedback
alignment, FA) learns nearly as well as backprop, because the forward
weights come to align with `B`: the angle between the hidden layer's FA
update and backprop's falls below 90 degrees and keeps falling (their
Fig. 2). Noekland 2016 ("Direct Feedback Alignment Provides Learning in Deep
Neural Networks", NeurIPS): sending the output error straight to every
hidden layer through its own fixed random matrix (DFA) trains deep networks
(his 7x240 and 100x240 tanh networks on MNIST) to zero training error.

Setup: scikit-learn's 8x8 digits (pixels / 16), one fixed split (numpy
`default_rng(0)`, 1,258 train, 539 test rows), softmax cross-entropy, Adam
(lr 0.01), batches of 64 (32 for the deep network in quick mode).

* FA (Lillicrap): a `64 -> 64 tanh -> 10` network, two arms from the same
  initial params per seed: backprop, and
  [`feedback_alignment`][purenet.feedback.feedback_alignment] of the same
  model. After every epoch (and before the first): the training loss and
  [`alignment`][purenet.feedback.alignment]'s angle between the hidden
  layer's FA update of `W` and the true gradient, on the first 256 training
  rows (quick) or all of them (full).
* DFA (Noekland): an 8-layer tanh network, seven `dense(width) + tanh`
  layers and the output `dense(10)` (width 32 quick, 100 full), trained with
  [`direct_feedback_alignment`][purenet.feedback.direct_feedback_alignment]
  on the first `m` training rows (128 quick, all 1,258 full); its training
  error (fraction misclassified) after every epoch.

Feedback scales. purenet's defaults: FA's `B` is drawn like `W` (Glorot
uniform), DFA's `B_l` uniform on `[-1/sqrt(10), 1/sqrt(10)]`. Under Adam the
scale of the feedback does not matter: every layer's update is linear in one
feedback matrix (DFA) or a product of them (FA), and Adam's step is
invariant to a constant rescaling of a parameter's gradient (up to its
`eps`).

Training: `_common.sweep`, vmapped over seeds, the params and feedback drawn
inside the compiled program from each seed's key (`draw`, `start`); one
compiled program per arm.

Measured: test accuracy and final training loss of both FA arms (mean, std
over seeds), the hidden-layer angle per epoch, and DFA's training error per
epoch and its final value per seed.
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
    init_inside,
    num_seeds,
    pick,
    pyplot,
    seed_band,
    seed_stats,
    sweep,
    tracked,
)
from purenet import datasets, feedback, layers, losses, metrics, objective, optim

NAME = "feedback_alignment"
QUICK_SECONDS = 6  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Feedback alignment (fixed random feedback weights) learns nearly as well as backprop, "
    "and the angle between the hidden layer's update and the gradient falls below 90 "
    "degrees and keeps falling (Lillicrap et al. 2016); direct feedback alignment trains "
    "an 8-layer tanh network to zero training error (Noekland 2016)"
)

HIDDEN = 64
LEARNING_RATE = 0.01
DEEP_LEARNING_RATE = 0.01
DEPTH = 8  # dense layers of the DFA network, the output layer included
BATCH_SIZE = 64
HIDDEN_LAYER = f"serial[0], dense({HIDDEN})"
LOSS = losses.softmax_cross_entropy


def make_model():
    return layers.serial(layers.dense(HIDDEN), layers.tanh(), layers.dense(10))


def make_deep(width: int):
    hidden = [layer for _ in range(DEPTH - 1) for layer in (layers.dense(width), layers.tanh())]
    return layers.serial(*hidden, layers.dense(10))


def load(seed: int = 0):
    """The digits, split 70/30 with numpy's `default_rng(seed)`."""
    x, t = datasets.digits()
    x, t = np.asarray(x), np.asarray(t)
    order = np.random.default_rng(seed).permutation(len(t))
    cut = int(round(0.7 * len(t)))
    train, test = order[:cut], order[cut:]
    return tuple(jnp.asarray(a) for a in (x[train], t[train], x[test], t[test]))


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=4, full=16)
    epochs = pick(mode, smoke=2, quick=8, full=40)
    deep_epochs = pick(mode, smoke=2, quick=40, full=100)
    deep_rows = pick(mode, smoke=64, quick=128, full=None)
    deep_batch = pick(mode, smoke=32, quick=32, full=BATCH_SIZE)
    probe_rows = pick(mode, smoke=128, quick=256, full=None)
    width = pick(mode, smoke=16, quick=32, full=100)
    x_train, t_train, x_test, t_test = load()
    keys = jax.random.split(jax.random.key(1), seeds)
    model = make_model()
    rule = feedback.feedback_alignment(model)
    angle = feedback.alignment(rule, LOSS)
    J = objective(model, LOSS)
    in_shape = (x_train.shape[1],)

    xp, tp = x_train[:probe_rows], t_train[:probe_rows]

    def evaluate_fa(p, s, point):
        return J(p, x_train, t_train), angle(p, xp, tp, state=s)[HIDDEN_LAYER].update

    def evaluate_bp(p, s, point):
        return J(p, x_train, t_train), jnp.zeros((), p[0]["W"].dtype)

    def finish(p, s, point):
        return metrics.multiclass_accuracy(model.forward(p, x_test)[0], t_test)

    deep = feedback.direct_feedback_alignment(make_deep(width))
    xd, td = x_train[:deep_rows], t_train[:deep_rows]

    def train_error(p, s, point):
        y, _ = deep.forward(p, xd, state=s)
        return 1.0 - metrics.multiclass_accuracy(y, td)

    numbers = {}
    arms = ("backprop", "feedback_alignment", "dfa_deep")
    for arm in tracked(arms):
        if arm == "dfa_deep":
            _, _, history = sweep(
                deep,
                LOSS,
                optim.adam(DEEP_LEARNING_RATE),
                deep_batch,
                deep_epochs,
                (xd, td),
                drawn_start,
                keys,
                draw=init_inside(deep, in_shape),
                evaluate=train_error,
                evaluate_start=True,
            )
            numbers[arm] = {"train_error_per_epoch": np.asarray(history["evaluation"])}
            continue
        net, evaluate = (model, evaluate_bp) if arm == "backprop" else (rule, evaluate_fa)
        _, _, history = sweep(
            net,
            LOSS,
            optim.adam(LEARNING_RATE),
            BATCH_SIZE,
            epochs,
            (x_train, t_train),
            drawn_start,
            keys,
            draw=init_inside(net, in_shape),
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
        "data": "sklearn digits / 16, split 70/30 by numpy default_rng(0)",
        "model": f"64 -> {HIDDEN} tanh -> 10, softmax cross-entropy",
        "optimizer": f"adam(lr={LEARNING_RATE})",
        "batch_size": BATCH_SIZE,
        "epochs": epochs,
        "seeds": seeds,
        "feedback": "FA: B drawn like W at initialisation (Glorot uniform), fixed",
        "deep_model": f"{DEPTH - 1} x (dense({width}) + tanh) -> dense(10)",
        "deep_rule": "direct_feedback_alignment, B_l uniform on [-1/sqrt(10), 1/sqrt(10)]",
        "deep_optimizer": f"adam(lr={DEEP_LEARNING_RATE})",
        "deep_train_rows": int(xd.shape[0]),
        "deep_epochs": deep_epochs,
        "deep_batch_size": deep_batch,
        "angle_rows": int(xp.shape[0]),
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """FA: its mean test accuracy within 0.05 of backprop's; the hidden angle
    below 90 degrees at the end for every seed, and lower at the end than
    halfway on average over seeds (it keeps falling). DFA: every seed's
    training error at the end is 0 (quick: at most 1 %, its budget)."""
    numbers, settings = data["numbers"], data["settings"]
    bp, fa = numbers["backprop"], numbers["feedback_alignment"]
    angles = np.asarray(fa["hidden_angle_per_epoch"], float)  # (seeds, epochs + 1)
    start, half, end = angles[:, 0], angles[:, angles.shape[1] // 2], angles[:, -1]
    gap = bp["test_accuracy"]["mean"] - fa["test_accuracy"]["mean"]
    fa_ok = bool(gap <= 0.05 and (end < 90).all() and end.mean() < half.mean())
    errors = np.asarray(numbers["dfa_deep"]["train_error_per_epoch"], float)
    final_error = errors[:, -1]
    full = settings["deep_train_rows"] >= 1000
    dfa_ok = bool(final_error.max() <= (0.0 if full else 0.01))
    text = (
        f"test accuracy backprop {bp['test_accuracy']['mean']:.3f} ± "
        f"{bp['test_accuracy']['std']:.3f}, FA {fa['test_accuracy']['mean']:.3f} ± "
        f"{fa['test_accuracy']['std']:.3f}; hidden update vs gradient: {start.mean():.1f} deg "
        f"at the start, {half.mean():.1f} halfway, {end.mean():.1f} at the end "
        f"(max over seeds {end.max():.1f}); DFA, {settings['deep_model']}: training error "
        f"{errors[:, 0].mean():.3f} at the start, {final_error.mean():.4f} after "
        f"{settings['deep_epochs']} epochs on {settings['deep_train_rows']} rows "
        f"(max over seeds {final_error.max():.4f}); {settings['seeds']} seeds"
    )
    summary = {
        "test_acc_backprop": bp["test_accuracy"]["mean"],
        "test_acc_fa": fa["test_accuracy"]["mean"],
        "angle_start": float(start.mean()),
        "angle_end": float(end.mean()),
        "dfa_deep_train_error": float(final_error.mean()),
    }
    return Verdict(text, fa_ok and dfa_ok, summary)


def draw(data: dict):
    numbers, settings = data["numbers"], data["settings"]
    plt = pyplot()
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4.2))
    for arm, color in (("backprop", "C0"), ("feedback_alignment", "C3")):
        curves = np.asarray(numbers[arm]["loss_per_epoch"], float)
        acc = numbers[arm]["test_accuracy"]
        label = f"{arm} (test acc {acc['mean']:.3f})"
        seed_band(ax, np.arange(curves.shape[1]), curves, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy, nats)")
    ax.set_title(f"Lillicrap et al.: digits, 64-64-10 tanh\n({SPREAD})")
    ax.legend(fontsize=8)
    angles = np.asarray(numbers["feedback_alignment"]["hidden_angle_per_epoch"], float)
    seed_band(bx, np.arange(angles.shape[1]), angles, color="C3", label="FA update vs gradient")
    bx.axhline(90, color="k", ls="--", lw=1, label="90 degrees (orthogonal)")
    bx.set_ylim(0, 100)
    bx.set_xlabel("epoch")
    bx.set_ylabel("angle (degrees)")
    bx.set_title("Hidden layer's W: FA update vs true gradient")
    bx.legend(fontsize=8)
    errors = np.asarray(numbers["dfa_deep"]["train_error_per_epoch"], float)
    seed_band(cx, np.arange(errors.shape[1]), np.maximum(errors, 1e-4), color="C2", label="DFA")
    cx.set_yscale("log")
    cx.set_xlabel("epoch")
    cx.set_ylabel("training error (0 drawn at 1e-4)")
    cx.set_title(
        f"Noekland: DFA, {settings['deep_model']}\n{settings['deep_train_rows']} training rows"
    )
    cx.legend(fontsize=8)
    fig.tight_layout()
    return fig
