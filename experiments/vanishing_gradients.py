"""Vanishing and exploding gradients in a 10-layer network.

Claim (seed 002, "gradient vanishing and exploding"): in backpropagation the
gradients get smaller layer by layer towards the input, so the first layers
barely learn; the remedies are ReLU-family activations in the hidden layers
(leaky ReLU against dead units), a sensible weight initialisation, and, against
exploding gradients, gradient clipping. Saito's *Deep Learning from Scratch*
(ch. 6.2) shows the same with histograms of activations: sigmoid units with
weights of std 1 saturate at 0 and 1, with std 0.01 they all sit at 0.5, and
with Xavier's scale they spread.

Setup: a 10-layer MLP (64 inputs, nine hidden layers of 100 units, 10
outputs, softmax cross-entropy) on a batch of 512 standardised digits.
Activations sigmoid, tanh, ReLU and leaky ReLU (slope 0.01); weights from
`normal(0.01)`, `xavier_normal` (std sqrt(2 / (fan_in + fan_out)) = 0.1
here, the 1/sqrt(n) of Saito) and `he_normal` (std sqrt(2 / fan_in)).

Measured:

* `||dW||` (Frobenius norm) of each of the 10 dense layers from the
  hand-written backward (`purenet.backprop`), for several seeds at once
  (`jax.vmap`), mean and min / max across seeds;
* histograms of the hidden activations of one seed, for sigmoid with std 1,
  0.01 and Xavier, and ReLU with He;
* an exploding case: ReLU with `normal(0.3)` weights (each layer multiplies
  the signal by about 0.3 * sqrt(100 / 2) = 2.1), trained with plain SGD
  (lr 0.01, batches of 64) with and without clipping to global norm 1
  (`optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.01))`) for several seeds
  at once (`experiments._common.sweep`, one program per optimizer); one more
  unclipped run goes through `purenet.train.fit` so that its NaN guard
  reports where it blew up.
"""

from __future__ import annotations

import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    Mode,
    Verdict,
    drawn_start,
    init_inside,
    jit,
    num_seeds,
    pick,
    progress,
    pyplot,
    sweep,
)
from purenet import backprop, data, datasets, losses, optim, params, train
from purenet import layers as L

NAME = "vanishing_gradients"
QUICK_SECONDS = 21  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "In a deep sigmoid net with small weights the gradients vanish towards the input; ReLU with "
    "He initialisation keeps them level; too-large weights explode them and clipping keeps "
    "training finite."
)

DEPTH, WIDTH, BATCH = 10, 100, 512
LOSS = losses.softmax_cross_entropy
ACTIVATIONS = {
    "sigmoid": L.sigmoid,
    "tanh": L.tanh,
    "ReLU": L.relu,
    "leaky ReLU": L.leaky_relu,
}
INITS = {
    "normal(0.01)": params.normal(0.01),
    "Xavier": params.xavier_normal(),
    "He": params.he_normal(),
}
EXPLODE_STD, EXPLODE_LR, EXPLODE_BATCH, CLIP = 0.3, 0.01, 64, 1.0


def _deep(activation, W_init):
    layers = []
    for _ in range(DEPTH - 1):
        layers += [L.dense(WIDTH, W_init=W_init), activation()]
    return L.serial(*layers, L.dense(10, W_init=W_init))


def _digits():
    x, t = datasets.digits()
    (x_tr, t_tr), _ = data.split(jax.random.key(0), x, t, (0.8, 0.2))
    stats = data.standardize_fit(x_tr)
    return data.standardize_apply(stats, x_tr), t_tr


def _init_many(W_init, keys):
    """Params for every seed, stacked on a leading axis (the structure does not
    depend on the activation). Eager, one seed at a time: a vmapped init would
    be one more program to compile, slower than these few small calls."""
    model = _deep(L.relu, W_init)
    per_seed = [model.init(k, (64,))[1] for k in keys]  # no state: no batch norm
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *per_seed)


def _gradient_profiles(x, t, seeds: int, activations):
    """`||dW||` per layer: {activation: {init: array (seeds, DEPTH)}}."""
    keys = jax.random.split(jax.random.key(1), seeds)
    inits = {name: _init_many(W_init, keys) for name, W_init in INITS.items()}
    out = {}
    for act_name in activations:
        activation = ACTIVATIONS[act_name]
        grad_fn = backprop(_deep(activation, "he_normal"), LOSS)

        def norms(p, grad_fn=grad_fn):
            _, grads = grad_fn(p, x, t)
            return jnp.stack([jnp.linalg.norm(grads[2 * i]["W"]) for i in range(DEPTH)])

        # One compiled function per activation, all inits and seeds through it.
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *inits.values())
        per_init = jit(jax.vmap(jax.vmap(norms)))(stacked)
        out[act_name] = {name: np.asarray(per_init[i]) for i, name in enumerate(INITS)}
    return out


def _histograms(x):
    """Hidden activations (one seed) for Saito's sigmoid cases and He + ReLU."""
    cases = {
        "sigmoid, normal(1)": (L.sigmoid, params.normal(1.0), (0.0, 1.0)),
        "sigmoid, normal(0.01)": (L.sigmoid, params.normal(0.01), (0.0, 1.0)),
        "sigmoid, Xavier": (L.sigmoid, params.xavier_normal(), (0.0, 1.0)),
        "ReLU, He": (L.relu, params.he_normal(), (0.0, 3.0)),
    }
    out = {}
    for name, (activation, W_init, (low, high)) in cases.items():
        model = _deep(activation, W_init)
        _, p, _ = model.init(jax.random.key(2), (64,))
        _, cache = jit(model.forward)(p, x)
        hidden = [np.asarray(cache[2 * i + 1][1]).ravel() for i in range(DEPTH - 1)]
        edges = np.linspace(low, high, 32)  # 31 bins: 0.5 falls inside a bin, not on an edge
        out[name] = {
            "edges": edges,
            "counts": [np.histogram(np.clip(h, low, high), edges)[0] for h in hidden],
            "mean": [float(h.mean()) for h in hidden],
            "std": [float(h.std()) for h in hidden],
            "saturated": [float(np.mean((h < 0.02) | (h > 0.98))) for h in hidden],
        }
    return out


def _exploding(x, t, seeds: int, epochs: int, with_fit: bool = True):
    """Per-epoch training loss with and without clipping, all seeds at once;
    the index of the first non-finite step per seed (or -1)."""
    model = _deep(L.relu, params.normal(EXPLODE_STD))
    evaluate = train.make_evaluate(model, LOSS)
    keys = jax.random.split(jax.random.key(3), seeds)

    out = {}
    for label, clip in (("no clipping", None), (f"clip_norm={CLIP:g}", CLIP)):
        optimizer = optim.sgd(EXPLODE_LR)
        if clip is not None:  # clip the gradient's global norm, then the SGD step
            optimizer = optim.chain(optim.clip_by_global_norm(clip), optimizer)
        _, _, history = sweep(
            model,
            LOSS,
            optimizer,
            EXPLODE_BATCH,
            epochs,
            (x, t),
            drawn_start,
            keys,
            draw=init_inside(model, (64,)),  # per seed: its init, then its batch order
            evaluate=lambda p, s, point: evaluate(p, x, t, s)[0],
            evaluate_start=True,  # the loss before the first step too
        )
        curves = history["evaluation"]
        steps = np.asarray(history["step_loss"]).reshape(seeds, -1)
        bad = ~np.isfinite(steps)
        first_bad = np.where(bad.any(axis=1), bad.argmax(axis=1), -1)
        out[label] = {
            "curves": np.asarray(curves),
            "step_losses": steps,
            "first_nonfinite_step": first_bad,
        }
    if not with_fit:
        out["fit_nan_guard"] = "not run (smoke mode)"
        return out
    # The same unclipped run through fit(), whose NaN guard names the step.
    _, p, state = model.init(jax.random.split(keys[0])[0], (64,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its message is reported instead
        result = train.fit(
            model,
            LOSS,
            optim.sgd(EXPLODE_LR),
            p,
            x,
            t,
            key=jax.random.key(4),
            epochs=min(epochs, 3),
            batch_size=EXPLODE_BATCH,
            state=state,
        )
    out["fit_nan_guard"] = result.stopped or "no blow-up"
    return out


# -------------------------------------------------------------------------- figure


def draw(data: dict):
    numbers, settings = data["numbers"], data["settings"]
    plt = pyplot()

    fig = plt.figure(figsize=(20, 15))
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1.1, 1], hspace=0.45, wspace=0.28)
    layers = np.arange(1, DEPTH + 1)
    profiles = numbers["gradient_norms"]
    colors = {"normal(0.01)": "C0", "Xavier": "C1", "He": "C2"}
    for j, act_name in enumerate(profiles):
        ax = fig.add_subplot(grid[0, j])
        for init_name, values in profiles[act_name].items():
            v = np.maximum(np.asarray(values, dtype=float), 1e-30)
            mean = np.exp(np.log(v).mean(axis=0))
            ax.plot(layers, mean, "o-", color=colors[init_name], label=init_name)
            ax.fill_between(
                layers, v.min(axis=0), v.max(axis=0), color=colors[init_name], alpha=0.2
            )
        if act_name == "ReLU":
            v = np.asarray(numbers["exploding_profile"], dtype=float)
            ax.plot(
                layers,
                np.exp(np.log(v).mean(axis=0)),
                "s--",
                color="C3",
                label=f"normal({EXPLODE_STD}) (exploding)",
            )
        ax.set(
            yscale="log",
            xlabel="layer (1 = next to the input)",
            ylabel="||dW|| (Frobenius)",
            title=f"{act_name}: gradient norm per layer\n(geometric mean, band min-max over seeds)",
        )
        ax.set_xticks(layers)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)

    hists = numbers["histograms"]
    sub = grid[1, :].subgridspec(1, len(hists), wspace=0.25)
    shown = (0, 2, 4, 6, 8)
    for j, (case, h) in enumerate(hists.items()):
        inner = sub[j].subgridspec(1, len(shown), wspace=0.3)
        edges = np.asarray(h["edges"])
        for k, layer in enumerate(shown):
            ax = fig.add_subplot(inner[k])
            counts = np.asarray(h["counts"][layer], dtype=float)
            ax.bar(
                edges[:-1], counts / counts.sum(), width=np.diff(edges), align="edge", color="C0"
            )
            ax.set_ylim(0, 1)
            ax.set_xticks([edges[0], edges[-1]], [f"{edges[0]:g}", f"{edges[-1]:g}"])
            ax.tick_params(labelsize=7)
            if k:
                ax.set_yticklabels([])
            else:
                ax.set_ylabel("fraction of units", fontsize=8)
            ax.set_title(f"layer {layer + 1}", fontsize=8)
            if k == len(shown) // 2:
                ax.set_xlabel("activation value", fontsize=8)
                ax.text(
                    0.5,
                    1.2,
                    f"{case}: hidden activations (one seed)",
                    transform=ax.transAxes,
                    ha="center",
                    fontsize=10,
                )

    ax = fig.add_subplot(grid[2, 0:2])
    explode = numbers["exploding"]
    for (label, r), color in zip(
        ((k, v) for k, v in explode.items() if k != "fit_nan_guard"), ("C3", "C2"), strict=True
    ):
        steps = np.asarray(r["step_losses"], dtype=float)
        updates = np.arange(steps.shape[1])
        nan_seeds = int(np.sum(np.asarray(r["first_nonfinite_step"]) >= 0))
        if nan_seeds:
            first = int(np.min(np.asarray(r["first_nonfinite_step"])))
            label = f"{label}: non-finite in {nan_seeds}/{len(steps)} seeds, from step {first}"
        for i, c in enumerate(steps):
            ax.plot(
                updates,
                np.where(np.isfinite(c), c, np.nan),
                "o-",
                ms=2,
                lw=0.8,
                color=color,
                alpha=0.6,
                label=label if i == 0 else None,
            )
    ax.set(
        xscale="symlog",
        yscale="log",
        xlabel="update (step)",
        ylabel="mini-batch loss before the update",
        title=f"ReLU, normal({EXPLODE_STD}) weights, SGD lr {EXPLODE_LR}: with and without "
        "gradient clipping\n(one line per seed; non-finite losses are not drawn)",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax = fig.add_subplot(grid[2, 2:4])
    ax.axis("off")
    wrapped = "\n".join(
        textwrap.fill(line, 95, subsequent_indent="      ") for line in _text(numbers, settings)
    )
    ax.text(0, 1, wrapped, va="top", family="monospace", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- run


def _orders(values) -> float:
    """log10 of (last layer / first layer), geometric mean over seeds."""
    v = np.maximum(np.asarray(values, dtype=float), 1e-38)
    return float(np.mean(np.log10(v[:, -1]) - np.log10(v[:, 0])))


def _spread(values) -> float:
    """log10 of max / min across layers of the seed-mean profile."""
    mean = np.exp(np.log(np.maximum(np.asarray(values, dtype=float), 1e-38)).mean(axis=0))
    return float(np.log10(mean.max() / mean.min()))


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=8, full=20)
    epochs = pick(mode, smoke=2, quick=10, full=25)
    x_all, t_all = _digits()
    x, t = x_all[:BATCH], t_all[:BATCH]

    everything = tuple(ACTIVATIONS)
    activations = pick(mode, smoke=("sigmoid", "ReLU"), quick=everything, full=everything)
    progress(0, 3, "gradient profiles")
    profiles = _gradient_profiles(x, t, seeds, activations)
    progress(1, 3, "exploding profile")
    keys = jax.random.split(jax.random.key(1), seeds)
    explode_params = _init_many(params.normal(EXPLODE_STD), keys)
    grad_fn = backprop(_deep(L.relu, "he_normal"), LOSS)
    explode_profile = np.asarray(
        jit(
            jax.vmap(
                lambda p: jnp.stack(
                    [jnp.linalg.norm(grad_fn(p, x, t)[1][2 * i]["W"]) for i in range(DEPTH)]
                )
            )
        )(explode_params)
    )
    hists = _histograms(x)
    progress(2, 3, "exploding training")
    # fit's NaN guard is a second compile of the exploding net: not in smoke mode.
    explode = _exploding(
        x_all, t_all, seeds, epochs, pick(mode, smoke=False, quick=True, full=True)
    )
    unclipped = explode["no clipping"]
    clipped_curves = explode[f"clip_norm={CLIP:g}"]["curves"]
    numbers = {
        "gradient_norms": profiles,
        "exploding_profile": explode_profile,
        "histograms": hists,
        "exploding": explode,
        "orders_last_over_first": {
            a: {i: _orders(profiles[a][i]) for i in INITS} for a in profiles
        },
        "relu_he_spread_orders": _spread(profiles["ReLU"]["He"]),
        "explode_over_he_orders": float(
            np.log10(np.median(explode_profile) / np.median(profiles["ReLU"]["He"]))
        ),
        "unclipped_nonfinite_seeds": int(np.sum(unclipped["first_nonfinite_step"] >= 0)),
        "clipped_all_finite": bool(np.all(np.isfinite(clipped_curves))),
        "clipped_loss_falls": bool(np.all(clipped_curves[:, -1] < clipped_curves[:, 0])),
    }
    settings = {
        "seeds": seeds,
        "network": f"64-{'-'.join([str(WIDTH)] * (DEPTH - 1))}-10, softmax cross-entropy",
        "batch_for_gradients": f"{BATCH} standardised digits",
        "inits": {"normal(0.01)": "std 0.01", "Xavier": "xavier_normal", "He": "he_normal"},
        "leaky_relu_slope": 0.01,
        "exploding": {
            "init": f"normal({EXPLODE_STD})",
            "optimizer": f"sgd({EXPLODE_LR})",
            "batch_size": EXPLODE_BATCH,
            "epochs": epochs,
            "clip_norm": CLIP,
            "data": "digits 80% split, standardised",
        },
    }
    return {"settings": settings, "numbers": numbers}


def _text(numbers: dict, settings: dict) -> list[str]:
    """The figure's text panel: the numbers behind the verdict."""
    profiles, h = numbers["gradient_norms"], numbers["histograms"]
    explode_profile = np.asarray(numbers["exploding_profile"], dtype=float)
    clipped_curves = np.asarray(numbers["exploding"][f"clip_norm={CLIP:g}"]["curves"], float)
    sat = h["sigmoid, normal(1)"]["saturated"]
    return [
        "log10(||dW|| layer 10 / layer 1), mean over seeds:",
        *(
            f"  {a:<11}" + "  ".join(f"{i}: {_orders(profiles[a][i]):+6.1f}" for i in INITS)
            for a in profiles
        ),
        "",
        "sigmoid activations (one seed), layers 1 / 5 / 9:",
        "  normal(1):    saturated (<0.02 or >0.98) "
        + " / ".join(f"{sat[i]:.0%}" for i in (0, 4, 8)),
        "  normal(0.01): std "
        + " / ".join(f"{h['sigmoid, normal(0.01)']['std'][i]:.1e}" for i in (0, 4, 8))
        + " around "
        + f"{h['sigmoid, normal(0.01)']['mean'][8]:.3f}",
        "  Xavier:       std "
        + " / ".join(f"{h['sigmoid, Xavier']['std'][i]:.3f}" for i in (0, 4, 8)),
        "",
        f"exploding (ReLU, normal({EXPLODE_STD})): ||dW|| median "
        f"{np.median(explode_profile):.1e}, 10^{numbers['explode_over_he_orders']:.1f} x He's",
        f"  without clipping: {numbers['unclipped_nonfinite_seeds']}/{settings['seeds']} seeds "
        "non-finite",
        f"  with clip_norm={CLIP:g}: all finite {numbers['clipped_all_finite']}, loss "
        f"{np.mean(clipped_curves[:, 0]):.0f} -> {np.mean(clipped_curves[:, -1]):.1f}",
        "  fit() NaN guard, same init, no clipping:",
        *("    " + part for part in numbers["exploding"]["fit_nan_guard"].split("; ")),
    ]


def judge(data: dict) -> Verdict:
    """Sigmoid with normal(0.01): the last layer's gradient over 1000 times the
    first's; ReLU with He: within one order of magnitude across the layers;
    normal(0.3) ReLU: every unclipped seed blows up, every clipped one stays
    finite and its loss falls."""
    numbers, settings = data["numbers"], data["settings"]
    seeds, epochs = settings["seeds"], settings["exploding"]["epochs"]
    h = numbers["histograms"]
    sig_small = numbers["orders_last_over_first"]["sigmoid"]["normal(0.01)"]
    relu_he = numbers["relu_he_spread_orders"]
    explode_scale = numbers["explode_over_he_orders"]
    diverged = numbers["unclipped_nonfinite_seeds"]
    clipped_curves = np.asarray(numbers["exploding"][f"clip_norm={CLIP:g}"]["curves"], float)
    vanish_ok = sig_small > 3  # more than three orders of magnitude, last layer over first
    level_ok = relu_he < 1  # within one order of magnitude across the ten layers
    explode_ok = (
        diverged == seeds and numbers["clipped_all_finite"] and numbers["clipped_loss_falls"]
    )
    supported = bool(vanish_ok and level_ok and explode_ok)
    sat = h["sigmoid, normal(1)"]["saturated"]
    text = (
        f"||dW|| layer 10 / layer 1: sigmoid+normal(0.01) 10^{sig_small:.1f}, ReLU+He spread "
        f"10^{relu_he:.2f} across layers; sigmoid std 1 saturates {sat[4]:.0%} at layer 5, "
        f"std 0.01 collapses to {h['sigmoid, normal(0.01)']['mean'][4]:.3f} ± "
        f"{h['sigmoid, normal(0.01)']['std'][4]:.0e}; ReLU normal({EXPLODE_STD}) grads "
        f"10^{explode_scale:.1f} x He's: unclipped SGD non-finite in {diverged}/{seeds} seeds, "
        f"clip_norm={CLIP:g} finite, loss {np.mean(clipped_curves[:, 0]):.0f} -> "
        f"{np.mean(clipped_curves[:, -1]):.1f} in {epochs} epochs"
    )
    summary = {
        "sigmoid_small_orders": sig_small,
        "relu_he_spread_orders": relu_he,
        "unclipped_nonfinite_seeds": diverged,
        "clipped_finite": numbers["clipped_all_finite"],
        "tests": {"vanish": bool(vanish_ok), "level": bool(level_ok), "explode": bool(explode_ok)},
    }
    return Verdict(text, supported, summary)
