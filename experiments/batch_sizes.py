"""Batch size: batch gradient descent, SGD and mini-batches on the same task.

Claim (seed 001, "Gradient Descent Optimizer", pp. 4-14; seed 002, "batch
size"): batch gradient descent (the whole training set per update) makes one
accurate update per epoch; stochastic gradient descent (one example per
update) makes `m` noisy updates per epoch, "mathematically not correct" but
far faster per epoch and in time, with a jagged but falling error curve;
mini-batches sit in between (a sample of the population estimates the full
gradient).

Setup: scikit-learn's digits (1797 images, 8x8), a fixed 80 / 20 train / test
split standardised on the training part, a 64-64-10 tanh net with softmax
cross-entropy, plain SGD with the same learning rate (0.05) for every batch
size: 1, 8, 32, 128 and `m` = 1438 (batch gradient descent). The same rate
for all is a choice: it isolates what the batch size does to the gradient
estimate and the number of updates. It is unfavourable to batch gradient
descent, which could take larger steps; so batch GD is also run over a grid of
rates, and the rate with the lowest final loss (no seed blowing up) is shown.

Measured:

* the whole training set's loss (evaluation mode) after every epoch, for
  several seeds at once (`jax.vmap`: each seed its own initialisation and
  batch order), against epochs and against the number of updates;
* wall-clock: a separate single-seed run per batch size (the runs are
  separate, one after the other, on the same machine), each epoch compiled
  first (one warm-up call), then timed alone with `block_until_ready`; the
  loss evaluation after each epoch is not timed. (The timed runs call
  `purenet.train.make_epoch` epoch by epoch rather than `make_train`:
  timing needs each epoch on its own; the measured runs use `make_train`.)

The claim is tested three ways, at the same learning rate: per epoch (the
loss after the last epoch grows with the batch size), noise (SGD's loss jumps
from one update to the next, batch GD's does not), and time (some smaller
batch reaches the loss threshold sooner than batch GD). Per update (each size
against the next smaller one, at equal numbers of updates) the losses are
reported, not tested: at a small common rate an update's progress hardly
depends on how exact its gradient is, so the curves fall on top of each other
except for SGD's noise; the exact gradient pays only through the larger rate
it tolerates (the tuned batch-GD run).
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
    standardized_digits,
    sweep,
    tracked,
)
from purenet import layers as L
from purenet import losses, optim, train

NAME = "batch_sizes"
QUICK_SECONDS = 20  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Batch GD makes one exact update per epoch, SGD many noisy ones (a jagged but falling "
    "loss); per epoch and in wall-clock time smaller batches get further."
)

LEARNING_RATE = 0.05
HIDDEN = 64
THRESHOLD = 0.1  # training loss for the time-to-threshold comparison
BATCH_GD_GRID = (0.05, 0.2, 0.8, 3.2, 12.8, 51.2)
LOSS = losses.softmax_cross_entropy


def _model():
    return L.serial(L.dense(HIDDEN), L.tanh(), L.dense(10))


def _seed_runs(batch_size: int, epochs: int, seeds: int, x, t, learning_rates):
    """Training loss after each epoch (index 0: before training) for every
    learning rate and seed, all in one vmap: shape (rates, seeds, epochs + 1)."""
    model = _model()
    evaluate = train.make_evaluate(model, LOSS)
    keys = jax.random.split(jax.random.key(1), seeds)  # seed s: same init for every size
    init_keys, train_keys = zip(*(jax.random.split(key) for key in keys), strict=True)
    _, _, history = sweep(
        model,
        LOSS,
        lambda point: optim.sgd(point["learning_rate"]),
        batch_size,
        epochs,
        (x, t),
        init_many(model, init_keys, (x.shape[1],)),
        jnp.stack(train_keys),
        grid={"learning_rate": jnp.asarray(learning_rates, jnp.float32)},  # traced: one program
        evaluate=lambda p, s, point: evaluate(p, x, t, s)[0],
        evaluate_start=True,
    )  # optimisation level 0: see _common.jit
    return np.asarray(history["evaluation"])


def _timed_run(batch_size: int, epochs: int, x, t):
    """One seed, epoch by epoch: seconds per epoch (compiled beforehand), the
    training loss after each epoch, and the first epoch's step losses."""
    model = _model()
    optimizer = optim.sgd(LEARNING_RATE)
    epoch = jax.jit(train.make_epoch(model, LOSS, optimizer, batch_size, x.shape[0]))
    evaluate = train.make_evaluate(model, LOSS)
    _, params, state = model.init(jax.random.key(7), (x.shape[1],))
    opt_state = optimizer.init(params)
    jax.block_until_ready(epoch(params, opt_state, state, jax.random.key(0), x, t))  # compile
    seconds, curve, first_steps = [], [float(evaluate(params, x, t)[0])], None
    for e in range(epochs):
        key = jax.random.fold_in(jax.random.key(8), e)
        started = time.perf_counter()
        params, opt_state, state, step_losses = jax.block_until_ready(
            epoch(params, opt_state, state, key, x, t)
        )
        seconds.append(time.perf_counter() - started)
        curve.append(float(evaluate(params, x, t)[0]))
        if first_steps is None:
            first_steps = np.asarray(step_losses)
    return np.asarray(seconds), np.asarray(curve), first_steps


def _log_interp(x_new, x, y):
    """Interpolate `log y` linearly in `x`."""
    return float(np.exp(np.interp(x_new, x, np.log(y))))


def _time_to(threshold, seconds, curve):
    """Cumulative seconds until the loss first falls to `threshold` (linear
    within the epoch that crosses it), or `inf`."""
    elapsed = np.concatenate([[0.0], np.cumsum(seconds)])
    below = np.flatnonzero(curve <= threshold)
    if below.size == 0:
        return float("inf")
    e = int(below[0])
    if e == 0:
        return 0.0
    frac = (curve[e - 1] - threshold) / (curve[e - 1] - curve[e])
    return float(elapsed[e - 1] + frac * (elapsed[e] - elapsed[e - 1]))


# -------------------------------------------------------------------------- figure


def draw(data: dict):
    numbers, settings = data["numbers"], data["settings"]
    sizes, m = settings["batch_sizes"], settings["num_train"]
    plt = pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    fig.suptitle(
        f"Digits, 64-64-10 tanh, plain SGD at lr {LEARNING_RATE} for every batch size: "
        "training loss on the whole training set"
    )
    colors = {b: f"C{i}" for i, b in enumerate(sizes)}
    tuned = numbers["batch_gd_tuned"]

    def name(b):
        return f"batch GD ({m})" if b == m else ("SGD (1)" if b == 1 else f"mini-batch {b}")

    (ax_epochs, ax_updates, ax_time), (ax_steps, ax_cost, ax_lr) = axes
    for b in sizes:
        c = colors[b]
        curves = np.asarray(numbers["curves"][str(b)], dtype=float)
        epochs = np.arange(curves.shape[1])
        seed_band(ax_epochs, epochs, curves, color=c, label=name(b))
        updates = epochs[1:] * (m // b)
        seed_band(ax_updates, updates, curves[:, 1:], color=c, label=name(b), style="o-", ms=2)
        timed = numbers["timed"][str(b)]
        elapsed = np.concatenate([[0.0], np.cumsum(timed["seconds"])]) * 1e3
        ax_time.plot(elapsed, timed["curve"], "o-", ms=2, color=c, label=name(b))
        steps = np.asarray(timed["first_epoch_step_losses"])
        ax_steps.plot(
            np.arange(1, len(steps) + 1),
            steps,
            "o-" if len(steps) == 1 else "-",
            lw=0.6,
            color=c,
            alpha=0.8,
            label=name(b),
        )
    ax_epochs.plot(
        np.asarray(tuned["curve_mean"], dtype=float),
        "k--",
        label=f"batch GD at lr {tuned['learning_rate']:g} (best of grid)",
    )
    ax_epochs.set(
        yscale="log",
        xlabel="epoch",
        ylabel="training loss (cross-entropy)",
        title=f"per epoch ({SPREAD})",
    )
    ax_updates.set(
        xscale="log",
        yscale="log",
        xlabel="updates (parameter steps)",
        ylabel="training loss",
        title=f"per update (epoch ends, {SPREAD})",
    )
    ax_time.axhline(THRESHOLD, color="gray", ls=":", lw=1, label=f"threshold {THRESHOLD}")
    ax_time.set(
        yscale="log",
        xlabel="wall-clock time (ms), training only, compiled",
        ylabel="training loss",
        title="per second (one seed each; separate runs, one after another)",
    )
    ax_steps.set(
        xscale="log",
        yscale="log",
        xlabel="update within the first epoch",
        ylabel="mini-batch loss seen by that update",
        title="what each update sees, first epoch (timed run)\n"
        "SGD: one example per point, jagged; batch GD: one point",
    )
    per_epoch = [numbers["ms_per_epoch"][str(b)] for b in sizes]
    ax_cost.bar(range(len(sizes)), per_epoch, color=[colors[b] for b in sizes])
    for i, b in enumerate(sizes):
        count = m // b
        label = f"{count} update{'s' if count > 1 else ''}"
        ax_cost.text(i, per_epoch[i], label, ha="center", va="bottom", fontsize=8)
    ax_cost.set_xticks(range(len(sizes)), [name(b) for b in sizes], fontsize=8)
    ax_cost.set(
        ylabel="ms per epoch (median of the timed epochs)",
        title=f"cost of one epoch ({numbers['backend']}, compiled)",
    )
    final = np.asarray(tuned["final_loss_per_lr"], dtype=float)
    ax_lr.plot(
        tuned["grid"],
        np.where(np.isfinite(final), final, np.nan),
        "o-",
        color=colors[m],
        label=f"batch GD ({m}) at each lr",
    )
    for lr, f in zip(tuned["grid"], final, strict=True):
        if not np.isfinite(f):
            ax_lr.plot(lr, np.nanmax(final[np.isfinite(final)]), "rx", ms=10)
    for b in sizes[:-1]:
        ax_lr.axhline(
            numbers["final_loss_mean"][str(b)],
            color=colors[b],
            ls=":",
            label=f"{name(b)} at lr {LEARNING_RATE}",
        )
    ax_lr.set(
        xscale="log",
        yscale="log",
        xlabel="batch GD learning rate",
        ylabel=f"training loss after {numbers['epochs']} epochs (seed mean)",
        title="a fairer batch GD: its learning rate tuned\n(red x: diverged)",
    )
    ax_lr.legend(fontsize=8)
    for ax in (ax_epochs, ax_updates, ax_time, ax_steps):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    ax_lr.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- run


def _jaggedness(step_losses):
    """Median relative change of the loss from one update to the next."""
    steps = np.asarray(step_losses)
    if len(steps) < 2:
        return 0.0
    return float(np.median(np.abs(np.diff(steps)) / steps[:-1]))


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=4, full=10)
    epochs = pick(mode, smoke=3, quick=20, full=60)
    x, t, _, _ = standardized_digits()
    m = x.shape[0]
    sizes = pick(mode, smoke=(1, m), quick=(1, 8, 32, 128, m), full=(1, 8, 32, 128, m))
    lr_grid = pick(mode, smoke=BATCH_GD_GRID[::3], quick=BATCH_GD_GRID, full=BATCH_GD_GRID)

    curves, timed = {}, {}
    for b in tracked(sizes, label=lambda b: f"batch {b}"):
        curves[str(b)] = _seed_runs(b, epochs, seeds, x, t, (LEARNING_RATE,))[0]
        seconds, curve, steps = _timed_run(b, epochs, x, t)
        timed[str(b)] = {"seconds": seconds, "curve": curve, "first_epoch_step_losses": steps}
    grid = _seed_runs(m, epochs, seeds, x, t, lr_grid)  # (rates, seeds, epochs + 1)
    final = grid[:, :, -1]
    final = np.where(np.all(np.isfinite(final), axis=1), final.mean(axis=1), np.inf)
    best = int(np.argmin(final))  # a rate that blew up on any seed counts as diverged
    tuned = {
        "learning_rate": lr_grid[best],
        "grid": lr_grid,
        "final_loss_per_lr": final,
        "curve_mean": grid[best].mean(axis=0),
        "final_loss": float(final[best]),
    }

    final_loss = {b: float(curves[str(b)][:, -1].mean()) for b in sizes}
    final_std = {b: float(curves[str(b)][:, -1].std()) for b in sizes}
    ms_per_epoch = {b: 1e3 * float(np.median(timed[str(b)]["seconds"])) for b in sizes}
    jagged = {b: _jaggedness(timed[str(b)]["first_epoch_step_losses"]) for b in sizes}
    # Per update: each size against the next smaller one at the number of
    # updates the larger made in all its epochs (the smaller one's seed-mean
    # epoch-end losses interpolated log-linearly).
    per_update = []
    for small, large in zip(sizes[:-1], sizes[1:], strict=True):
        updates = epochs * (m // large)
        small_updates = np.arange(epochs + 1) * (m // small)
        per_update.append(
            {
                "larger": large,
                "smaller": small,
                "updates": updates,
                "loss_larger": final_loss[large],
                "loss_smaller": _log_interp(updates, small_updates, curves[str(small)].mean(0)),
            }
        )
    time_to = {
        b: _time_to(THRESHOLD, timed[str(b)]["seconds"], timed[str(b)]["curve"]) for b in sizes
    }

    numbers = {
        "epochs": epochs,
        "backend": jax.default_backend(),
        "curves": curves,
        "timed": timed,
        "batch_gd_tuned": tuned,
        "final_loss_mean": {str(b): v for b, v in final_loss.items()},
        "final_loss_std": {str(b): v for b, v in final_std.items()},
        "per_update": per_update,
        "time_to_threshold_s": {str(b): v for b, v in time_to.items()},
        "ms_per_epoch": {str(b): v for b, v in ms_per_epoch.items()},
        "step_to_step_relative_change_first_epoch": {str(b): v for b, v in jagged.items()},
    }
    settings = {
        "seeds": seeds,
        "epochs": epochs,
        "batch_sizes": sizes,
        "num_train": m,
        "learning_rate": f"{LEARNING_RATE} for every batch size (plain SGD)",
        "batch_gd_lr_grid": lr_grid,
        "best_lr_rule": "lowest seed-mean training loss after the last epoch, no seed diverging",
        "model": f"64-{HIDDEN}-10 tanh, softmax cross-entropy",
        "data": "digits, 80/20 split (key 0), standardised on train",
        "timing": "one seed per batch size, separate runs one after another, compiled first, "
        "block_until_ready per epoch, evaluation not timed",
        "threshold": THRESHOLD,
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """At the same learning rate: the loss after the last epoch grows with
    the batch size; SGD's step-to-step loss is jagged (> 10 % and five times
    the largest mini-batch's); some smaller batch reaches the threshold loss
    sooner than batch GD in wall-clock time."""
    numbers, settings = data["numbers"], data["settings"]
    sizes, m = settings["batch_sizes"], settings["num_train"]
    seeds, epochs = settings["seeds"], settings["epochs"]
    tuned, per_update = numbers["batch_gd_tuned"], numbers["per_update"]
    final_loss = {b: numbers["final_loss_mean"][str(b)] for b in sizes}
    time_to = {b: float(numbers["time_to_threshold_s"][str(b)]) for b in sizes}
    jagged = {b: numbers["step_to_step_relative_change_first_epoch"][str(b)] for b in sizes}
    # The claim's three testable parts, at the same learning rate:
    # per epoch, the loss after the last epoch grows with the batch size;
    per_epoch_ok = all(
        final_loss[a] < final_loss[b] for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    )
    # SGD's step-to-step loss is jagged, the largest mini-batch's is not (batch
    # GD has a single step per epoch, so it cannot be compared this way);
    smooth = max((b for b in sizes if 1 < b < m), default=m)
    jagged_ok = jagged[1] > 0.1 and jagged[1] > 5 * jagged[smooth]
    # in time, some smaller batch reaches the threshold before batch GD does.
    fastest = min(sizes, key=lambda b: time_to[b])
    in_time_ok = bool(np.isfinite(time_to[fastest]) and time_to[fastest] < time_to[m])
    supported = bool(per_epoch_ok and jagged_ok and in_time_ok)

    def ms(v):
        return f"{v * 1e3:.0f}" if np.isfinite(v) else "never"

    sizes_str = "/".join("m" if b == m else str(b) for b in sizes)
    verdict = (
        f"batch {sizes_str} at lr {LEARNING_RATE}, {epochs} epochs: train loss "
        + "/".join(f"{final_loss[b]:.3f}" for b in sizes)
        + f" (batch GD at its best lr {tuned['learning_rate']:g}: {tuned['final_loss']:.3f}); "
        + "ms to loss "
        + f"{THRESHOLD}: "
        + "/".join(ms(time_to[b]) for b in sizes)
        + "; per update at equal counts "
        + ", ".join(
            f"{r['larger']}:{r['loss_larger']:.3f} vs {r['smaller']}:{r['loss_smaller']:.3f}"
            for r in per_update
        )
        + f"; step-to-step loss change SGD {jagged[1]:.0%} vs batch {smooth} "
        + f"{jagged[smooth]:.0%} ({seeds} seeds)"
    )
    summary = {
        "loss_sgd": final_loss[1],
        "loss_batch_gd": final_loss[m],
        "loss_batch_gd_best_lr": tuned["final_loss"],
        "fastest_to_threshold": "batch GD" if fastest == m else f"batch {fastest}",
        "tests": {"per_epoch": per_epoch_ok, "jagged": bool(jagged_ok), "in_time": in_time_ok},
    }
    return Verdict(verdict, supported, summary)
