"""The critical batch size: steps and examples to a target loss trade off as
McCandlish et al. 2018 predict, at the gradient noise scale.

Claim (McCandlish, Kaplan, Amodei & the OpenAI Dota team 2018, "An Empirical
Model of Large-Batch Training", eq. 2.11 and Section 3): training to a given
loss with batch size `B` and a tuned learning rate takes `S` steps and
`E = B S` examples with

```text
(S / S_min - 1) (E / E_min - 1) = 1,   i.e.   S = S_min + E_min / B,
```

so small batches cost steps and large ones cost examples, the turning point
being the critical batch `B_crit = E_min / S_min`; and `B_crit` is of the
order of the gradient noise scale `B_simple = tr(Sigma) / |G|^2` (their
Figure 4: the same order of magnitude, not equal; `B_simple` equals the
`B_noise` of their theory only for a Hessian proportional to the identity).
This is the quantitative form of the notes' claim about batch sizes (the
`batch_sizes` experiment): a larger batch gives a better gradient estimate,
which pays until `B ~ B_noise` and hardly after.

Which `B_simple`: the noise scale grows as the loss falls (McCandlish et al.,
Section 3; here from about 30 at the start to about 1000 at the target), so
"the" noise scale of a run to a target has to be said. Their per-step model
(eq. 2.7) has a step at `theta` with batch `B` do the work of
`1 / (1 + B_noise(theta) / B)` noise-free steps; summed over the steps of a
run, `S = S_min + E_min / B` with `S_min` the noise-free steps and
`E_min = sum over those steps of B_noise`, so `B_crit = E_min / S_min` is
`B_noise` averaged over the steps of a run to the target (their Section 2.3:
`B_crit` as the noise scale averaged over training). The verdict compares
`B_crit` with `B_simple` averaged over the steps of the largest batch's run
(the nearest to noise-free training: one step per epoch, so it is recorded
at every step) from the start to the step at which that run reaches the
target, the last step weighted by its fraction; the value at the target
itself, the largest along the way, is reported beside it.

Setup: scikit-learn's digits (80 / 20 split, standardised on the training
part: 1438 examples), the `64 -> 32 tanh -> 10` network, softmax
cross-entropy, plain SGD, shuffled mini-batches. For each batch size, a grid
of learning rates (traced: one program per batch size, `sweep`) and several
seeds; the training set's loss is recorded before training and after every
epoch, and the step at which it first falls below the target is
interpolated (linearly in the log of the loss) between those records. Per
batch size, the learning rate with the fewest mean steps is kept (the
"tuned" rate of the claim; the verdict checks it is inside the grid, not at
an end); `S_min` and `E_min` are fitted to `S = S_min + E_min / B` by least
squares on the relative error (each point weighted by `1 / S`).

`B_simple` is exact, not estimated: the training set is the population SGD
samples, so `G` and `Sigma` are the mean and covariance of its 1438
per-example gradients. [`purenet.per_example.noise_scale`][] on the whole
training set as one batch gives the with-replacement unbiased estimates
`|G|^2 ~ |G_n|^2 - tr / (n - 1)` and `tr(Sigma) ~ n tr / (n - 1)`
(`G_n` the mean gradient, `tr` the per-example gradients' mean squared
distance from it), from which the population's own `|G_n|^2` and `tr` are
recovered exactly (`population`). An estimate from batches of 128 is no use
here: at the target `B_simple` is about 1000, so `|G|^2` is a tenth of a
128-batch's `tr(Sigma) / 128` and the estimates of it swing through zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    Mode,
    Verdict,
    init_many,
    num_seeds,
    pick,
    pyplot,
    standardized_digits,
    sweep,
    tracked,
)
from purenet import layers as L
from purenet import losses, objective, optim, per_example

NAME = "gradient_noise_scale"
QUICK_SECONDS = 6  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Steps and examples to a target loss trade off as S = S_min + E_min / B (McCandlish et "
    "al. 2018; the fit within 25% of every batch size's tuned steps), with the critical batch "
    "B_crit = E_min / S_min within a factor of 3 of the gradient noise scale B_simple = "
    "tr(Sigma) / |G|^2 averaged over the steps of the largest batch's run to that loss (their "
    "Figure 4: the same order of magnitude)"
)

HIDDEN = 32
TARGET = 0.1  # training loss (nats)
FACTOR = 3.0  # B_crit against the averaged B_simple: "the same order of magnitude"
MISFIT = 0.25  # the fit's largest relative error allowed
KEY = 1  # the seeds' keys: split(key(KEY), seeds)
LOSS = losses.softmax_cross_entropy


def _model():
    return L.serial(L.dense(HIDDEN), L.tanh(), L.dense(10))


def crossing(steps, loss, target):
    """The first step at which `loss` (recorded at `steps`) falls below
    `target`, interpolated linearly in `log(loss)`; -1 if never (JSON keeps
    numbers finite)."""
    loss = np.asarray(loss, float)
    below = np.flatnonzero(np.isfinite(loss) & (loss <= target))
    if below.size == 0:
        return -1.0
    i = below[0]
    if i == 0:
        return float(steps[0])
    a, b = np.log(loss[i - 1]), np.log(loss[i])
    if not np.isfinite(a) or a <= b:
        return float(steps[i])
    w = (a - np.log(target)) / (a - b)
    return float(steps[i - 1] + w * (steps[i] - steps[i - 1]))


def fit_trade_off(batch_sizes, steps):
    """`(S_min, E_min)` of `S = S_min + E_min / B`, least squares on `S`'s
    relative error (rows divided by `S`)."""
    B, S = np.asarray(batch_sizes, float), np.asarray(steps, float)
    design = np.stack([np.ones_like(B), 1 / B], axis=1) / S[:, None]
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(S), rcond=None)
    return float(s_min), float(e_min)


def population(noise, n: int):
    """`(|G|^2, tr(Sigma))` of a population of `n` examples from
    `noise_scale`'s estimates on all `n` of them as one batch: it removes
    the bias of sampling with replacement (`tr / (n - 1)` from `|G|^2`, a
    factor `n / (n - 1)` on `tr`), which a whole population does not have."""
    return noise.grad_sq + noise.trace_sigma / n, noise.trace_sigma * (n - 1) / n


def step_average(values, steps_at, until):
    """The mean of `values` (recorded at `steps_at`) over the steps `0 ..
    until`, each record standing for the steps up to the next, the last
    partial step weighted by its fraction; `nan` if `until <= 0`."""
    values, steps_at = np.asarray(values, float), np.asarray(steps_at, float)
    if not until > 0:
        return float("nan")
    ends = np.minimum(np.append(steps_at[1:], np.inf), until)
    weight = np.clip(ends - steps_at, 0, None)
    return float(np.sum(weight * values) / until)


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=4, full=8)
    sizes = pick(
        mode,
        smoke=(64, 256),
        quick=(16, 128, 1024),
        full=(8, 16, 32, 64, 128, 256, 512, 1024),
    )
    # epochs per batch size: enough for the tuned rate to reach the target
    budget = pick(
        mode,
        smoke={64: 2, 256: 2},
        quick={16: 3, 128: 6, 1024: 16},
        full={8: 4, 16: 4, 32: 4, 64: 6, 128: 8, 256: 12, 512: 24, 1024: 40},
    )
    rates = pick(
        mode,
        smoke=(0.1, 0.4),
        quick=tuple(0.4 * 2**k for k in range(6)),
        full=tuple(0.1 * 2 ** (k / 2) for k in range(16)),
    )
    x, t, _, _ = standardized_digits()
    n = int(x.shape[0])
    model = _model()
    J = objective(model, LOSS)
    noise = per_example.noise_scale(model, LOSS)

    def loss_only(params, state, point):
        return {"loss": J(params, x, t)}

    def with_noise(params, state, point):
        losses_i, g = noise(params, x, t)
        grad_sq, trace_sigma = population(g, n)
        return {"loss": jnp.mean(losses_i), "grad_sq": grad_sq, "trace_sigma": trace_sigma}

    keys = jax.random.split(jax.random.key(KEY), seeds)
    init_keys, train_keys = zip(*(jax.random.split(key) for key in keys), strict=True)
    start = init_many(model, init_keys, (x.shape[1],))
    grid = {"learning_rate": jnp.asarray(rates, jnp.float32)}
    runs = {}
    for B in tracked(sizes, label=lambda b: f"batch {b}"):
        _, _, history = sweep(
            model,
            LOSS,
            lambda point: optim.sgd(point["learning_rate"]),
            B,
            budget[B],
            (x, t),
            start,
            jnp.stack(train_keys),
            grid=grid,
            evaluate=with_noise if B == max(sizes) else loss_only,
            evaluate_start=True,
        )
        runs[B] = jax.tree.map(np.asarray, history["evaluation"])  # (rates, seeds, epochs + 1)

    numbers = {"batch_sizes": list(sizes), "learning_rates": list(rates), "runs": {}}
    for B in sizes:
        steps_at = np.arange(budget[B] + 1) * (n // B)
        loss = np.asarray(runs[B]["loss"], float)
        S = np.array(
            [
                [crossing(steps_at, loss[r, s], TARGET) for s in range(seeds)]
                for r in range(len(rates))
            ]
        )
        numbers["runs"][str(B)] = {"loss": loss, "steps_to_target": S}
        if "grad_sq" in runs[B]:
            numbers["runs"][str(B)]["grad_sq"] = runs[B]["grad_sq"]
            numbers["runs"][str(B)]["trace_sigma"] = runs[B]["trace_sigma"]
    settings = {
        "data": "sklearn digits, split 80/20 with key 0, standardised on the training part",
        "train_examples": n,
        "model": f"64 -> {HIDDEN} tanh -> 10, softmax cross-entropy",
        "optimizer": "sgd(learning_rate), the rate tuned per batch size from the grid",
        "target_loss": TARGET,
        "epochs": {str(B): budget[B] for B in sizes},
        "seeds": seeds,
        "noise": "exact tr(Sigma) and |G|^2 of the whole training set (the population)",
        "noise_run": f"batch size {max(sizes)} ({n // max(sizes)} step(s) an epoch), every "
        "learning rate and seed, before training and after every epoch",
    }
    return {"settings": settings, "numbers": numbers}


def _analyse(data: dict) -> dict:
    """Tuned steps per batch size, the fit, and B_simple in the largest
    batch's tuned run: averaged over its steps to the target, and at it."""
    numbers, settings = data["numbers"], data["settings"]
    sizes = [int(b) for b in numbers["batch_sizes"]]
    rates = np.asarray(numbers["learning_rates"], float)
    n = int(settings["train_examples"])
    tuned_steps, tuned_rate, per_seed, best = [], [], [], {}
    for B in sizes:
        S = np.asarray(numbers["runs"][str(B)]["steps_to_target"], float)  # (rates, seeds)
        S = np.where(S < 0, np.nan, S)  # -1: never reached
        mean = np.where(
            np.all(np.isfinite(S), axis=1), np.where(np.isfinite(S), S, 0).mean(1), np.inf
        )
        r = int(np.argmin(mean))
        best[B] = r
        tuned_steps.append(mean[r])
        tuned_rate.append(rates[r])
        per_seed.append(S[r])
    tuned_steps = np.asarray(tuned_steps)
    reached = np.isfinite(tuned_steps)
    inside = [0 < best[B] < len(rates) - 1 for B in sizes]
    out = {
        "sizes": np.asarray(sizes, float),
        "steps": tuned_steps,
        "rates": np.asarray(tuned_rate),
        "per_seed": np.asarray(per_seed),
        "reached": bool(reached.all()),
        "inside_grid": bool(all(inside) or len(rates) < 3),
        "best": best,
    }
    if reached.sum() >= 2:
        s_min, e_min = fit_trade_off(out["sizes"][reached], tuned_steps[reached])
        predicted = s_min + e_min / out["sizes"]
        out.update(
            s_min=s_min,
            e_min=e_min,
            b_crit=e_min / s_min if s_min > 0 else np.inf,
            residual=float(np.max(np.abs(tuned_steps[reached] / predicted[reached] - 1))),
        )
    B = max(sizes)
    run = numbers["runs"][str(B)]
    loss = np.asarray(run["loss"], float)[best[B]]  # (seeds, records)
    b_simple = (
        np.asarray(run["trace_sigma"], float)[best[B]] / np.asarray(run["grad_sq"], float)[best[B]]
    )
    steps_at = np.arange(loss.shape[1]) * (n // B)
    until = np.asarray(per_seed[-1], float)  # each seed's steps to the target
    target = float(settings["target_loss"])
    if np.all(np.isfinite(until)):
        out["b_simple"] = float(
            np.mean([step_average(b, steps_at, u) for b, u in zip(b_simple, until, strict=True)])
        )
        # at the target: interpolated in log(B_simple) against log(loss), per seed
        at = []
        for lo, b in zip(loss, b_simple, strict=True):
            i = np.flatnonzero(lo <= target)[0]
            if i == 0 or not np.all(b[i - 1 : i + 1] > 0):
                at.append(b[i])
                continue
            w = np.log(lo[i - 1] / target) / np.log(lo[i - 1] / lo[i])
            at.append(np.exp(np.log(b[i - 1]) + w * np.log(b[i] / b[i - 1])))
        out["b_simple_at_target"] = float(np.mean(at))
    out["b_simple_curve"] = (steps_at, b_simple, until)
    return out


def judge(data: dict) -> Verdict:
    """Supported when every batch size reaches the target at a tuned rate
    inside the grid, the fit `S = S_min + E_min / B` is within 25% of every
    tuned step count, and `B_crit = E_min / S_min` is within a factor of 3
    of `B_simple` averaged over the steps of the largest batch's run to the
    target (McCandlish et al.: the same order of magnitude)."""
    a, settings = _analyse(data), data["settings"]
    steps = ", ".join(
        f"B={b:.0f}: {s:.0f} (lr {r:.2g})"
        for b, s, r in zip(a["sizes"], a["steps"], a["rates"], strict=True)
    )
    if "b_crit" not in a or "b_simple" not in a:
        text = f"steps to training loss {settings['target_loss']}: {steps}; too few to fit"
        return Verdict(
            text, False, {"batch_sizes_reaching_target": int(np.isfinite(a["steps"]).sum())}
        )
    ratio = a["b_crit"] / a["b_simple"]
    fits = a["residual"] <= MISFIT
    supported = bool(a["reached"] and a["inside_grid"] and fits and 1 / FACTOR <= ratio <= FACTOR)
    edge = "" if a["inside_grid"] else " (a tuned rate at the grid's end)"
    text = (
        f"tuned steps to training loss {settings['target_loss']}: {steps}{edge}; fit S_min "
        f"{a['s_min']:.1f}, E_min {a['e_min']:.0f} (largest misfit {a['residual']:.0%}): "
        f"B_crit {a['b_crit']:.0f} against B_simple {a['b_simple']:.0f} averaged over the "
        f"batch-{a['sizes'].max():.0f} run's steps to that loss (ratio {ratio:.2f}; "
        f"{a['b_simple_at_target']:.0f} at the loss itself), {settings['seeds']} seeds"
    )
    summary = {
        "S_min": a["s_min"],
        "E_min": a["e_min"],
        "B_crit": a["b_crit"],
        "B_simple": a["b_simple"],
        "B_simple_at_target": a["b_simple_at_target"],
        "B_crit_over_B_simple": ratio,
        "largest_misfit": a["residual"],
    }
    return Verdict(text, supported, summary)


def draw(data: dict):
    a, settings = _analyse(data), data["settings"]
    plt = pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(17, 5))
    fig.suptitle(
        f"Steps against examples to training loss {settings['target_loss']} (digits, "
        f"{settings['model']}, SGD with the rate tuned per batch size, {settings['seeds']} seeds)"
    )
    B, S = a["sizes"], a["steps"]
    per_seed = a["per_seed"]
    left.loglog(B, S, "o", color="C0", label="measured (tuned rate, mean of seeds)")
    for i, b in enumerate(B):
        left.plot(np.full(per_seed.shape[1], b), per_seed[i], "k.", ms=3)
    if "s_min" in a:
        grid = np.geomspace(B.min() / 2, B.max() * 2, 100)
        left.loglog(
            grid,
            a["s_min"] + a["e_min"] / grid,
            "-",
            color="C1",
            label=f"S_min + E_min / B: S_min {a['s_min']:.1f}, E_min {a['e_min']:.0f}",
        )
        left.axvline(a["b_crit"], color="C1", ls="--", label=f"B_crit = {a['b_crit']:.0f}")
    if "b_simple" in a:
        left.axvline(
            a["b_simple"],
            color="C2",
            ls=":",
            label=f"B_simple (step average) = {a['b_simple']:.0f}",
        )
    left.set_xlabel("batch size B")
    left.set_ylabel("steps to the target S")
    left.set_title("Steps against batch size (dots: seeds)")
    left.legend(fontsize=8)

    E = B * S
    middle.loglog(S, E, "o-", color="C0", label="measured")
    if "s_min" in a:
        s = np.geomspace(a["s_min"] * 1.02, S.max() * 2, 200)
        middle.loglog(
            s,
            a["e_min"] * (1 + 1 / (s / a["s_min"] - 1)),
            "-",
            color="C1",
            label="(S/S_min - 1)(E/E_min - 1) = 1",
        )
        middle.axvline(a["s_min"], color="gray", ls=":", lw=1)
        middle.axhline(a["e_min"], color="gray", ls=":", lw=1)
    for b, s, e in zip(B, S, E, strict=True):
        middle.annotate(f"B={b:.0f}", (s, e), textcoords="offset points", xytext=(4, 4), fontsize=7)
    middle.set_xlabel("steps S")
    middle.set_ylabel("examples E = B S")
    middle.set_title("The trade-off (grey: S_min and E_min)")
    middle.legend(fontsize=8)

    steps_at, b_simple, until = a["b_simple_curve"]
    for seed, (b, u) in enumerate(zip(b_simple, until, strict=True)):
        keep = steps_at <= (np.ceil(u) if np.isfinite(u) else steps_at.max())
        right.semilogy(
            steps_at[keep],
            b[keep],
            ".-",
            color="C2",
            alpha=0.5,
            lw=1,
            label="B_simple along the run (seeds; to the target)" if seed == 0 else None,
        )
        if np.isfinite(u):
            right.axvline(u, color="k", ls=":", lw=0.5)
    if "b_simple" in a:
        right.axhline(
            a["b_simple"], color="C2", ls="-", lw=2, label=f"its step average {a['b_simple']:.0f}"
        )
        right.axhline(
            a["b_simple_at_target"],
            color="C2",
            ls=":",
            label=f"at the target loss {a['b_simple_at_target']:.0f}",
        )
    if "b_crit" in a:
        right.axhline(a["b_crit"], color="C1", ls="--", label=f"B_crit (fit) {a['b_crit']:.0f}")
    right.set_xlabel("step (dotted: each seed reaches the target)")
    right.set_ylabel("tr(Sigma) / |G|^2 (exact, whole training set)")
    right.set_title(f"Noise scale in the batch-{B.max():.0f} run, tuned rate")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig
