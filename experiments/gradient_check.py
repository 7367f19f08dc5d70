"""Gradient checking: hand-written backprop against finite differences and `jax.grad`.

Claim (seed 000, Ng's "Backpropagation in practice"; seed 003, Saito's *Deep
Learning from Scratch* ch. 5.7.3): a backward pass written by hand is checked
once against a numerical gradient (central differences, two cost evaluations
per parameter); when they agree, checking is switched off, because the
numerical gradient is far too slow to train with.

Setup:

* **Ng's debug network** (`checkNNGradients` of ex4): 3 inputs, 5 sigmoid
  hidden units, 3 sigmoid outputs with the course's summed logistic cost
  (`multilabel_sigmoid_cross_entropy` on one-hot rows), `m = 5` examples,
  the course's regularisation `lambda = 3` (`l2 = lambda / m` here). The
  weights, inputs and labels are the course's deterministic ones
  (`debugInitializeWeights`: `sin(1:n) / 10` filled column by column;
  labels `1 + mod(1:m, 3)`).
* **Saito's TwoLayerNet** (ch. 5): `784 -> hidden -> 10`, affine, ReLU,
  affine, softmax-with-loss, weights `0.01 * N(0, 1)`, zero biases, checked on
  3 MNIST-shaped rows generated here (784 pixels in [0, 1], about 20 % of them
  non-zero, like MNIST digits) as in the book's `gradient_check.py`.
  `hidden = 50` (the book's size) in full mode, 10 in quick mode to keep
  the full numerical gradient (2 P cost evaluations, P parameters) quick.

Measured, in float32 and float64 (`jax.enable_x64`), exactly what
`purenet.gradcheck.check_gradients` judges, computed from the same public
pieces (`numerical_gradient`, `leaf_errors`, `TOLERANCES`) so that each
gradient comes from one jitted function (run eagerly, the check compiles
every primitive separately and takes longer than the arithmetic): the worst
leaf error `||g - r|| / max(||r||, c ||R||)` of the hand-written
gradient against `jax.grad` (`c = LEAF_FLOOR`) and against central
differences (`c = NUMERICAL_FLOOR`), next to the library's tolerances.
Also recorded, as the report shows them: cs231n's entrywise `rel_error`
(floor `REPORT_FLOOR`) against `jax.grad` and the course's norm ratio
`||a - b|| / ||a + b||` against central differences.
In float32 the hand-written and `jax.grad` gradients are also both
compared with the float64 `jax.grad` (the "truth"), which shows whether a
float32 disagreement is rounding shared by both referees or a bug.

Then, on the same networks in float32: the wall time of one jitted training
step (`purenet.train.make_step` with SGD; median of repeated calls after
compilation) against one full numerical gradient
(`purenet.gradcheck.numerical_gradient`, jitted once, then timed), and
their ratio: the reason gradient checking is switched off after verification.

No `make_train`: this experiment trains nothing; it times single steps.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import purenet
from experiments._common import Mode, Verdict, pick, pyplot, tracked
from purenet import gradcheck, layers, losses, objective, optim, train

NAME = "gradient_check"
QUICK_SECONDS = 7  # a quick run on 2 cores (the runner's order and estimate)
CLAIM = (
    "Hand-written backprop matches finite differences and jax.grad (float64 to rounding), "
    "and a full numerical gradient costs orders of magnitude more than a training step"
)

NG_LAMBDA = 3.0  # checkNNGradients(lambda) in ex4 of Ng's course
NG_SIZES = (3, 5, 3)  # input, hidden, labels
NG_M = 5
SAITO_ROWS = 3  # x_batch = x_train[:3] in the book's gradient_check.py
SAITO_STD = 0.01  # TwoLayerNet(weight_init_std=0.01)


# ------------------------------------------------------------------- networks


def _debug_matrix(fan_out: int, fan_in_plus_one: int):
    """Ng's `debugInitializeWeights`: `sin(1:n)/10` reshaped column-major."""
    values = np.sin(np.arange(1, fan_out * fan_in_plus_one + 1)) / 10
    return values.reshape((fan_out, fan_in_plus_one), order="F")


def ng_problem(dtype):
    """Ng's debug network, its deterministic weights and data, in `dtype`."""
    n_in, n_hidden, n_labels = NG_SIZES
    model = layers.serial(layers.dense(n_hidden), layers.sigmoid(), layers.dense(n_labels))
    theta1 = _debug_matrix(n_hidden, n_in + 1)  # (5, 4): bias column first
    theta2 = _debug_matrix(n_labels, n_hidden + 1)
    p = (
        {"W": jnp.asarray(theta1[:, 1:].T, dtype), "b": jnp.asarray(theta1[:, 0], dtype)},
        (),
        {"W": jnp.asarray(theta2[:, 1:].T, dtype), "b": jnp.asarray(theta2[:, 0], dtype)},
    )
    x = jnp.asarray(_debug_matrix(NG_M, n_in), dtype)  # debugInitializeWeights(m, n_in - 1)
    labels = np.mod(np.arange(1, NG_M + 1), n_labels)  # 1 + mod(1:m, 3), zero-based
    t = jnp.asarray(np.eye(n_labels)[labels], dtype)
    loss = losses.multilabel_sigmoid_cross_entropy
    return model, loss, p, x, t, purenet.penalty(l2=NG_LAMBDA / NG_M)


def saito_problem(dtype, hidden: int, seed: int = 0):
    """Saito's TwoLayerNet on a few generated MNIST-shaped rows. Weights and
    rows come from NumPy's generator (float64, then cast), so both dtypes
    check the same point and no JAX random kernel has to be compiled."""
    rng = np.random.default_rng(seed)
    model = layers.serial(layers.dense(hidden), layers.relu(), layers.dense(10))
    p = (
        {"W": SAITO_STD * rng.standard_normal((784, hidden)), "b": np.zeros(hidden)},
        (),
        {"W": SAITO_STD * rng.standard_normal((hidden, 10)), "b": np.zeros(10)},
    )
    ink = rng.uniform(size=(SAITO_ROWS, 784))
    x = np.where(rng.uniform(size=(SAITO_ROWS, 784)) < 0.2, ink, 0.0)
    t = jnp.asarray(rng.integers(0, 10, SAITO_ROWS), jnp.int32)
    p = jax.tree.map(lambda a: jnp.asarray(np.float32(a), dtype), p)
    x = jnp.asarray(np.float32(x), dtype)
    return model, losses.softmax_cross_entropy, p, x, t, None


# --------------------------------------------------------------------- checks


def _to_float64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _gradients(problem, dtype):
    """The three gradients of one problem in `dtype`, each from a jitted
    function (eager dispatch would compile every primitive separately, which
    costs more than the checks themselves on small networks)."""
    model, loss, p, x, t, pen = problem(dtype)
    J = objective(model, loss, pen)
    manual = jax.jit(lambda q: purenet.backprop(model, loss, pen)(q, x, t)[1])(p)
    autodiff = jax.jit(jax.grad(J))(p, x, t)
    # An outer jit compiles numerical_gradient once; it builds a fresh inner
    # jit at every call, which would otherwise recompile at each timing call.
    numerical = jax.jit(lambda q: gradcheck.numerical_gradient(J, q, x, t))
    return {"manual": manual, "autodiff": autodiff, "numeric": numerical(p)}, numerical, p


def _worst_leaf(manual, reference, floor=gradcheck.LEAF_FLOOR) -> float:
    errors = gradcheck.leaf_errors(manual, reference, floor)
    return float("nan") if any(np.isnan(errors)) else max(errors)


def _errors(grads, dtype) -> dict:
    """What `gradcheck.check_gradients` reports, from the same public pieces:
    the worst leaf error against jax.grad and against central differences
    (what it judges, with the library's tolerances for the dtype), and the
    entrywise `rel_error` and the course's norm ratio it also shows."""
    tolerance = gradcheck.tolerance_for(dtype)
    floor = gradcheck.REPORT_FLOOR
    r = {
        "autodiff_error": _worst_leaf(grads["manual"], grads["autodiff"]),
        "numerical_error": _worst_leaf(
            grads["manual"], grads["numeric"], gradcheck.NUMERICAL_FLOOR
        ),
        "autodiff_rel_error": gradcheck.rel_error(grads["manual"], grads["autodiff"], floor),
        "numerical_rel_error": gradcheck.rel_error(grads["manual"], grads["numeric"], floor),
        "numerical_norm_ratio": gradcheck.norm_ratio(grads["manual"], grads["numeric"]),
        "tolerance_autodiff": tolerance["autodiff"],
        "tolerance_numerical": tolerance["numerical"],
    }
    r["passed"] = bool(
        r["autodiff_error"] <= r["tolerance_autodiff"]
        and r["numerical_error"] <= r["tolerance_numerical"]
    )
    return r


def check(problem, step_repeats: int, numerical_repeats: int) -> dict:
    """Errors in float32 and float64, the distance of both float32 gradients
    from the float64 `jax.grad`, and the float32 timings."""
    grads32, numerical32, p32 = _gradients(problem, jnp.float32)
    out = {"float32": _errors(grads32, jnp.float32)}
    with jax.enable_x64(True):
        grads64, _, _ = _gradients(problem, jnp.float64)
        out["float64"] = _errors(grads64, jnp.float64)
        truth = _to_float64(grads64["autodiff"])
    for name, key in (("manual", "manual_vs_float64_truth"), ("autodiff", "jax_vs_float64_truth")):
        out["float32"][key] = _worst_leaf(_to_float64(grads32[name]), truth)
    out["num_params"] = int(purenet.ravel(p32)[0].size)
    out["timing"] = timing(problem, numerical32, step_repeats, numerical_repeats)
    return out


def dtype_ok(numbers: dict, dtype: str) -> bool:
    """Both leaf errors within the library's tolerances for the dtype (what
    `check_gradients(...).passed` says)."""
    return numbers[dtype]["passed"]


# --------------------------------------------------------------------- timing


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def timing(problem, numerical, step_repeats: int, numerical_repeats: int) -> dict:
    """Seconds for one jitted SGD step and one full numerical gradient (the
    already compiled `numerical`), float32, both after compilation."""
    model, loss, p, x, t, pen = problem(jnp.float32)
    opt = optim.sgd(0.1)
    step = jax.jit(train.make_step(model, loss, opt, penalty=pen))
    opt_state = opt.init(p)
    key = jax.random.key(0)
    jax.block_until_ready(step(p, opt_state, (), x, t, key))  # compile
    step_s = _median_seconds(lambda: step(p, opt_state, (), x, t, key), step_repeats)
    numerical_s = _median_seconds(lambda: numerical(p), numerical_repeats)
    return {"step_s": step_s, "numerical_s": numerical_s, "ratio": numerical_s / step_s}


# --------------------------------------------------------------------- figure


def draw(data: dict):
    numbers, names = data["numbers"], data["settings"]["names"]
    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    labels, autodiff, numerical, tol_a, tol_n, rounding = [], [], [], [], [], []
    for net, title in names.items():
        for dtype in ("float32", "float64"):
            r = numbers[net][dtype]
            labels.append(f"{title}\n{dtype}")
            autodiff.append(r["autodiff_error"])
            numerical.append(r["numerical_error"])
            tol_a.append(r["tolerance_autodiff"])
            tol_n.append(r["tolerance_numerical"])
            rounding.append(float(r.get("jax_vs_float64_truth", np.nan)))
    pos = np.arange(len(labels))
    w = 0.28
    floor = 1e-18  # an exact zero cannot be drawn on a log axis
    ax.bar(pos - w, np.maximum(autodiff, floor), w, label="worst leaf error vs jax.grad")
    ax.bar(pos, np.maximum(numerical, floor), w, label="worst leaf error vs central differences")
    ax.bar(
        pos + w,
        np.maximum(rounding, floor),
        w,
        color="0.6",
        label="float32 rounding: leaf error of float32 jax.grad vs float64 jax.grad",
    )
    for i in range(len(pos)):
        ax.hlines(tol_a[i], pos[i] - 1.5 * w, pos[i] - 0.5 * w, colors="k", linestyles="--", lw=2)
        ax.hlines(tol_n[i], pos[i] - 0.5 * w, pos[i] + 0.5 * w, colors="k", linestyles="--", lw=2)
    ax.plot([], [], "k--", label="tolerance (purenet.gradcheck.TOLERANCES)")
    ax.set_yscale("log")
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylabel("leaf error ||g - r|| / max(||r||, c ||R||) (log scale)")
    ax.set_title("Hand-written gradient against two referees")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_ylim(top=1e3)

    nets = list(names)
    x = np.arange(len(nets))
    steps = [numbers[n]["timing"]["step_s"] for n in nets]
    nums = [numbers[n]["timing"]["numerical_s"] for n in nets]
    bx.bar(x - 0.2, steps, 0.4, label="one jitted training step")
    bx.bar(x + 0.2, nums, 0.4, label="one full numerical gradient")
    for i, n in enumerate(nets):
        ratio = numbers[n]["timing"]["ratio"]
        bx.annotate(f"x{ratio:,.0f}", (x[i] + 0.2, nums[i]), ha="center", va="bottom", fontsize=9)
    bx.set_yscale("log")
    bx.set_xticks(x, [f"{names[n]}\n({numbers[n]['num_params']:,} params)" for n in nets])
    bx.set_ylabel("wall time per call (s, log scale)")
    bx.set_title("Why checking is switched off (float32)")
    bx.legend(fontsize=8, loc="upper left")
    bx.set_ylim(top=max(nums) * 30)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ run


def measure(mode: Mode, seeds: int | None) -> dict:
    """Both networks' errors in float32 and float64, and the timings.
    Deterministic: `seeds` plays no part."""
    hidden = pick(mode, smoke=2, quick=10, full=50)
    step_repeats = pick(mode, smoke=20, quick=50, full=200)
    numerical_repeats = pick(mode, smoke=1, quick=1, full=3)

    problems = {
        "ng_debug": ng_problem,
        "saito_two_layer": lambda dtype: saito_problem(dtype, hidden),
    }
    names = {"ng_debug": "Ng debug 3-5-3", "saito_two_layer": f"Saito 784-{hidden}-10"}
    numbers = {
        net: check(problem, step_repeats, numerical_repeats)
        for net, problem in tracked(problems.items(), label=lambda item: names[item[0]])
    }
    settings = {
        "names": names,
        "hidden": hidden,
        "ng_debug": {
            "sizes": NG_SIZES,
            "m": NG_M,
            "lambda": NG_LAMBDA,
            "l2": NG_LAMBDA / NG_M,
            "loss": "multilabel_sigmoid_cross_entropy (course's logistic cost, one-hot rows)",
            "weights": "debugInitializeWeights: sin(1:n)/10, column-major",
        },
        "saito_two_layer": {
            "sizes": (784, hidden, 10),
            "rows": SAITO_ROWS,
            "weight_init": f"normal(std={SAITO_STD}), zero biases",
            "data": "generated: uniform [0,1] pixels, ~20% non-zero; random labels",
            "rng": "numpy.random.default_rng(0), drawn in float64 and rounded to float32",
            "loss": "softmax_cross_entropy",
        },
        "finite_difference_eps": {
            "float32": gradcheck.default_eps(jnp.float32),
            "float64": float(np.cbrt(np.finfo(np.float64).eps)),
        },
        "timing": {
            "dtype": "float32",
            "optimizer": "sgd(0.1)",
            "step_repeats": step_repeats,
            "numerical_repeats": numerical_repeats,
            "statistic": "median wall time after compilation",
            "backend": jax.default_backend(),
        },
    }
    return {"settings": settings, "numbers": numbers}


def judge(data: dict) -> Verdict:
    """Every check within tolerance, and one numerical gradient of Saito's
    net costs at least 100 training steps."""
    numbers, hidden = data["numbers"], data["settings"]["hidden"]
    ok = {net: {d: dtype_ok(numbers[net], d) for d in ("float32", "float64")} for net in numbers}
    big = numbers["saito_two_layer"]["timing"]["ratio"]
    supported = all(all(v.values()) for v in ok.values()) and big >= 100

    s64 = numbers["saito_two_layer"]["float64"]
    n64 = numbers["ng_debug"]["float64"]
    s32 = numbers["saito_two_layer"]["float32"]
    n32 = numbers["ng_debug"]["float32"]
    text = (
        f"float64 leaf error vs jax.grad {n64['autodiff_error']:.1e} (Ng 3-5-3) / "
        f"{s64['autodiff_error']:.1e} (Saito 784-{hidden}-10), vs finite "
        f"differences {n64['numerical_error']:.1e} / {s64['numerical_error']:.1e}; "
        f"float32 vs jax.grad {n32['autodiff_error']:.1e} / {s32['autodiff_error']:.1e} "
        f"(float32 jax.grad itself is {n32['jax_vs_float64_truth']:.1e} / "
        f"{s32['jax_vs_float64_truth']:.1e} from float64), vs finite differences "
        f"{n32['numerical_error']:.1e} / {s32['numerical_error']:.1e}; "
        f"one numerical gradient of Saito's net = {big:,.0f} training steps "
        f"({numbers['saito_two_layer']['timing']['numerical_s']:.2f} s vs "
        f"{numbers['saito_two_layer']['timing']['step_s'] * 1e6:.0f} us)"
    )
    summary = {
        "float64_autodiff_error_max": max(n64["autodiff_error"], s64["autodiff_error"]),
        "float64_numerical_error_max": max(n64["numerical_error"], s64["numerical_error"]),
        "float32_autodiff_error_max": max(n32["autodiff_error"], s32["autodiff_error"]),
        "float32_numerical_error_max": max(n32["numerical_error"], s32["numerical_error"]),
        "numerical_over_step": big,
        "checks_ok": ok,
    }
    return Verdict(text, bool(supported), summary)
