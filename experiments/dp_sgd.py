"""DP-SGD: a private model approaches the non-private one as epsilon grows.

Claim (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang 2016, "Deep
Learning with Differential Privacy", Section 5.2 and Figure 3): training
with per-example clipping and Gaussian noise (DP-SGD) costs accuracy that
shrinks as the privacy budget grows; on MNIST (60,000 examples, delta
`1e-5`) their network reached 90%, 95% and 97% test accuracy at epsilon
0.5, 2 and 8, against 98.3% without privacy.

Setup: scikit-learn's digits (1797 images 8x8; a fixed 80 / 20 split,
standardised on the training part: 1438 training examples), a
`64 -> 32 tanh -> 10` network, softmax cross-entropy, momentum SGD (rate
0.1, mass 0.9), expected batch 64 (Poisson sampling, `q = 64 / 1438`), the
same number of steps for every arm. The digits, not MNIST-1D: its generator
takes about 4 s per 5,000 examples on one core, the whole of this
experiment's quick budget. With 1438 examples privacy is much harder than
with Abadi et al.'s 60,000 (the noise on the mean gradient is
`sigma C / (q n)`, and `sigma` for a budget grows with the steps taken):
the claim tested is the trend, and the numbers are not expected to match
theirs.

Arms, one compiled program (`sweep` over a grid of traced clip norms and
noise multipliers, each arm over the seeds):

* `non-private`: the same Poisson-sampled steps, no clipping (clip norm
  `1e30`), no noise;
* `clip only`: per-example clipping to `C = 1`, no noise (no privacy);
* `epsilon = e` for each target `e`: clipping to `C = 1` and the noise
  multiplier `sigma` that [`purenet.privacy.noise_multiplier_for`][]
  chooses for the planned steps and sample rate at `delta = 1e-5` (the
  search over the integer Renyi orders 2..64, 128 and 256: an upper bound on
  epsilon, ten times faster than the full grid); the epsilon actually spent
  is then [`purenet.privacy.epsilon`][] with its default orders, reported
  beside each point.

Gradients: [`purenet.privacy.dp_gradient`][] in the training loop
(`make_train(..., privacy=...)`): per-example norms from the cached
activations, the clipped sum by a reweighted backward, then the noise.
Measured: test accuracy after every epoch, per arm and seed.
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
    progress,
    pyplot,
    seed_band,
    seed_stats,
    standardized_digits,
    sweep,
)
from purenet import layers as L
from purenet import losses, metrics, optim, privacy

NAME = "dp_sgd"
QUICK_SECONDS = 6  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "DP-SGD (Abadi et al. 2016): test accuracy rises towards the non-private model's as the "
    "privacy budget epsilon grows (their MNIST: 90/95/97% at epsilon 0.5/2/8, delta 1e-5, "
    "against 98.3% without privacy)"
)

HIDDEN = 32
LEARNING_RATE, MASS = 0.1, 0.9
BATCH = 64  # the expected batch size of the Poisson sample
CLIP = 1.0
DELTA = 1e-5
NO_CLIP = 1e30  # the non-private arm's clip norm: min(1, C / |g_i|) = 1
SEARCH_ORDERS = tuple(range(2, 65)) + (128, 256)
PAPER = {0.5: 0.90, 2.0: 0.95, 8.0: 0.97}
PAPER_NON_PRIVATE = 0.983
LOSS = losses.softmax_cross_entropy


def _model():
    return L.serial(L.dense(HIDDEN), L.tanh(), L.dense(10))


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=3, full=16)
    epochs = pick(mode, smoke=1, quick=10, full=20)
    targets = pick(
        mode, smoke=(2.0,), quick=(0.5, 2.0, 8.0), full=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    )
    x, t, x_test, t_test = standardized_digits()
    n = int(x.shape[0])
    rate, steps = BATCH / n, epochs * (n // BATCH)
    progress(0, 2, "noise multipliers")
    sigmas = [
        privacy.noise_multiplier_for(e, rate, steps, DELTA, orders=SEARCH_ORDERS) for e in targets
    ]
    spent = [privacy.epsilon(s, rate, steps, DELTA, dataset_size=n) for s in sigmas]

    arms = ["non-private", "clip only"] + [f"epsilon {e:g}" for e in targets]
    clips = [NO_CLIP, CLIP] + [CLIP] * len(targets)
    noises = [0.0, 0.0] + sigmas
    model = _model()
    keys = jax.random.split(jax.random.key(1), seeds)
    init_keys, train_keys = zip(*(jax.random.split(key) for key in keys), strict=True)

    def evaluate(params, state, point):
        return metrics.multiclass_accuracy(model.forward(params, x_test)[0], t_test)

    progress(1, 2, f"{len(arms)} arms x {seeds} seeds")
    _, _, history = sweep(
        model,
        LOSS,
        optim.momentum(LEARNING_RATE, MASS),
        BATCH,
        epochs,
        (x, t),
        init_many(model, init_keys, (x.shape[1],)),
        jnp.stack(train_keys),
        grid={
            "clip": jnp.asarray(clips, jnp.float32),
            "noise": jnp.asarray(noises, jnp.float32),
        },
        privacy=lambda point: privacy.dp_sgd(
            l2_clip=point["clip"], noise_multiplier=point["noise"], delta=DELTA
        ),
        evaluate=evaluate,
    )
    accuracy = np.asarray(history["evaluation"])  # (arms, seeds, epochs)
    numbers = {
        "arms": arms,
        "target_epsilon": list(targets),
        "noise_multiplier": sigmas,
        "epsilon_spent": spent,
        "test_accuracy": accuracy,
        "final": {arm: seed_stats(accuracy[i, :, -1]) for i, arm in enumerate(arms)},
    }
    settings = {
        "data": "sklearn digits, split 80/20 with key 0, standardised on the training part",
        "train_examples": n,
        "test_examples": int(x_test.shape[0]),
        "model": f"64 -> {HIDDEN} tanh -> 10, softmax cross-entropy",
        "optimizer": f"momentum(lr={LEARNING_RATE}, mass={MASS})",
        "expected_batch_size": BATCH,
        "sample_rate": rate,
        "steps": steps,
        "epochs": epochs,
        "l2_clip": CLIP,
        "delta": DELTA,
        "seeds": seeds,
        "sampling": "Poisson (every example with probability q per step), every arm",
        "noise_search_orders": "integers 2..64, 128, 256 (an upper bound on epsilon)",
        "epsilon_orders": "purenet.privacy.DEFAULT_ORDERS",
    }
    return {"settings": settings, "numbers": numbers}


def _private(numbers):
    """`(spent epsilons, final accuracies (points, seeds))` of the private arms."""
    accuracy = np.asarray(numbers["test_accuracy"], float)[:, :, -1]
    return np.asarray(numbers["epsilon_spent"], float), accuracy[2:]


def judge(data: dict) -> Verdict:
    """Supported when the mean test accuracy rises with epsilon at every
    step of the grid, the gap to the non-private model at the largest
    epsilon is at most half the gap at the smallest, and at most 5 points
    (Abadi et al.: 8 points at epsilon 0.5, 1.3 at 8)."""
    numbers, settings = data["numbers"], data["settings"]
    final = numbers["final"]
    spent, private = _private(numbers)
    means = private.mean(axis=1)
    non_private = final["non-private"]["mean"]
    gaps = non_private - means
    rising = bool(np.all(np.diff(means) > 0)) if means.size > 1 else False
    closing = means.size > 1 and gaps[-1] <= 0.5 * gaps[0] and gaps[-1] <= 0.05
    supported = bool(rising and closing)
    points = "; ".join(
        f"epsilon {e:.2g} (sigma {s:.2f}): {m:.3f}"
        for e, s, m in zip(spent, numbers["noise_multiplier"], means, strict=True)
    )
    text = (
        f"test accuracy, mean of {settings['seeds']} seeds, {settings['steps']} steps, "
        f"delta {settings['delta']:g}: {points}; clip only {final['clip only']['mean']:.3f}; "
        f"non-private {non_private:.3f} (digits, n={settings['train_examples']}; "
        "Abadi et al.'s MNIST: 0.90/0.95/0.97 at epsilon 0.5/2/8, 0.983 non-private)"
    )
    summary = {
        "non_private": non_private,
        "clip_only": final["clip only"]["mean"],
        **{f"eps_{e:.2g}": m for e, m in zip(spent, means, strict=True)},
    }
    return Verdict(text, supported, summary)


def draw(data: dict):
    numbers, settings = data["numbers"], data["settings"]
    spent, private = _private(numbers)
    accuracy = np.asarray(numbers["test_accuracy"], float)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    fig.suptitle(
        f"DP-SGD on the digits (n={settings['train_examples']}, expected batch "
        f"{settings['expected_batch_size']}, {settings['steps']} steps, clip "
        f"{settings['l2_clip']:g}, delta {settings['delta']:g}): {settings['seeds']} seeds"
    )
    mean, se = private.mean(axis=1), private.std(axis=1, ddof=1) / np.sqrt(private.shape[1])
    left.errorbar(spent, mean, yerr=se, fmt="o-", color="C0", capsize=4, label="DP-SGD")
    for e, m, s in zip(spent, mean, numbers["noise_multiplier"], strict=True):
        left.annotate(
            f"eps {e:.2f}\nsigma {s:.2f}",
            (e, m),
            textcoords="offset points",
            xytext=(6, -22),
            fontsize=7,
        )
    for arm, color in (("non-private", "C2"), ("clip only", "C1")):
        values = accuracy[numbers["arms"].index(arm), :, -1]
        left.axhline(values.mean(), color=color, ls="--", label=f"{arm} {values.mean():.3f}")
    left.plot(
        list(PAPER),
        list(PAPER.values()),
        "s:",
        color="gray",
        label=f"Abadi et al., MNIST (non-private {PAPER_NON_PRIVATE})",
    )
    left.set_xscale("log")
    left.set_xticks(spent, [f"{e:.2g}" for e in spent], fontsize=8)
    left.minorticks_off()
    left.set_xlabel("epsilon spent (purenet.privacy.epsilon, RDP accountant)")
    left.set_ylabel("test accuracy after the last step")
    left.set_title(f"Accuracy against the privacy budget ({SPREAD})")
    left.legend(fontsize=8, loc="lower right")
    epochs = np.arange(1, accuracy.shape[2] + 1)
    for i, arm in enumerate(numbers["arms"]):
        seed_band(right, epochs, accuracy[i], color=f"C{i}", label=arm)
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy")
    right.set_title(f"During training ({SPREAD})")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig
