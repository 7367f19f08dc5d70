"""Optimizers: SGD, momentum, Nesterov, AdaGrad, RMSprop and Adam side by side.

Claim (seed 001, "Better Gradient Descent Method", pp. 15-23; seed 002,
"optimizers"): plain gradient descent stops in a local minimum ("like a small
car stuck in chewing gum") and zig-zags where the surface is steep in one
direction and flat in another; momentum adds a fraction of the previous update
(an exponential average of past gradients), which damps the zig-zag, speeds
convergence and can roll through a shallow local minimum; Nesterov takes the
gradient after the momentum jump; AdaGrad gives each parameter its own step,
`lr / sqrt(G)`, which shrinks towards zero as the squared gradients
accumulate; RMSprop replaces the sum by an exponential moving average so the
step levels off; Adam combines momentum with RMSprop's scaling.

Setup:

* three 2-D surfaces with hand-written gradients (a surface, not a network):
  an ill-conditioned quadratic rotated by 30 degrees (curvatures 1 and 100, so
  a per-coordinate step cannot undo the conditioning), Rosenbrock's valley, and
  a bowl centred at (3, 0) with a Gaussian dip at (-1, 0) that makes a shallow
  local minimum (f = 0.52 at x = -0.79, barrier 0.77 at x = -0.04) on the way
  from the start (-4.5, 0.8) to the global minimum (f = 0 at x = 3). On the
  first two, each optimizer runs at the best learning rate of a log grid (the
  lowest final f); on the third every optimizer runs at the same rate (0.1),
  and the whole grid shows where each one ends;
* digits (standardised, 80 / 20 split), a 64-64-10 tanh net, mini-batches of
  32: each optimizer at the best of five learning rates around a usual value
  (1/10 to 10 times it, by final training loss), several seeds at once (`jax.vmap`), training
  loss after every epoch (mean ± standard error across seeds) and test accuracy;
* AdaGrad against RMSprop under a noisy gradient (`g ~ N(1, 1)` per entry
  per step, 256 entries, `lr = 0.01`): the effective per-parameter step
  `lr / (sqrt(s) + eps)` read from the optimizers' states
  (`AdagradState.sum_of_squares`, `RmspropState.mean_square`).

Training: the digits runs use `purenet.train.make_train`, vmapped over
seeds and learning rates (traced). The surfaces and the noisy-gradient trace
are not networks (no model, no loss, hand-written 2-D gradients), so there
each optimizer's `step` is scanned directly, one `jax.vmap` over the
learning-rate grid.
"""

from __future__ import annotations

import math

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
    sweep,
)
from purenet import data, datasets, losses, metrics, optim, train
from purenet import layers as L

NAME = "optimizers"
QUICK_SECONDS = 20  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Momentum damps zig-zags and rolls through a shallow local minimum where plain SGD stops; "
    "AdaGrad's per-parameter step shrinks towards 0 while RMSprop's levels off."
)

F32 = jnp.float32
MASS = 0.9
OPTIMIZERS = {
    "SGD": optim.sgd,
    "momentum": lambda lr: optim.momentum(lr, MASS),
    "Nesterov": lambda lr: optim.nesterov(lr, MASS),
    "AdaGrad": optim.adagrad,
    "RMSprop": optim.rmsprop,
    "Adam": optim.adam,
}
COLORS = dict(zip(OPTIMIZERS, ["C0", "C1", "C2", "C3", "C4", "C5"], strict=True))
LR_GRID = tuple(float(v) for v in np.geomspace(1e-4, 10.0, 26))
LOCAL_MIN_LR = 0.1
# Digits: a usual learning rate per optimizer; the best of DIGITS_FACTORS times it is used.
DIGITS_LR = {
    "SGD": 0.1,
    "momentum": 0.01,
    "Nesterov": 0.01,
    "AdaGrad": 0.03,
    "RMSprop": 0.001,
    "Adam": 0.001,
}
DIGITS_FACTORS = (0.1, 1 / 3, 1.0, 3.0, 10.0)


# ------------------------------------------------------------------- the surfaces
# Each surface is f(p) and its gradient written by hand, p = (x, y).

_ANGLE = math.pi / 6
_ROT = np.array([[math.cos(_ANGLE), -math.sin(_ANGLE)], [math.sin(_ANGLE), math.cos(_ANGLE)]])
_H = _ROT @ np.diag([1.0, 100.0]) @ _ROT.T  # curvatures 1 and 100, axes turned by 30 degrees


def quadratic(p):
    """`0.5 p^T H p`, H with eigenvalues 1 and 100 along axes turned by 30 degrees."""
    H = jnp.asarray(_H, p.dtype)
    return 0.5 * p @ H @ p


def quadratic_grad(p):
    return jnp.asarray(_H, p.dtype) @ p


def rosenbrock(p):
    """`(1 - x)^2 + 100 (y - x^2)^2`, minimum 0 at (1, 1)."""
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def rosenbrock_grad(p):
    x, y = p[0], p[1]
    return jnp.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])


# A bowl around (3, 0) with a Gaussian dip around (-1, 0).
_BOWL_C, _BOWL_D, _DIP_DEPTH, _DIP_WIDTH, _DIP_X = 0.1, 1.0, 1.0, 0.5, -1.0


def local_minimum(p):
    """`0.1 (x - 3)^2 + y^2 - exp(-((x + 1)^2 + y^2) / 0.5)`: a shallow local
    minimum near (-0.79, 0) before the global one at (3, 0)."""
    x, y = p[0], p[1]
    dip = jnp.exp(-((x - _DIP_X) ** 2 + y**2) / (2 * _DIP_WIDTH**2))
    return _BOWL_C * (x - 3) ** 2 + _BOWL_D * y**2 - _DIP_DEPTH * dip


def local_minimum_grad(p):
    x, y = p[0], p[1]
    dip = jnp.exp(-((x - _DIP_X) ** 2 + y**2) / (2 * _DIP_WIDTH**2))
    pull = _DIP_DEPTH * dip / _DIP_WIDTH**2
    return jnp.stack([2 * _BOWL_C * (x - 3) + pull * (x - _DIP_X), 2 * _BOWL_D * y + pull * y])


SURFACES = {
    # name: (f, grad, start, steps, plot box (x0, x1, y0, y1), minimum)
    "quadratic": (quadratic, quadratic_grad, (-4.0, 3.0), 150, (-5, 5, -4, 4), (0.0, 0.0)),
    "rosenbrock": (rosenbrock, rosenbrock_grad, (-1.5, 1.5), 1500, (-2, 2, -0.6, 3), (1.0, 1.0)),
    "local_minimum": (
        local_minimum,
        local_minimum_grad,
        (-4.5, 0.8),
        300,
        (-5, 4.5, -1.8, 1.8),
        (3.0, 0.0),
    ),
}


def _surface_runs(name: str, make, learning_rates):
    """Every learning rate at once (vmap): the trajectory (steps + 1, 2) and
    the final f per rate."""
    f, grad, start, steps, _, _ = SURFACES[name]
    p0 = jnp.asarray(start, F32)

    def one(lr):
        optimizer = make(lr)  # lr is traced: one program for the whole grid

        def body(carry, _):
            p, state = optimizer.step(carry[0], grad(carry[0]), carry[1])
            return (p, state), p

        (p, _), path = jax.lax.scan(body, (p0, optimizer.init(p0)), None, length=steps)
        return jnp.concatenate([p0[None], path]), f(p)

    paths, final = jit(jax.vmap(one))(jnp.asarray(learning_rates, F32))
    final = np.asarray(final, dtype=float)
    return np.asarray(paths), np.where(np.isfinite(final), final, np.inf)


def _surfaces(names):
    results = {}
    for name in ("quadratic", "rosenbrock"):
        per_opt = {}
        for opt_name in names:
            paths, final = _surface_runs(name, OPTIMIZERS[opt_name], LR_GRID)
            k = int(np.argmin(final))
            per_opt[opt_name] = {
                "best_lr": LR_GRID[k],
                "final_f": float(final[k]),
                "final_f_per_lr": final,
                "path": paths[k],
            }
        results[name] = per_opt
    per_opt = {}
    index = min(range(len(LR_GRID)), key=lambda i: abs(math.log(LR_GRID[i] / LOCAL_MIN_LR)))
    grid = LR_GRID[:index] + (LOCAL_MIN_LR,) + LR_GRID[index + 1 :]
    for opt_name in names:
        paths, final = _surface_runs("local_minimum", OPTIMIZERS[opt_name], grid)
        per_opt[opt_name] = {
            "lr": LOCAL_MIN_LR,
            "final_f": float(final[index]),
            "final_xy": paths[index, -1],
            "path": paths[index],
            "grid": grid,
            "final_x_per_lr": paths[:, -1, 0],
            "final_f_per_lr": final,
        }
    results["local_minimum"] = per_opt
    return results


# ------------------------------------------------------------------------- digits


def _digits_runs(names, epochs: int, seeds: int, factors=DIGITS_FACTORS, batch_size: int = 32):
    x, t = datasets.digits()
    (x_tr, t_tr), (x_te, t_te) = data.split(jax.random.key(0), x, t, (0.8, 0.2))
    stats = data.standardize_fit(x_tr)
    x_tr, x_te = data.standardize_apply(stats, x_tr), data.standardize_apply(stats, x_te)
    model = L.serial(L.dense(64), L.tanh(), L.dense(10))
    loss = losses.softmax_cross_entropy
    evaluate = train.make_evaluate(model, loss, metrics.multiclass_accuracy)
    keys = jax.random.split(jax.random.key(3), seeds)  # seed s: the same init for every optimizer
    results = {}
    init_keys, train_keys = zip(*(jax.random.split(key) for key in keys), strict=True)
    start = init_many(model, init_keys, (x_tr.shape[1],))

    def probe(p, s, point):  # the training loss; the test accuracy (the last one is reported)
        return evaluate(p, x_tr, t_tr, s)[0], evaluate(p, x_te, t_te, s)[1]

    for name in names:
        lrs = [DIGITS_LR[name] * f for f in factors]
        make = OPTIMIZERS[name]
        _, _, history = sweep(
            model,
            loss,
            lambda point, make=make: make(point["learning_rate"]),
            batch_size,
            epochs,
            (x_tr, t_tr),
            start,
            jnp.stack(train_keys),
            grid={"learning_rate": jnp.asarray(lrs, F32)},  # traced: one program for every rate
            evaluate=probe,
            evaluate_start=True,
        )
        curves, test_acc = history["evaluation"]
        test_acc = test_acc[:, :, -1]
        curves, test_acc = np.asarray(curves), np.asarray(test_acc)
        final = np.where(
            np.all(np.isfinite(curves[:, :, -1]), axis=1), curves[:, :, -1].mean(1), np.inf
        )
        best = int(np.argmin(final))
        results[name] = {
            "lr": lrs[best],
            "lr_candidates": lrs,
            "final_loss_per_lr": final,
            "curves": curves[best],  # (seeds, epochs + 1)
            "test_accuracy": test_acc[best],
        }
    return results


# ---------------------------------------------------------------- AdaGrad vs RMSprop


def _step_sizes(steps: int, entries: int = 256, lr: float = 0.01):
    """Effective per-entry step `lr / (sqrt(s) + eps)` after each step, from
    the optimizer state, under noisy gradients `g ~ N(1, 1)`."""
    grads = 1.0 + jax.random.normal(jax.random.key(4), (steps, entries), F32)
    out = {}
    for name, make, eps, read in (
        ("AdaGrad", optim.adagrad, 1e-10, lambda s: s.sum_of_squares),
        ("RMSprop", optim.rmsprop, 1e-8, lambda s: s.mean_square),
    ):
        optimizer = make(lr, eps=eps)

        def trace(gs, optimizer=optimizer, eps=eps, read=read):
            def body(carry, g):
                params, state = optimizer.step(carry[0], g, carry[1])
                return (params, state), lr / (jnp.sqrt(read(state)) + eps)

            p0 = jnp.zeros(entries, F32)
            return jax.lax.scan(body, (p0, optimizer.init(p0)), gs)[1]

        sizes = jit(trace)(grads)
        sizes = np.asarray(sizes)
        out[name] = {
            "mean": sizes.mean(axis=1),
            "min": sizes.min(axis=1),
            "max": sizes.max(axis=1),
        }
    return out, lr


# -------------------------------------------------------------------------- figure


def _contour(ax, name, results, title):
    f, _, start, steps, box, minimum = SURFACES[name]
    xs = np.linspace(box[0], box[1], 300)
    ys = np.linspace(box[2], box[3], 300)
    X, Y = np.meshgrid(xs, ys)
    pts = jnp.asarray(np.stack([X.ravel(), Y.ravel()]), F32)
    Z = np.asarray(jax.vmap(f, in_axes=1)(pts)).reshape(X.shape)
    if name == "local_minimum":
        ax.contour(X, Y, Z, levels=30, cmap="Greys", linewidths=0.6)
    else:  # log levels, so the narrow valley floor shows too
        ax.contour(X, Y, np.log10(Z - Z.min() + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
    for opt_name, r in results.items():
        path = np.asarray(r["path"], dtype=float)  # JSON: a diverged step is "nan"/"inf"
        ok = (
            np.all(np.isfinite(path), axis=1)
            & (np.abs(path[:, 0]) < 50)
            & (np.abs(path[:, 1]) < 50)
        )
        path = path[ok]
        lr = r.get("best_lr", r.get("lr"))
        ax.plot(
            path[:, 0],
            path[:, 1],
            "-",
            color=COLORS[opt_name],
            lw=1.2,
            alpha=0.9,
            label=f"{opt_name} lr {lr:.3g}: f={r['final_f']:.2g}",
        )
        ax.plot(path[-1, 0], path[-1, 1], "o", color=COLORS[opt_name], ms=4)
    ax.plot(*start, "ks", ms=6)
    ax.plot(*minimum, "k*", ms=12)
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend(fontsize=7, loc="lower right" if name != "rosenbrock" else "upper right")


def draw(data: dict):
    numbers = data["numbers"]
    plt = pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(19, 11.5))
    s = numbers["surfaces"]
    q_steps = SURFACES["quadratic"][3]
    r_steps = SURFACES["rosenbrock"][3]
    l_steps = SURFACES["local_minimum"][3]
    _contour(
        axes[0, 0],
        "quadratic",
        s["quadratic"],
        f"ill-conditioned quadratic (curvatures 1, 100; log contours)\n{q_steps} steps, "
        "each optimizer at its best lr of the grid",
    )
    _contour(
        axes[0, 1],
        "rosenbrock",
        s["rosenbrock"],
        f"Rosenbrock (log contours)\n{r_steps} steps, each optimizer at its best lr of the grid",
    )
    _contour(
        axes[0, 2],
        "local_minimum",
        s["local_minimum"],
        f"bowl + Gaussian dip: local min at x=-0.79, global at x=3\n{l_steps} steps, "
        f"lr {LOCAL_MIN_LR} for all",
    )

    ax = axes[1, 0]
    for name, r in s["local_minimum"].items():
        ax.plot(
            r["grid"],
            np.clip(np.asarray(r["final_x_per_lr"], dtype=float), -6, 6),
            "o-",
            ms=3,
            color=COLORS[name],
            label=name,
        )
    ax.axhline(-0.795, color="gray", ls=":", lw=1)
    ax.axhline(3.0, color="gray", ls="--", lw=1)
    ax.text(1.2e-4, -0.7, "local minimum", fontsize=8, color="gray")
    ax.text(1.2e-4, 3.1, "global minimum", fontsize=8, color="gray")
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel=f"x after {l_steps} steps (clipped to ±6)",
        title="bowl + dip: where each optimizer ends, for every learning rate\n"
        "(start x = -4.5; below the dotted line: not yet arrived)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1, 1]
    for name, r in numbers["digits"].items():
        curves = np.asarray(r["curves"], dtype=float)
        acc = np.mean(r["test_accuracy"])
        seed_band(
            ax,
            np.arange(curves.shape[1]),
            curves,
            color=COLORS[name],
            label=f"{name} lr {r['lr']:.3g} (test acc {acc:.3f})",
        )
    ax.set(
        yscale="log",
        xlabel="epoch",
        ylabel="training loss (cross-entropy)",
        title=f"digits, 64-64-10 tanh, batch 32: {SPREAD}\n"
        "(each at the best of its usual lr × {1/10, 1/3, 1, 3, 10})",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")

    ax = axes[1, 2]
    steps = numbers["step_sizes"]
    for name, color in (("AdaGrad", COLORS["AdaGrad"]), ("RMSprop", COLORS["RMSprop"])):
        r = steps[name]
        t = np.arange(1, len(r["mean"]) + 1)
        ax.plot(t, r["mean"], color=color, label=f"{name} (mean over entries)")
        ax.fill_between(t, r["min"], r["max"], color=color, alpha=0.2)
    t = np.arange(1, len(steps["AdaGrad"]["mean"]) + 1)
    ax.plot(t, steps["lr"] / np.sqrt(2 * t), "k:", lw=1, label="lr / sqrt(2t) (AdaGrad, E g² = 2)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="step",
        ylabel="effective step lr / (sqrt(s) + eps)",
        title=f"per-parameter step under noisy gradients g ~ N(1, 1), lr {steps['lr']}\n"
        "(band: min to max over 256 entries)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- run


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=4, full=10)
    epochs = pick(mode, smoke=2, quick=12, full=30)
    step_count = pick(mode, smoke=200, quick=2000, full=5000)
    # The claim's tests need SGD, momentum, AdaGrad and RMSprop; smoke runs only those.
    names = pick(
        mode,
        smoke=("SGD", "momentum", "AdaGrad", "RMSprop"),
        quick=tuple(OPTIMIZERS),
        full=tuple(OPTIMIZERS),
    )
    digits_names = pick(mode, smoke=names[:2], quick=names, full=names)
    factors = pick(mode, smoke=(1.0,), quick=DIGITS_FACTORS, full=DIGITS_FACTORS)
    progress(0, 3, "surfaces")
    surfaces = _surfaces(names)
    progress(1, 3, "digits")
    digits = _digits_runs(digits_names, epochs, seeds, factors)
    progress(2, 3, "step sizes")
    step_sizes, lr = _step_sizes(step_count)
    step_sizes["lr"] = lr

    local = surfaces["local_minimum"]
    global_x = SURFACES["local_minimum"][5][0]
    # Over the whole grid: learning rates at which each ends at the global minimum.
    escapes = {
        name: int(np.sum(np.abs(np.asarray(r["final_x_per_lr"]) - global_x) < 0.1))
        for name, r in local.items()
    }
    arrived = {  # rates that at least got past the start of the dip
        name: int(np.sum(np.asarray(r["final_x_per_lr"]) > -1.5)) for name, r in local.items()
    }
    ada, rms = step_sizes["AdaGrad"]["mean"], step_sizes["RMSprop"]["mean"]
    half = len(rms) // 2
    numbers = {
        "surfaces": surfaces,
        "digits": digits,
        "step_sizes": step_sizes,
        "local_minimum_escapes_per_optimizer": escapes,
        "local_minimum_arrived_per_optimizer": arrived,
        "adagrad_shrink_step10_to_last": float(ada[-1] / ada[9]),
        "adagrad_step_never_grows": bool(np.all(np.diff(step_sizes["AdaGrad"]["max"]) <= 0)),
        "rmsprop_drift_second_half": float(np.max(np.abs(rms[half:] / rms[half] - 1))),
        "digits_final_loss": {
            n: float(np.mean(np.asarray(r["curves"])[:, -1])) for n, r in digits.items()
        },
        "digits_test_accuracy": {n: float(np.mean(r["test_accuracy"])) for n, r in digits.items()},
    }
    settings = {
        "seeds": seeds,
        "mass": MASS,
        "surface_lr_grid": LR_GRID,
        "surfaces": {
            n: {"start": v[2], "steps": v[3], "minimum": v[5]} for n, v in SURFACES.items()
        },
        "local_minimum_lr": LOCAL_MIN_LR,
        "digits": {
            "model": "64-64-10 tanh, softmax cross-entropy, batch 32",
            "epochs": epochs,
            "usual_lr": DIGITS_LR,
            "factors": factors,
            "chosen_lr": {n: r["lr"] for n, r in digits.items()},
        },
        "step_sizes": {"steps": step_count, "entries": 256, "lr": lr, "gradient": "N(1, 1)"},
        "optimizer_defaults": "purenet.optim defaults (torch's) apart from lr; momentum mass 0.9",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Momentum ends the quadratic 100 times lower than SGD; at lr 0.1 SGD
    stays in the dip's local minimum and momentum reaches the global one;
    AdaGrad's step never grows and shrinks below a quarter from step 10 to
    the end, while RMSprop's drifts less than 25 % over the second half."""
    numbers, settings = data["numbers"], data["settings"]
    surfaces = numbers["surfaces"]
    epochs = settings["digits"]["epochs"]
    quad = surfaces["quadratic"]
    quad_ok = quad["momentum"]["final_f"] < 0.01 * quad["SGD"]["final_f"]
    local = surfaces["local_minimum"]
    global_x = SURFACES["local_minimum"][5][0]

    def ends(name):
        x = float(local[name]["final_xy"][0])
        return (
            "global"
            if abs(x - global_x) < 0.1
            else ("local" if abs(x + 0.795) < 0.1 else f"x={x:.2f}")
        )

    local_ok = ends("SGD") == "local" and ends("momentum") == "global"
    escapes = numbers["local_minimum_escapes_per_optimizer"]
    ada_shrink = numbers["adagrad_shrink_step10_to_last"]
    rms_drift = numbers["rmsprop_drift_second_half"]
    steps_ok = numbers["adagrad_step_never_grows"] and ada_shrink < 0.25 and rms_drift < 0.25
    supported = bool(quad_ok and local_ok and steps_ok)
    text = (
        f"quadratic (kappa 100) f after {SURFACES['quadratic'][3]} steps at best lr: SGD "
        f"{quad['SGD']['final_f']:.1e} vs momentum {quad['momentum']['final_f']:.1e}; "
        f"dip surface at lr {LOCAL_MIN_LR}: SGD ends {ends('SGD')} (f "
        f"{local['SGD']['final_f']:.2f}), momentum {ends('momentum')} (f "
        f"{local['momentum']['final_f']:.2f}), reaching the global min at "
        f"{escapes['SGD']} vs {escapes['momentum']} of {len(LR_GRID)} rates; AdaGrad step "
        f"x{ada_shrink:.2f} from step 10 to {len(numbers['step_sizes']['AdaGrad']['mean'])}, "
        f"RMSprop drifts {rms_drift:.0%} over the 2nd half; digits loss after {epochs} epochs "
        + ", ".join(f"{n} {v:.3f}" for n, v in numbers["digits_final_loss"].items())
    )
    summary = {
        "quad_sgd_f": quad["SGD"]["final_f"],
        "quad_momentum_f": quad["momentum"]["final_f"],
        "dip_sgd_end": ends("SGD"),
        "dip_momentum_end": ends("momentum"),
        "adagrad_shrink": ada_shrink,
        "rmsprop_drift": rms_drift,
        "tests": {
            "quadratic_momentum_100x_lower": bool(quad_ok),
            "local_min_sgd_stays_momentum_escapes": bool(local_ok),
            "adagrad_shrinks_rmsprop_levels": bool(steps_ok),
        },
    }
    return Verdict(text, supported, summary)
