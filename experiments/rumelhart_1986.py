"""Rumelhart, Hinton & Williams (1986): the mirror-symmetry network, and XOR.

Claim (seed 004, a summary of "Learning representations by back-propagating
errors", Nature 323, 533-536): back-propagation with the momentum rule
`dw(t) = -eps dE/dw + alpha dw(t-1)` trains a network with two hidden units
to detect whether a 6-bit input is mirror-symmetric; the paper's run took
1,425 sweeps through the 64 patterns (eps = 0.1, alpha = 0.9, initial weights
uniform in +-0.3), and the solution it found puts, on each hidden unit,
weights of equal magnitude and opposite sign on mirrored inputs, in the ratio
1:2:4 on each side of the middle (so that no non-symmetric pattern can
balance). Gradient descent can also get stuck in local minima; XOR with two
hidden units is the classic small case.

Setup, as in the paper: `6 -> 2 sigmoid -> 1 sigmoid`, all 64 patterns,
`E = 1/2 sum_patterns (y - d)^2`, the gradient accumulated over each sweep
(full batch) and one update per sweep, weights and biases uniform in
`[-0.3, 0.3]` (`purenet.params.uniform(0.3)`), `purenet.optim.momentum`
(which is exactly the paper's eq. 9). **Scaling:** `purenet.losses.mse`
averages over the batch, so its gradient is the paper's summed-E gradient
divided by m = 64; the learning rate is therefore `eps * m = 6.4`, which
makes every update identical to the paper's (the momentum term is a
multiple of past updates, so the scaling carries through). XOR: `2 -> 2 ->
1` sigmoid network, same rule, `eps * 4`. Seeds run at once with
`jax.vmap` over `purenet.train.make_train` with batches of all the
patterns (one sweep = one epoch = one update; the rows are permuted, which
changes only the order of the batch sum), recording the worst output error
after every sweep.

Measured: the sweeps until every output is within 0.5 of its target (each
pattern on the right side; the number with the stricter "within 0.1" is
reported too), over many seeds, next to the paper's 1,425 (median,
quartiles, and how many seeds did not learn within the sweep budget); the
weights of the first seed that learned (after the full budget of sweeps) and,
over all seeds that learned, how close each hidden unit is to the paper's
pattern: antisymmetry `max_i |w[i] + w[5-i]| / max |w|` and the ratios of
the three mirrored pairs' mean magnitudes, sorted and divided by the
smallest (the paper: 1, 2, 4). For XOR: how many seeds did not learn within
the budget, with their final E and gradient norm (a local minimum or a
plateau).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from experiments._common import (
    Mode,
    Verdict,
    init_many,
    num_seeds,
    pick,
    progress,
    pyplot,
    sweep,
)
from purenet import datasets, layers, losses, optim, params

NAME = "rumelhart_1986"
QUICK_SECONDS = 9  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Backprop with momentum (eps 0.1, alpha 0.9) teaches a 6-2-1 network mirror symmetry "
    "(paper: 1,425 sweeps) with antisymmetric 1:2:4 weights; 2-2-1 XOR sometimes gets stuck"
)

EPS = 0.1
ALPHA = 0.9
INIT_RANGE = 0.3
PAPER_SWEEPS = 1425
CRITERION = 0.5  # every output within 0.5 of its target
STRICT = 0.1


def network(n_inputs: int):
    init = params.uniform(INIT_RANGE)
    return layers.serial(
        layers.dense(2, W_init=init, b_init=init),
        layers.sigmoid(),
        layers.dense(1, W_init=init, b_init=init),
        layers.sigmoid(),
    )


def train_seeds(x, t, keys, sweeps: int):
    """Train one network per key for `sweeps` full-batch sweeps
    (`make_train`, one step per epoch); return the final params, the
    largest `|y - d|` after every sweep, and the summed E and its gradient
    norm at the end."""
    m = x.shape[0]
    model = network(x.shape[1])
    opt = optim.momentum(EPS * m, ALPHA)  # mse is E / m: scale eps by m
    grad = purenet.backprop(model, losses.mse)

    def worst(p, state):
        return jnp.max(jnp.abs(model.forward(p, x, state=state)[0] - t))

    def finish(p, state, point):
        J, g = grad(p, x, t, state=state)
        g_norm = jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(g)))
        return {"E": J * m, "grad_norm": g_norm * m}

    start = init_many(model, keys, (x.shape[1],))
    # Full batch: nothing is drawn at random, any key gives the same run.
    same_key = jnp.stack([jax.random.key(0)] * len(keys))
    params, _, history = sweep(
        model,
        losses.mse,
        opt,
        m,
        sweeps,
        (x, t),
        start,
        same_key,
        evaluate=lambda p, s, point: worst(p, s),
        finish=finish,
        compile=jax.jit,
    )
    return jax.device_get({"params": params, "worst": history["evaluation"], **history["final"]})


def sweeps_to(worst, tolerance: float):
    """Sweeps (1-based) until every output is within `tolerance`; -1 if never."""
    ok = np.asarray(worst) < tolerance
    return np.where(ok.any(axis=1), ok.argmax(axis=1) + 1, -1)


def summary_of(sweeps) -> dict:
    learned = sweeps[sweeps > 0]
    out = {"learned": int(learned.size), "not_learned": int(np.sum(sweeps < 0))}
    if learned.size:
        q1, med, q3 = np.percentile(learned, [25, 50, 75])
        out.update(
            median=float(med),
            q1=float(q1),
            q3=float(q3),
            min=int(learned.min()),
            max=int(learned.max()),
        )
    return out


# Sorted pair ratios of antisymmetric solutions. Any ratios with no signed
# sub-sum equal to zero work (no non-symmetric pattern can balance); the
# paper's run found 1:2:4, and 2:3:4 (= 1:1.5:2) turns up as well.
FAMILIES = {"1:2:4": (1.0, 2.0, 4.0), "2:3:4": (1.0, 1.5, 2.0)}


def unit_pattern(w) -> dict:
    """How close one hidden unit's 6 input weights are to the paper's pattern."""
    w = np.asarray(w, np.float64)
    antisymmetry = float(np.max(np.abs(w + w[::-1])) / np.max(np.abs(w)))
    pairs = (np.abs(w[:3]) + np.abs(w[::-1][:3])) / 2  # outer, middle, inner pair
    ratios = np.sort(pairs) / np.min(pairs)
    family = "other"
    for name, target in FAMILIES.items():
        if np.all(np.abs(ratios - target) < 0.1 * np.asarray(target)):
            family = name
    return {
        "antisymmetry": antisymmetry,
        "pair_magnitudes_outer_middle_inner": pairs,
        "sorted_ratios": ratios,
        "family": family,
        "antisymmetric": bool(antisymmetry < 0.05),
    }


def seed_family(units) -> str:
    """The seed's pattern: antisymmetric units of one ratio family, or "other"."""
    if not all(u["antisymmetric"] for u in units):
        return "not antisymmetric"
    families = {u["family"] for u in units}
    return families.pop() if len(families) == 1 else "mixed"


# ------------------------------------------------------------------- figure


def hinton(ax, W, b, v, c):
    """Hinton diagram: white squares positive, black negative, area ~ |w|."""
    from matplotlib.patches import Rectangle

    ax.set_facecolor("0.55")
    rows = [list(W[:, h]) + [b[h], v[h]] for h in range(W.shape[1])]
    biggest = max(np.max(np.abs(rows)), abs(c))
    for r, row in enumerate(rows):
        for col, value in enumerate(row):
            size = np.sqrt(abs(value) / biggest) * 0.9
            color = "white" if value > 0 else "black"
            ax.add_patch(Rectangle((col - size / 2, r - size / 2), size, size, color=color))
            ax.text(
                col,
                r + 0.47,
                f"{value:.1f}",
                ha="center",
                va="bottom",
                fontsize=8,
                bbox={"fc": "w", "ec": "none", "alpha": 0.8, "pad": 1},
            )
    ax.set_xlim(-0.6, 7.6)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xticks(range(8), ["in 1", "in 2", "in 3", "in 4", "in 5", "in 6", "bias", "to out"])
    ax.set_yticks(range(len(rows)), [f"hidden {h + 1}" for h in range(len(rows))])
    ax.axvline(2.5, color="C1", lw=1, ls=":")
    ax.axvline(5.5, color="0.3", lw=1)


def draw(data: dict):
    numbers, sweeps = data["numbers"], data["settings"]["max_sweeps"]
    example = numbers["mirror"]["example"]
    plt = pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    mirror = np.asarray(numbers["mirror"]["sweeps"])
    s = numbers["mirror"]["summary"]
    ax = axes[0, 0]
    learned = mirror[mirror > 0]
    if learned.size:
        ax.hist(
            learned,
            bins=np.linspace(0, sweeps, 41),
            color="C0",
            alpha=0.8,
            label=f"learned: {s['learned']} seeds",
        )
        ax.axvline(
            s["median"],
            color="C0",
            lw=2,
            label=f"median {s['median']:.0f} (quartiles {s['q1']:.0f}-{s['q3']:.0f})",
        )
    ax.axvline(PAPER_SWEEPS, color="C3", lw=2, ls="--", label=f"paper: {PAPER_SWEEPS} sweeps")
    ax.set_xlabel(f"sweeps until every output is within {CRITERION} of its target")
    ax.set_ylabel("seeds")
    ax.set_title(
        f"Mirror symmetry, 6-2-1 ({s['not_learned']} of {mirror.size} seeds "
        f"not within {sweeps} sweeps)"
    )
    families = ", ".join(f"{v} {f}" for f, v in numbers["mirror"]["families"].items())
    ax.legend(fontsize=8, title=f"weight patterns: {families}", title_fontsize=8)

    bx = axes[0, 1]
    if example is not None:
        hinton(
            bx,
            np.asarray(example["W_input_to_hidden"], float),
            np.asarray(example["b_hidden"], float),
            np.asarray(example["W_hidden_to_output"], float),
            float(example["b_output"]),
        )
        ratios = ", ".join(
            ":".join(f"{r:.2f}" for r in u["sorted_ratios"]) for u in example["units"]
        )
        first = int(numbers["mirror"]["sweeps"][example["seed"]])
        bx.set_title(
            f"Weights of seed {example['seed']} (learned at sweep {first}) after "
            f"{sweeps} sweeps; output bias {float(example['b_output']):.1f}\n"
            f"(white +, black -; mirrored pair ratios {ratios}; paper 1:2:4)",
            fontsize=10,
        )
    else:
        bx.text(0.5, 0.5, "no seed learned", ha="center", transform=bx.transAxes)

    cx = axes[1, 0]
    xor = np.asarray(numbers["xor"]["sweeps"])
    xs = numbers["xor"]["summary"]
    if (xor > 0).any():
        cx.hist(
            xor[xor > 0],
            bins=np.linspace(0, sweeps, 41),
            color="C2",
            alpha=0.8,
            label=f"learned: {xs['learned']} seeds (median {xs.get('median', 0):.0f})",
        )
    cx.bar(
        sweeps * 1.04,
        xs["not_learned"],
        width=sweeps * 0.03,
        color="C3",
        label=f"not within {sweeps} sweeps: {xs['not_learned']} seeds",
    )
    cx.set_xlabel(f"sweeps until every output is within {CRITERION} of its target")
    cx.set_ylabel("seeds")
    cx.set_title("XOR, 2-2-1, same rule (eps 0.1 per pattern, alpha 0.9)")
    cx.legend(fontsize=8)

    dx = axes[1, 1]
    grid = np.arange(0, sweeps + 1)
    for task, color in (("mirror", "C0"), ("xor", "C2")):
        for tol, ls in ((CRITERION, "-"), (STRICT, ":")):
            key = "sweeps" if tol == CRITERION else "sweeps_strict"
            arr = np.asarray(numbers[task][key])
            done = np.sort(arr[arr > 0])
            frac = np.searchsorted(done, grid, side="right") / arr.size
            dx.plot(grid, frac, color=color, ls=ls, label=f"{task}, within {tol}")
    dx.axvline(PAPER_SWEEPS, color="C3", lw=1, ls="--", label="paper's 1,425")
    dx.set_xlabel("sweeps")
    dx.set_ylabel("fraction of seeds learned")
    dx.set_ylim(0, 1.02)
    dx.set_title("How many seeds have learned after n sweeps")
    dx.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------- run


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=64, full=256)
    sweeps = pick(mode, smoke=200, quick=5000, full=20000)
    keys = jax.random.split(jax.random.key(0), seeds)
    numbers = {}

    progress(0, 2, "mirror symmetry")
    x, t = datasets.mirror_symmetry()
    out = train_seeds(x, t, keys, sweeps)
    first = sweeps_to(out["worst"], CRITERION)
    W, b = out["params"][0]["W"], out["params"][0]["b"]
    V, c = out["params"][2]["W"], out["params"][2]["b"]
    learned_seeds = np.flatnonzero(first > 0)
    patterns = [[unit_pattern(W[s][:, h]) for h in range(2)] for s in learned_seeds]
    families = [seed_family(units) for units in patterns]
    family_counts = {f: families.count(f) for f in sorted(set(families))}
    paper_ratios = np.array(
        [
            u["sorted_ratios"]
            for units, f in zip(patterns, families, strict=True)
            if f == "1:2:4"
            for u in units
        ]
    )
    example = None
    if learned_seeds.size:
        s0 = int(learned_seeds[0])
        example = {
            "seed": s0,
            "weights": (W[s0], b[s0], V[s0].ravel(), float(c[s0][0])),
            "units": patterns[0],
        }
    censored = np.where(first > 0, first, np.inf)  # not learned: more than the budget
    overall_median = float(np.median(censored))
    numbers["mirror"] = {
        "sweeps": first,
        "sweeps_strict": sweeps_to(out["worst"], STRICT),
        "summary": summary_of(first),
        "summary_strict": summary_of(sweeps_to(out["worst"], STRICT)),
        "median_all_seeds": overall_median if np.isfinite(overall_median) else None,
        "fraction_learned_by_paper_sweeps": float(np.mean((first > 0) & (first <= PAPER_SWEEPS))),
        "final_E_not_learned": np.asarray(out["E"])[first < 0],
        "grad_norm_not_learned": np.asarray(out["grad_norm"])[first < 0],
        "families": family_counts,
        "antisymmetry_max": max((u["antisymmetry"] for un in patterns for u in un), default=None),
        "median_ratios_1_2_4_family": np.median(paper_ratios, 0) if paper_ratios.size else None,
        "example": None
        if example is None
        else {
            "seed": example["seed"],
            "W_input_to_hidden": example["weights"][0],
            "b_hidden": example["weights"][1],
            "W_hidden_to_output": example["weights"][2],
            "b_output": example["weights"][3],
            "units": example["units"],
        },
    }

    progress(1, 2, "XOR")
    x, t = datasets.xor()
    out = train_seeds(x, t, keys, sweeps)
    xor_first = sweeps_to(out["worst"], CRITERION)
    stuck = xor_first < 0
    numbers["xor"] = {
        "sweeps": xor_first,
        "sweeps_strict": sweeps_to(out["worst"], STRICT),
        "summary": summary_of(xor_first),
        "final_E_not_learned": np.asarray(out["E"])[stuck],
        "grad_norm_not_learned": np.asarray(out["grad_norm"])[stuck],
        "final_worst_error_not_learned": np.asarray(out["worst"])[stuck, -1],
    }

    settings = {
        "mirror_network": "6 -> 2 sigmoid -> 1 sigmoid",
        "xor_network": "2 -> 2 sigmoid -> 1 sigmoid",
        "loss": "purenet.losses.mse (E / m); learning rate eps * m reproduces the summed-E "
        "update exactly",
        "eps": EPS,
        "alpha": ALPHA,
        "learning_rate_mirror": EPS * 64,
        "learning_rate_xor": EPS * 4,
        "init": f"uniform(-{INIT_RANGE}, {INIT_RANGE}) for weights and biases",
        "batch": "full (one update per sweep: purenet.train.make_train, batches of all patterns)",
        "criterion": f"every output within {CRITERION} of its target (also reported: {STRICT})",
        "max_sweeps": sweeps,
        "seeds": seeds,
        "seed_keys": "jax.random.split(jax.random.key(0), seeds), same keys for both tasks",
        "weight_pattern": "after the full budget of sweeps; antisymmetric: max |w[i] + w[5-i]| "
        "< 0.05 max |w|; ratio family: sorted mirrored-pair magnitudes within 10% of 1:2:4 or "
        "2:3:4, both hidden units",
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """At least half the seeds learn mirror symmetry, the paper's 1,425 sweeps
    lie between the quartiles, 90 % of the solutions are antisymmetric, and
    1:2:4 is the commonest ratio family."""
    numbers, settings = data["numbers"], data["settings"]
    seeds, sweeps = settings["seeds"], settings["max_sweeps"]
    family_counts = numbers["mirror"]["families"]
    mirror, ms, xs = numbers["mirror"], numbers["mirror"]["summary"], numbers["xor"]["summary"]
    antisymmetric = sum(v for f, v in family_counts.items() if f != "not antisymmetric")
    paper_family = family_counts.get("1:2:4", 0)
    supported = (
        ms["learned"] >= seeds / 2
        and ms["q1"] <= PAPER_SWEEPS <= ms["q3"]  # the paper's run is a typical one
        and antisymmetric >= 0.9 * ms["learned"]
        and paper_family == max(family_counts.values())
    )

    ratios = mirror["median_ratios_1_2_4_family"]
    ratio_text = "n/a" if ratios is None else ":".join(f"{r:.2f}" for r in ratios)
    if ms["learned"]:
        median_text = (
            f"median {ms['median']:.0f} sweeps over the seeds that learned (quartiles "
            f"{ms['q1']:.0f}-{ms['q3']:.0f}), "
            + (
                f"{mirror['median_all_seeds']:.0f} over all seeds"
                if mirror["median_all_seeds"] is not None
                else f"> {sweeps} over all seeds"
            )
        )
    else:
        median_text = "no seed learned"
    others = ", ".join(f"{v} {f}" for f, v in family_counts.items() if f != "1:2:4")
    text = (
        f"mirror symmetry: {median_text}, vs the paper's {PAPER_SWEEPS}; "
        f"{ms['learned']}/{seeds} seeds learned within {sweeps}"
        + (
            f" (the rest end at median E = {np.median(mirror['final_E_not_learned']):.2f}, "
            f"gradient norm <= {np.max(mirror['grad_norm_not_learned']):.0e})"
            if ms["not_learned"]
            else ""
        )
        + "; "
        f"weights: {paper_family} antisymmetric 1:2:4 (median ratios {ratio_text})"
        + (f", {others}" if others else "")
        + f"; XOR 2-2-1: {xs['not_learned']}/{seeds} seeds not learned within {sweeps} sweeps"
        + (
            f" (E {np.min(numbers['xor']['final_E_not_learned']):.2f}-"
            f"{np.max(numbers['xor']['final_E_not_learned']):.2f}, gradient norm <= "
            f"{np.max(numbers['xor']['grad_norm_not_learned']):.0e})"
            if xs["not_learned"]
            else ""
        )
    )
    summary = {
        "median_sweeps_learned": ms.get("median"),
        "median_sweeps_all": mirror["median_all_seeds"],
        "paper_sweeps": PAPER_SWEEPS,
        "mirror_not_learned": ms["not_learned"],
        "pattern_1_2_4": paper_family,
        "xor_not_learned": xs["not_learned"],
        "seeds": seeds,
    }
    return Verdict(text, bool(supported), summary)
