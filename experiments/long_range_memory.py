"""Long-range memory: a tanh RNN against LSTM and GRU as the lag grows.

Claim (Hochreiter 1991; Bengio, Simard & Frasconi 1994; Hochreiter &
Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000; Pascanu, Mikolov & Bengio
2013): in a tanh RNN the gradient `dJ/dh_t` that reaches a state `k`
steps before the loss shrinks geometrically with `k`, so an answer that
depends on an input `L` steps back is learned less often as `L` grows;
the LSTM's cell (the "constant error carousel") carries the gradient when
its forget gate is open, and a GRU's update gate does likewise; an exploding
recurrent gradient is tamed by clipping its norm.

Task (marked-symbol recall): sequences of `T = max(L) + 1` symbols drawn
uniformly from 4 (one-hot inputs, random distractors at every step); one
position, `L` steps before the last, carries a marker (a fifth input
feature); the answer, read from the last hidden state, is the marked symbol
(chance 1/4). All lags share the length `T`, so one compiled program per
model trains every lag and seed at once (`jax.vmap` over lags and seeds of
`purenet.train.make_train`); only the distance between the marker and the
read-out changes. Models: `rnn(16)` / `lstm(16)` / `gru(16)`,
`last_step()`, `dense(4)`, PyTorch's initialisation; the LSTM with
`forget_bias=1` (Gers et al. 2000; Jozefowicz et al. 2015), and in the full
mode also with PyTorch's default (bias 0). Training: softmax cross-entropy,
Adam (1e-2), batches of 64 from 1,024 sequences; a seed *succeeds* at a lag
when its test accuracy (512 held-out sequences) after the last epoch is at
least 0.9. Adam divides each step by a running gradient scale, so it
partly undoes the vanishing of small gradients; this helps the tanh RNN
(measured, not hidden: its success rate is reported as it comes).

Gradient flow at initialisation (no training): `T = 64`, the recall
targets at the largest lag. For each `k`, the layer runs on the suffix
`x[:, T-k:]` from the state the full forward reached at step `T - k`
(passed as the initial state `(x, h0)`, `(x, (h0, c0))` for the LSTM);
the layer's hand-written backward returns `dh0 = dJ/dh_{T-k}` (and
`dc0`), whose per-example norm (loss summed over the batch) is averaged
over examples and, geometrically, over seeds.

Exploding: `rnn(32)` with `Wh` drawn `N(0, 3**2 / 32)` (spectral
radius about 3: the chaotic regime of random tanh networks, where the
backward product of Jacobians grows with `k`), the lag-4 recall task, plain
SGD (0.1), batches of 64, with and without clipping to global norm 1
(`optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.1))`).
Measured: the gradient norm at initialisation, non-finite step losses, the
global parameter norm and the test accuracy after every epoch. A tanh state
is bounded in `[-1, 1]`, so an unclipped step of size `lr * ||g||` throws
the weights far and saturates the units rather than necessarily overflowing;
what is measured is reported either way.

Training is jitted with `jax.jit` at XLA's default optimisation level, not
`experiments._common.jit`: a run is hundreds of sequential scan steps
of tiny matrices, and level 0 made it about five times slower (measured)
for a compile only about twice as quick.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (
    Mode,
    Verdict,
    init_many,
    jit,
    num_seeds,
    pick,
    progress,
    pyplot,
    sweep,
)
from purenet import backprop, losses, metrics, optim
from purenet import layers as L
from purenet.clipping import global_norm

NAME = "long_range_memory"
QUICK_SECONDS = 25  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "A tanh RNN's dJ/dh_{T-k} vanishes geometrically in the lag k and its success at recalling a "
    "symbol L steps back falls as L grows; the LSTM's cell with its forget gate open carries the "
    "gradient and the gated nets recall from further back; clipping keeps an exploding RNN's "
    "training bounded."
)

SYMBOLS, HIDDEN, BATCH, TRAIN_ROWS, TEST_ROWS = 4, 16, 64, 1024, 512
LEARNING_RATE, SUCCESS = 1e-2, 0.9
FLOW_T, FLOW_ROWS, FLOW_LAGS = 64, 256, (1, 2, 4, 8, 16, 32, 63)
EXPLODE_HIDDEN, EXPLODE_GAIN, EXPLODE_LR, EXPLODE_LAG, CLIP = 32, 3.0, 0.1, 4, 1.0

# arm: recurrent layer factory
CELLS = {
    "RNN": lambda h: L.rnn(h),
    "LSTM (forget bias 1)": lambda h: L.lstm(h, forget_bias=1.0),
    "LSTM (PyTorch init)": lambda h: L.lstm(h),
    "GRU": lambda h: L.gru(h),
}
COLORS = {"RNN": "C3", "LSTM (forget bias 1)": "C0", "LSTM (PyTorch init)": "C9", "GRU": "C2"}


def recall_data(rng: np.random.Generator, rows: int, T: int, lag: int):
    """`x (rows, T, 5)`: one-hot symbols plus a marker at step `T-1-lag`;
    `t (rows,)`: the marked symbol."""
    s = rng.integers(0, SYMBOLS, (rows, T))
    x = np.zeros((rows, T, SYMBOLS + 1), np.float32)
    x[np.arange(rows)[:, None], np.arange(T)[None], s] = 1.0
    x[:, T - 1 - lag, SYMBOLS] = 1.0
    return x, s[:, T - 1 - lag].astype(np.int32)


def make_model(arm: str, hidden: int = HIDDEN) -> L.Layer:
    return L.serial(CELLS[arm](hidden), L.last_step(), L.dense(SYMBOLS))


def _stacked_data(rng, lags, T, rows):
    pairs = [recall_data(rng, rows, T, lag) for lag in lags]
    x = np.stack([p[0] for p in pairs])
    t = np.stack([p[1] for p in pairs])
    return jnp.asarray(x), jnp.asarray(t)


def _success_sweep(arm, lags, T, seeds, epochs, compile_fn):
    """Test accuracy after every epoch, `(lags, seeds, epochs)`."""
    rng = np.random.default_rng(0)
    x, t = _stacked_data(rng, lags, T, TRAIN_ROWS)
    x_test, t_test = _stacked_data(rng, lags, T, TEST_ROWS)
    model = make_model(arm)
    keys = jax.random.split(jax.random.key(1), seeds)
    start = init_many(model, keys, (T, SYMBOLS + 1))

    def evaluate(p, s, lag):
        return metrics.multiclass_accuracy(model.forward(p, lag["x_test"])[0], lag["t_test"])

    grid = {"x": x, "t": t, "x_test": x_test, "t_test": t_test}  # one point per lag
    _, _, history = sweep(
        model,
        losses.softmax_cross_entropy,
        optim.adam(LEARNING_RATE),
        BATCH,
        epochs,
        lambda lag: (lag["x"], lag["t"]),
        start,
        keys,
        grid=grid,
        evaluate=evaluate,
        compile=compile_fn,
    )
    return np.asarray(history["evaluation"])


def _gradient_flow(arms, seeds, flow_T, flow_lags):
    """Per-example `||dJ/dh_{T-k}||` at initialisation for `k` in
    `FLOW_LAGS`: {arm: {"h": (seeds, lags), "c": (seeds, lags) for LSTMs}}."""
    x, t = recall_data(np.random.default_rng(2), FLOW_ROWS, flow_T, flow_T - 1)
    x, t = jnp.asarray(x), jnp.asarray(t)
    readout = L.dense(SYMBOLS)
    keys = jax.random.split(jax.random.key(3), seeds)
    out = {}
    for arm in arms:
        cell = CELLS[arm](HIDDEN)
        is_lstm = arm.startswith("LSTM")

        def norms(key, cell=cell, is_lstm=is_lstm):
            k_cell, k_out = jax.random.split(key)
            _, p_cell, _ = cell.init(k_cell, (flow_T, SYMBOLS + 1))
            _, p_out, _ = readout.init(k_out, (HIDDEN,))
            _, cache = cell.forward(p_cell, x)
            h_n, c_n = [], []
            for k in flow_lags:
                start = flow_T - k  # the suffix x[:, start:] begins after h_{start}
                h0 = cache["hs"][start - 1]
                initial = (h0, cache["c_prev"][start]) if is_lstm else h0
                y, c_suffix = cell.forward(p_cell, (x[:, start:], initial))
                logits, c_out = readout.forward(p_out, y[:, -1])
                _, dlogits = losses.softmax_cross_entropy.value_and_grad(logits, t)
                _, dlast = readout.backward(p_out, c_out, dlogits * FLOW_ROWS)  # summed loss
                dy = jnp.zeros_like(y).at[:, -1].set(dlast)
                _, (_, d_initial) = cell.backward(p_cell, c_suffix, dy)
                dh, dc = d_initial if is_lstm else (d_initial, None)
                h_n.append(jnp.linalg.norm(dh, axis=1).mean())
                if is_lstm:
                    c_n.append(jnp.linalg.norm(dc, axis=1).mean())
            return jnp.stack(h_n), (jnp.stack(c_n) if is_lstm else jnp.zeros(0))

        h_norms, c_norms = jit(jax.vmap(norms))(keys)  # tiny: compile time is what counts
        out[arm] = {"h": np.asarray(h_norms)}
        if is_lstm:
            out[arm]["c"] = np.asarray(c_norms)
    return out


def _exploding(T, seeds, epochs, compile_fn):
    """An RNN with spectral radius about 3, SGD with and without clipping."""
    rng = np.random.default_rng(4)
    x, t = map(jnp.asarray, recall_data(rng, TRAIN_ROWS, T, EXPLODE_LAG))
    x_test, t_test = map(jnp.asarray, recall_data(rng, TEST_ROWS, T, EXPLODE_LAG))
    model = make_model("RNN", EXPLODE_HIDDEN)
    keys = jax.random.split(jax.random.key(5), seeds)
    params, state = init_many(model, keys, (T, SYMBOLS + 1))
    wh = np.stack(
        [
            np.asarray(
                jax.random.normal(jax.random.fold_in(k, 7), (EXPLODE_HIDDEN, EXPLODE_HIDDEN))
            )
            for k in keys
        ]
    ) * (EXPLODE_GAIN / np.sqrt(EXPLODE_HIDDEN))
    params = (dict(params[0], Wh=wh.astype(np.float32)), *params[1:])
    radius = np.abs(np.linalg.eigvals(wh.astype(np.float64))).max(axis=1)
    grad = backprop(model, losses.softmax_cross_entropy)

    def evaluate(p, s):
        return {
            "accuracy": metrics.multiclass_accuracy(model.forward(p, x_test)[0], t_test),
            "param_norm": global_norm(p),
        }

    # Before training, in one program for both arms (the gradient is the same).
    g0 = np.asarray(compile_fn(jax.vmap(lambda p, s: global_norm(grad(p, x, t)[1])))(params, state))
    out = {"spectral_radius": radius}
    for label, clip in (("no clipping", None), (f"clip_norm={CLIP:g}", CLIP)):
        opt = optim.sgd(EXPLODE_LR)
        if clip is not None:  # clip the gradient's global norm, then the SGD step
            opt = optim.chain(optim.clip_by_global_norm(clip), opt)
        _, _, history = sweep(
            model,
            losses.softmax_cross_entropy,
            opt,
            BATCH,
            epochs,
            (x, t),
            (params, state),
            keys,
            evaluate=lambda p, s, point: evaluate(p, s),
            evaluate_start=True,
            compile=compile_fn,
        )
        step_loss = np.asarray(history["step_loss"]).reshape(seeds, -1)
        bad = ~np.isfinite(step_loss)
        out[label] = {
            "initial_grad_norm": g0,
            "first_nonfinite_step": np.where(bad.any(axis=1), bad.argmax(axis=1), -1),
            "accuracy": np.asarray(history["evaluation"]["accuracy"]),
            "param_norm": np.asarray(history["evaluation"]["param_norm"]),
        }
    return out


def measure(mode: Mode, seeds: int | None) -> dict:
    seeds = num_seeds(mode, seeds, quick=8, full=16)
    lags = pick(mode, smoke=(2, 4), quick=(4, 8, 16), full=(4, 8, 16, 32, 64))
    epochs = pick(mode, smoke=1, quick=8, full=30)
    arms = pick(
        mode, smoke=("RNN",), quick=("RNN", "LSTM (forget bias 1)", "GRU"), full=tuple(CELLS)
    )
    explode_epochs = pick(mode, smoke=1, quick=5, full=20)
    # smoke: XLA's level 0 (quicker compiles of programs too short to matter)
    compile_fn = pick(mode, smoke=jit, quick=jax.jit, full=jax.jit)
    flow_T = pick(mode, smoke=8, quick=FLOW_T, full=FLOW_T)
    # Each lag of the gradient flow is its own suffix pass (compiled): quick mode takes four.
    flow_lags = pick(mode, smoke=(1, 7), quick=(1, 4, 16, 63), full=FLOW_LAGS)
    T = max(lags) + 1
    # The exploding RNN keeps quick mode's former length, 33: over 17 steps its
    # gradient at initialisation is only about 20 (measured), not exploding.
    explode_T = pick(mode, smoke=T, quick=33, full=T)
    units = len(arms) + 2  # each arm's sweep, the gradient flow, the exploding RNN
    success = {}
    for i, arm in enumerate(arms):
        progress(i, units, f"recall, {arm}")
        success[arm] = {"test_accuracy": _success_sweep(arm, lags, T, seeds, epochs, compile_fn)}
    flow_arms = pick(mode, smoke=("RNN", "LSTM (forget bias 1)"), quick=arms, full=tuple(CELLS))
    progress(units - 2, units, "gradient flow")
    flow = _gradient_flow(flow_arms, seeds, flow_T, flow_lags)
    progress(units - 1, units, "exploding RNN")
    numbers = {
        "recall": success,
        "gradient_flow": flow,
        "exploding": _exploding(explode_T, seeds, explode_epochs, compile_fn),
    }
    settings = {
        "seeds": seeds,
        "lags": list(lags),
        "sequence_length": T,
        "epochs": epochs,
        "steps": epochs * (TRAIN_ROWS // BATCH),
        "hidden": HIDDEN,
        "optimizer": f"adam(lr={LEARNING_RATE})",
        "batch_size": BATCH,
        "train_rows": TRAIN_ROWS,
        "test_rows": TEST_ROWS,
        "success_threshold": SUCCESS,
        "flow_T": flow_T,
        "flow_lags": list(flow_lags),
        "explode": {
            "hidden": EXPLODE_HIDDEN,
            "gain": EXPLODE_GAIN,
            "lr": EXPLODE_LR,
            "optimizer": f"sgd(lr={EXPLODE_LR})",
            "lag": EXPLODE_LAG,
            "clip_norm": CLIP,
            "epochs": explode_epochs,
            "sequence_length": explode_T,
        },
    }
    return {"settings": settings, "numbers": numbers}


# ------------------------------------------------------------------ judging


def _success_rates(numbers) -> dict:
    """{arm: success rate per lag}."""
    return {
        arm: (np.asarray(v["test_accuracy"], float)[:, :, -1] >= SUCCESS).mean(axis=1)
        for arm, v in numbers["recall"].items()
    }


def _flow(numbers) -> dict:
    """{arm: geometric mean over seeds of the carried norm per lag} (the cell's for LSTMs)."""
    out = {}
    for arm, v in numbers["gradient_flow"].items():
        values = np.asarray(v.get("c", v["h"]), float)
        out[arm] = np.exp(np.log(np.maximum(values, 1e-38)).mean(axis=0))
    return out


def judge(data: dict) -> Verdict:
    """Three parts, all needed:

    * vanishing: the RNN's `||dJ/dh_{T-k}||` at the largest `k` is below
      1e-6 of its value at `k = 1`, and the LSTM cell's (forget bias 1) at
      the largest `k` is at least 1e3 times the RNN's;
    * recall: the RNN's success rate at the longest lag is below its rate at
      the shortest, and the best gated arm's success, summed over lags, beats
      the RNN's;
    * exploding: the unclipped run is non-finite in some seed or ends with a
      parameter norm at least 10 times the clipped run's (median over seeds),
      and the clipped run is finite in every seed.
    """
    settings, numbers = data["settings"], data["numbers"]
    lags = settings["lags"]
    rates = _success_rates(numbers)
    flow = _flow(numbers)
    rnn_flow, lstm_flow = flow["RNN"], flow["LSTM (forget bias 1)"]
    vanishing = bool(rnn_flow[-1] < 1e-6 * rnn_flow[0] and lstm_flow[-1] >= 1e3 * rnn_flow[-1])
    gated = {arm: r for arm, r in rates.items() if arm != "RNN"}
    best = max(gated, key=lambda a: gated[a].sum(), default=None)  # smoke: RNN only
    recall = bool(
        best is not None
        and rates["RNN"][-1] < rates["RNN"][0]
        and gated[best].sum() > rates["RNN"].sum()
    )
    ex = numbers["exploding"]
    clip_label = f"clip_norm={CLIP:g}"
    unclipped, clipped = ex["no clipping"], ex[clip_label]
    nonfinite_u = int((np.asarray(unclipped["first_nonfinite_step"]) >= 0).sum())
    nonfinite_c = int((np.asarray(clipped["first_nonfinite_step"]) >= 0).sum())
    norm_u = float(np.median(np.asarray(unclipped["param_norm"], float)[:, -1]))
    norm_c = float(np.median(np.asarray(clipped["param_norm"], float)[:, -1]))
    grad0 = float(np.median(np.asarray(unclipped["initial_grad_norm"], float)))
    exploding = bool((nonfinite_u > 0 or norm_u >= 10 * norm_c) and nonfinite_c == 0)
    seeds = settings["seeds"]
    rate_text = "; ".join(f"{arm} " + " ".join(f"{r:.2f}" for r in rates[arm]) for arm in rates)
    k = settings["flow_lags"]
    flow_text = ", ".join(f"{arm} {v[0]:.1e}->{v[-1]:.1e}" for arm, v in flow.items())
    text = (
        f"success (test acc >= {SUCCESS}) at lags {'/'.join(map(str, lags))}, {seeds} seeds: "
        f"{rate_text}; ||dJ/dh_(T-k)|| at init, k={k[0]}->{k[-1]} (LSTM: cell): {flow_text}; "
        f"exploding RNN (init grad norm {grad0:.1e}): non-finite seeds unclipped "
        f"{nonfinite_u}/{seeds}, clipped {nonfinite_c}/{seeds}, final param norm "
        f"{norm_u:.3g} vs {norm_c:.3g}"
        f" [vanishing {'yes' if vanishing else 'no'}, recall {'yes' if recall else 'no'}, "
        f"clipping {'yes' if exploding else 'no'}]"
    )
    summary = {f"success_{arm}_L{lags[-1]}": float(rates[arm][-1]) for arm in rates}
    summary.update({f"flow_{arm}_k{k[-1]}": float(v[-1]) for arm, v in flow.items()})
    summary.update(
        {
            "explode_nonfinite_unclipped": nonfinite_u,
            "explode_nonfinite_clipped": nonfinite_c,
            "explode_param_norm_unclipped": norm_u,
            "explode_param_norm_clipped": norm_c,
        }
    )
    return Verdict(text, vanishing and recall and exploding, summary)


# ------------------------------------------------------------------ figure


def draw(data: dict):
    settings, numbers = data["settings"], data["numbers"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(22, 5))
    lags = settings["lags"]
    rates = _success_rates(numbers)
    ax = axes[0]
    for arm, r in rates.items():
        ax.plot(lags, r, "o-", color=COLORS[arm], label=arm)
    ax.set(
        xscale="log",
        xlabel="lag L (steps between the marked symbol and the answer)",
        ylabel=f"fraction of seeds with test accuracy >= {SUCCESS}",
        ylim=(-0.05, 1.05),
        title=f"marked-symbol recall, {settings['seeds']} seeds, {settings['steps']} Adam steps",
    )
    ax.set_xticks(lags, [str(v) for v in lags])
    ax.legend()
    ax.grid(alpha=0.3)

    ax = axes[1]
    k = settings["flow_lags"]
    for arm, v in numbers["gradient_flow"].items():
        for key, style in (("h", "o-"), ("c", "s--")):
            if key not in v:
                continue
            values = np.maximum(np.asarray(v[key], float), 1e-38)
            mean = np.exp(np.log(values).mean(axis=0))
            label = f"{arm}: {'cell c' if key == 'c' else 'h'}"
            ax.plot(
                k,
                mean,
                style,
                color=COLORS[arm],
                label=label,
                alpha=1.0 if key == "c" or "LSTM" not in arm else 0.5,
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="k (steps before the loss)",
        ylabel="per-example ||dJ/dh_{T-k}|| (geo. mean over seeds)",
        title=f"gradient flow at initialisation, T = {settings['flow_T']}",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")

    ex = numbers["exploding"]
    e = settings["explode"]
    for ax, key, ylabel in (
        (axes[2], "param_norm", "global parameter norm"),
        (axes[3], "accuracy", "test accuracy"),
    ):
        for i, label in enumerate(k_ for k_ in ex if k_ != "spectral_radius"):
            values = np.asarray(ex[label][key], float)
            epochs = np.arange(values.shape[1])
            for row in values:
                ax.plot(epochs, row, color=f"C{i}", alpha=0.3)
            ax.plot(epochs, np.median(values, axis=0), color=f"C{i}", lw=2.5, label=label)
        ax.set(
            xlabel="epoch",
            ylabel=ylabel,
            title=f"exploding RNN({e['hidden']}), gain {e['gain']:g}, SGD {e['lr']:g}, "
            f"lag {e['lag']}",
        )
        if key == "param_norm":
            ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
