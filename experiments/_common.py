"""The experiment skeleton: modes, measuring, judging, drawing, and saving.

An experiment is a module of this package that reproduces one claim of the
source notes. It separates what costs compute from what does not:

```text
NAME = "zero_init_symmetry"            # file stem of its outputs
CLAIM = "Zero initialisation keeps every hidden unit identical ..."

def measure(mode: Mode, seeds: int | None) -> dict:
    # Train and measure; return {"settings": {...}, "numbers": {...}},
    # JSON-ready (arrays are fine: the runner converts them).
def judge(data: dict) -> Verdict:
    # The claim against the numbers: Verdict(text, supported, summary).
def draw(data: dict) -> matplotlib.figure.Figure:
    # The figure, from the numbers alone.
```

`judge` and `draw` receive `data` exactly as it is stored in
`NAME.json` (`from_json` of `to_json`: arrays are nested
lists, tuples are lists, dict keys are strings, non-finite floats are the
strings `"nan"`, `"inf"`, `"-inf"`; `np.asarray(v, float)` and
`float(v)` turn them back), in a fresh run as in a replot, so both paths are
one code path. They never train; `python -m experiments --replot DIR`
redraws every figure, verdict and the summary from the JSON files in
`DIR` alone.

**Training** goes through [`purenet.train.make_train`][purenet.train.make_train], `jax.vmap`-ed
over seeds and a grid of settings (learning rates, penalty strengths, whole
data sets: they are traced values) in one compiled program per
architecture: `sweep`. What differs per seed beyond its key (its own
data set, split, label noise, an init inside the program: `init_inside`) is
drawn by `sweep(..., draw=...)` inside the program; arms that differ only in where
they start take `start_per_point` (`points_in_sequence` keeps each arm's
numbers those of a run of its own; `compile=returning(select)` compiles
only what is read, the program of the hand-written run it replaces). An
experiment that trains otherwise says why in its docstring or at the place
(gradient_check trains nothing; optimizers steps on analytic 2-D surfaces, which are not networks;
batch_sizes times single epochs). `make_train(..., evaluate=...)` records a probe after every
epoch (`sweep(..., evaluate_start=True)` also before the first); to
evaluate every `k` epochs, `sweep(..., every=k)`.
A full-batch run is `make_train(model, loss, opt, m, m, epochs)`: one step
per epoch. Pass the `state` that `model.init` returns (`init_many`;
`stateless` for params built by hand).

**Progress.** `measure` announces its units of work (one compiled
program, one arm) with `progress` or `tracked`; the runner shows
them with an estimate of the time left. A module may set `QUICK_SECONDS`,
its quick run's seconds on two cores, which the runner uses to start the
longest experiments first and to estimate before the first unit ends.

**Modes** (`Mode`) are explicit. `Mode.QUICK` is the default of
`python -m experiments` (all experiments in about two minutes on two CPU
cores, two at a time; each quick run must still support its claim, with
enough seeds for its statistic); `Mode.FULL` is behind the README's
figures; `Mode.SMOKE` is for the tests: tiny sizes that run the whole
pipeline (measure, JSON, judge, draw) in seconds, whose numbers support
nothing. An experiment
chooses its sizes with `pick` (`pick(mode, smoke=3, quick=40,
full=150)`): every mode named at the one place a size is chosen, never a
mode compared as a string.

**Seeds.** `seeds` is the `--seeds` option (`None`: the experiment's
default for the mode, `num_seeds`); `settings["seeds"]` records the
number used.

Adding an experiment: write `experiments/NAME.py` with the four names
above and add its name to `EXPERIMENTS` in `experiments/__main__.py`
(the one registry: the runner, the smoke tests, the README section and the
docs read it). It is then smoke-tested by `tests/test_experiments_a.py`
until a test file of its own claims it there.
"""

from __future__ import annotations

import enum
import io
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from purenet import data, datasets, train

GENERATOR = "purenet-experiments"


class Mode(enum.Enum):
    """How hard an experiment tries.

    * `SMOKE`: tests only. Tiny sizes (few epochs, two seeds, a subset of
      the arms) that exercise measuring, saving, judging and drawing in
      seconds; the numbers are not expected to support the claim.
    * `QUICK`: the default. Settings that show the claim, all experiments
      in about two minutes on two CPU cores.
    * `FULL`: the settings behind the README's figures (more seeds,
      epochs, and the larger networks of the sources).
    """

    SMOKE = "smoke"
    QUICK = "quick"
    FULL = "full"


def pick(mode: Mode, *, smoke, quick, full):
    """The value for `mode`: every mode's value is named where it is chosen."""
    if not isinstance(mode, Mode):
        raise TypeError(f"mode: expected an experiments._common.Mode, got {mode!r}")
    return {Mode.SMOKE: smoke, Mode.QUICK: quick, Mode.FULL: full}[mode]


def num_seeds(mode: Mode, seeds: int | None, *, smoke: int = 2, quick: int, full: int) -> int:
    """`seeds` if given (the `--seeds` option), else the mode's default."""
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds: expected a positive integer or None, got {seeds!r}")
        return seeds
    return pick(mode, smoke=smoke, quick=quick, full=full)


class Verdict(NamedTuple):
    """What `judge` concludes from the numbers.

    Attributes:
      text: one line stating the claim's measured numbers, e.g.
        `"zero init: 1 distinct hidden unit, accuracy 0.50; random: 1.00"`.
      supported: whether the numbers support the claim.
      summary: a few key numbers for the summary table (`name: value`).
    """

    text: str
    supported: bool
    summary: dict


# -------------------------------------------------------------------- progress

# The runner's progress display (``experiments.__main__``) sets this to a
# function ``report(done, total, what)``; outside the runner (tests, a user's
# own script) progress goes nowhere.
_reporter = None


def progress(done: int, total: int, what: str = ""):
    """Tell the runner that `done` of `total` units of `measure` are
    finished (`what`: the unit just started or finished, e.g. `"CNN"`).

    The runner shows it as a live line with an estimate of the time left on
    a terminal, and says nothing of it when its output is a log. A unit is
    whatever the experiment can count: one compiled program, one arm.
    """
    if _reporter is not None:
        _reporter(int(done), int(total), str(what))


def tracked(items, label=str, *, start: int = 0, total: int | None = None):
    """`items`, one by one, each announced to the runner with
    `progress` as it starts (`label(item)` names it); `start` units
    of `total` (default: as many as `items`) are done before the first."""
    items = list(items)
    total = start + len(items) if total is None else total
    for i, item in enumerate(items):
        progress(start + i, total, label(item))
        yield item


# --------------------------------------------------------------------- helpers


def compile_options(backend: str) -> dict:
    """The XLA compile options of `jit` for a program compiled by `backend`
    (`"cpu"`, `"gpu"`, `"tpu"`, as `jax.default_backend()` names them).

    Optimisation level 0 is XLA's own option, for every backend; the
    elemental emitters (`xla_cpu_use_fusion_emitters`) are XLA:CPU's, and
    only a CPU compile gets them.
    """
    options = {"xla_backend_optimization_level": 0}
    if backend == "cpu":
        options["xla_cpu_use_fusion_emitters"] = False
    return options


def jit(fn):
    """`jax.jit` for an experiment's vmapped training run.

    The runs are many small networks: XLA's CPU backend spends seconds
    optimising code that then runs in milliseconds, so compile at backend
    optimisation level 0 and, on CPU, with XLA:CPU's elemental emitters
    instead of its MLIR fusion emitters (the tests' setting,
    `tests/conftest.py`); `compile_options` chooses them by the backend
    that compiles (`jax.default_backend()`: the default device's, where
    the experiments' arrays live). Measured on one core each, quick mode: the emitters took the
    XLA compile time of `optimizers` from 19.0 to 6.9 s and of
    `output_heads` from 15.9 to 4.7 s, and five experiments that use this
    function from 136 to 98 s in all. The numbers agree to rounding, which a
    sensitive run amplifies (`regularization`'s no-penalty test accuracy
    moved from 0.781 to 0.780).
    """
    return jax.jit(fn, compiler_options=compile_options(jax.default_backend()))


def sweep(
    model,
    loss,
    optimizer,
    batch_size: int,
    epochs: int,
    data,
    start,
    keys,
    *,
    grid: dict | None = None,
    draw=None,
    start_per_point: bool = False,
    penalty=None,
    privacy=None,
    evaluate=None,
    evaluate_start: bool = False,
    every: int = 1,
    finish=None,
    compile=jit,
    seeds_in_sequence: bool = False,
    points_in_sequence: bool = False,
    **train_options,
):
    """Train `model` from every seed's start at every point of `grid`, in
    one compiled program: the skeleton's training.

    [`purenet.train.make_train`][purenet.train.make_train] runs each seed; `jax.vmap` maps it over
    the seeds (inner axis) and over the grid's points (outer axis), whose
    settings (learning rates, penalty strengths, whole data sets) are traced
    values, so one program serves them all. What differs between seeds
    beyond their key and start (their own data set, split, label noise,
    an init inside the program) is drawn by `draw` inside the program.

    Args:
      model, loss, batch_size, epochs, **train_options: as for `make_train`
        (`batch_size` the number of examples for full-batch training).
      optimizer: an optimizer, or `optimizer(point)` that makes one from a
        grid point (`lambda point: optim.sgd(point["learning_rate"])`).
      data: `(x, t)`, or `data(point)` that returns them (one data set per
        point: `lambda point: (point["x"], point["t"])`; per seed: the
        entries `draw` added to the point).
      start: `(params, state)` stacked over seeds (`init_many`), or over
        `(points, seeds)` with `start_per_point` (arms that differ only in
        where they start), or `start(point) -> (params, state)` made per
        seed inside the program (from what `draw` added to the point).
      keys: one key per seed: the training key (batch order, dropout), or,
        with `draw`, the key `draw` receives; or one key that every seed
        shares (a run that draws nothing per seed, such as full-batch
        gradient descent: the rows' order is then computed once, not per
        seed).
      grid: `None`, or a dict of arrays whose leading axis is the points
        (every array as long); a point is the dict of their rows.
      draw: `None`, or `draw(key, point) -> dict`, run per seed inside the
        program on the seed's key: its entries join the point that `data`,
        `start`, `optimizer`, `penalty`, `privacy`, `evaluate` and `finish` see, and
        its entry `"key"` is the seed's training key.
      start_per_point: `start` has leading axes `(points, seeds)` (with a
        grid, as many points; without one, the points are its first axis).
      penalty: `None`, a `purenet.penalty`, or `penalty(point)` that makes
        one (traced strengths: one program for every strength).
      privacy: `None`, DP-SGD settings (`purenet.privacy.dp_sgd`), or
        `privacy(point)` that makes them (traced clip norms and noise
        multipliers: one program for every privacy level).
      evaluate: `None`, or `evaluate(params, state, point) -> pytree`,
        recorded after every `every` epochs (`point` is `{}` without a
        grid).
      evaluate_start: also record `evaluate` before the first epoch
        (`history["evaluation"]` then has one entry more).
      every: epochs between evaluations (a divisor of `epochs`): a
        `lax.scan` of `make_train(..., every)` over `epochs // every`
        chunks, the chunk's key `split(key, chunks)[i]`;
        `history["step_loss"]` then has shape `(chunks, every, batches)`.
      finish: `None`, or `finish(params, state, point) -> pytree`, measured
        once after training in the same program (`history["final"]`).
      compile: how to compile the whole run (`jit`, or `jax.jit` for
        runs that train longer than they compile, or a timing wrapper;
        `returning(select)` to return only what is read).
      seeds_in_sequence: `jax.lax.map` over the seeds instead of `vmap`
        (convolutions vmapped over per-seed kernels become grouped
        convolutions, which XLA:CPU runs several times slower).
      points_in_sequence: `jax.lax.map` over the points instead of `vmap`:
        each point then computes exactly what a run of its own computes
        (a vmapped point axis batches the matrix products differently, which
        moves the numbers at rounding level).

    Returns:
      `(params, state, history)` after the last epoch, as `make_train`
      returns them, with leading axes `(points, seeds)`, or `(seeds,)`
      without a grid or per-point starts.
    """
    if every < 1 or epochs % every:
        raise ValueError(f"every: expected a positive divisor of epochs={epochs}, got {every!r}")
    make_start = start if callable(start) else None
    made_inside = make_start is not None

    def one(own, key, point):
        if draw is not None:
            drawn = dict(draw(key, point))
            key = drawn.pop("key")
            point = {**point, **drawn}
        params, state = make_start(point) if made_inside else own
        opt = optimizer if hasattr(optimizer, "init") else optimizer(point)
        x, t = data(point) if callable(data) else data
        probe = None if evaluate is None else (lambda p, s: evaluate(p, s, point))
        options = dict(train_options)
        if penalty is not None:
            options["penalty"] = penalty(point) if callable(penalty) else penalty
        if privacy is not None:
            options["privacy"] = privacy(point) if callable(privacy) else privacy
        m = jax.tree.leaves(x)[0].shape[0]
        first = probe(params, state) if evaluate_start and probe is not None else None
        if every == 1:
            run = train.make_train(
                model, loss, opt, batch_size, m, epochs, evaluate=probe, **options
            )
            params, _, state, history = run(params, opt.init(params), state, key, x, t)
        else:
            run = train.make_train(model, loss, opt, batch_size, m, every, **options)

            def chunk(carry, k):
                params, opt_state, state, h = run(*carry, k, x, t)
                if probe is not None:
                    h["evaluation"] = probe(params, state)
                return (params, opt_state, state), h

            chunks = jax.random.split(key, epochs // every)
            (params, _, state), history = jax.lax.scan(
                chunk, (params, opt.init(params), state), chunks
            )
        if first is not None:
            history["evaluation"] = jax.tree.map(
                lambda a, b: jax.numpy.concatenate([a[None], b]), first, history["evaluation"]
            )
        if finish is not None:
            history["final"] = finish(params, state, point)
        return params, state, history

    shared_key = jax.numpy.ndim(keys) == 0

    def seeds(point, start, keys):
        if seeds_in_sequence:
            if shared_key:
                return jax.lax.map(lambda s: one(s, keys, point), start)
            return jax.lax.map(lambda args: one(*args, point), (start, keys))
        axes = (None if made_inside else 0, None if shared_key else 0, None)
        return jax.vmap(one, axes)(start, keys, point)

    start = None if made_inside else start
    if grid is None and not start_per_point:
        return compile(lambda s, k: seeds({}, s, k))(start, keys)

    def points(grid, start, keys):
        def at(point_and_start):
            point, own = point_and_start
            return seeds({} if point is None else point, own if start_per_point else start, keys)

        per_point = (grid, start if start_per_point else None)
        if points_in_sequence:
            return jax.lax.map(at, per_point)
        return jax.vmap(at)(per_point)

    return compile(points)(grid, start, keys)


def returning(select, compile=jit):
    """`sweep(..., compile=returning(select))`: the run compiled to return
    only `select(params, state, history)` (e.g. `lambda p, s, h:
    h["evaluation"]`).

    What the program does not return, XLA drops as dead code: it then
    computes none of the step losses and final params that nobody reads,
    and is the program of a hand-written run that returned only those
    values. That keeps such a run's numbers bit for bit when it moves onto
    `sweep`: a program with more outputs is fused differently, which moves
    the numbers at rounding level (and a chaotic run, such as SGD on noisy
    labels, amplifies that into its third digit).
    """
    return lambda run: compile(lambda *args: select(*run(*args)))


def standardized_digits():
    """scikit-learn's 8x8 digits split 80/20 by `data.split` with key 0, both
    parts standardised with the training part's statistics:
    `(x_train, t_train, x_test, t_test)`."""
    x, t = datasets.digits()
    (x_tr, t_tr), (x_te, t_te) = data.split(jax.random.key(0), x, t, (0.8, 0.2))
    stats = data.standardize_fit(x_tr)
    return data.standardize_apply(stats, x_tr), t_tr, data.standardize_apply(stats, x_te), t_te


def init_many(model, keys, in_shape, dtype=np.float32):
    """`(params, state)` of `model` for each key, stacked on a leading axis.

    One eager `init` per key: compiling the random kernels under `vmap`
    and `jit` costs seconds more than this loop on small networks.
    """
    inits = [model.init(k, in_shape, dtype)[1:] for k in keys]
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *inits)


def init_inside(model, in_shape):
    """`sweep`'s `draw` for seeds that start from an init of their own made
    inside the program: the seed's key split into an init key, for
    `model.init(init_key, in_shape)` (its params and state join the point),
    and the training key. `start=drawn_start` then starts from them."""

    def draw(key, point):
        init_key, train_key = jax.random.split(key)
        _, params, state = model.init(init_key, in_shape)
        return {"key": train_key, "params": params, "state": state}

    return draw


def drawn_start(point):
    """`sweep`'s `start` for the `params` and `state` that `draw` added to
    the point (`init_inside`, or a `draw` of the experiment's own)."""
    return point["params"], point["state"]


def stateless(model, in_shape):
    """The (leafless) non-gradient state of a model without batch norm, as
    `model.init` makes it, without running `init`: for params built by
    hand (zeros, the course's debug weights)."""
    state = jax.eval_shape(lambda k: model.init(k, in_shape)[2], jax.random.key(0))
    if jax.tree.leaves(state):
        raise ValueError("model: expected a model without non-gradient state (no batchnorm)")
    return state


def seed_stats(values, missing=None) -> dict:
    """Mean, standard deviation, min, max and count of per-seed values
    (`missing`: a sentinel value to leave out, e.g. -1 for "never")."""
    v = np.asarray(values, np.float64)
    if missing is not None:
        v = v[v != missing]
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "count": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "count": int(v.size),
    }


# The one convention for the spread over seeds in every figure: the mean and,
# around it, one standard error of the mean (std with ddof=1 over sqrt(seeds)).
# Three figures show another spread, and say so: linear_hidden_collapse's
# min..max bars (the claim is about the best seed), family_trees' median and
# 10th-90th percentiles (runs learn or do not: bimodal), vanishing_gradients'
# geometric mean and range (norms spanning orders of magnitude).
SPREAD = "mean ± standard error over seeds"


def standard_error(values, axis=0):
    """The standard error of the mean of `values` along `axis` (0 for one value)."""
    v = np.asarray(values, np.float64)
    n = v.shape[axis]
    return v.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(v.mean(axis=axis))


def seed_band(ax, x, curves, *, color, label=None, style="-", alpha=0.2, **plot_options):
    """Draw per-seed `curves` `(seeds, len(x))` as their mean and a band
    of one standard error (`SPREAD`)."""
    curves = np.asarray(curves, np.float64)
    mean, se = curves.mean(axis=0), standard_error(curves)
    ax.plot(x, mean, style, color=color, label=label, **plot_options)
    ax.fill_between(x, mean - se, mean + se, color=color, alpha=alpha, lw=0)


def seed_bar(ax, position, values, width, *, color, label=None, dots=True, **bar_options):
    """One bar at the mean of the per-seed `values`, an error bar of one
    standard error (`SPREAD`), and the seeds as dots."""
    values = np.asarray(values, np.float64)
    ax.bar(
        position,
        values.mean(),
        width,
        yerr=standard_error(values),
        capsize=4,
        color=color,
        label=label,
        **{"alpha": 0.85, **bar_options},
    )
    if dots:
        ax.plot(np.full(values.size, position), values, "k.", ms=4)


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_json(value):
    """Convert arrays and NumPy scalars (nested) to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, jax.Array | np.ndarray):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float):
        # 7 significant digits: float32 precision, and half the file size.
        return float(f"{value:.7g}") if np.isfinite(value) else str(value)
    if isinstance(value, Path | Mode):
        return str(value.value if isinstance(value, Mode) else value)
    return value


def as_stored(data: dict) -> dict:
    """`data` as `judge` and `draw` will read it back from JSON."""
    return json.loads(json.dumps(to_json(data), separators=(",", ":")))


def check_measured(name: str, data) -> dict:
    """`data` must be a dict with `settings` and `numbers` (both dicts)."""
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), dict) for k in ("settings", "numbers")
    ):
        raise TypeError(
            f"experiments.{name}.measure: expected a dict with dicts 'settings' and "
            f"'numbers', got {type(data).__name__}"
            + (f" with keys {sorted(data)}" if isinstance(data, dict) else "")
        )
    return data


# ----------------------------------------------------------------------- files


def _atomic_write(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; use the user's usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_record(path: Path) -> dict | None:
    """The record in `path` if this runner wrote it, else `None`."""
    try:
        record = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    return record if isinstance(record, dict) and record.get("generator") == GENERATOR else None


def check_writable(out: Path, name: str):
    """Refuse to replace a `NAME.json` that this runner did not write, so a
    user's own file of that name is never overwritten."""
    path = out / f"{name}.json"
    if path.exists() and read_record(path) is None:
        raise FileExistsError(
            f"out: {path} exists and was not written by python -m experiments; "
            "move it or choose another --out"
        )


def save_figure(figure, path: Path):
    """Write `figure` as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    _atomic_write(path, buffer.getvalue())


def record(name: str, claim: str, data: dict, verdict: Verdict, mode, seconds: float) -> dict:
    """The JSON record of one experiment: its measured `settings` and
    `numbers`, the verdict drawn from them, and how they were made."""
    return {
        "generator": GENERATOR,
        "name": name,
        "claim": claim,
        "verdict": verdict.text,
        "supported": bool(verdict.supported),
        "summary": to_json(verdict.summary),
        "mode": Mode(mode).value,
        "seconds": round(seconds, 2),
        "settings": to_json(data["settings"]),
        "numbers": to_json(data["numbers"]),
        "versions": {
            "jax": jax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "backend": jax.default_backend(),
        },
    }


def save(out: Path, rec: dict, figure=None) -> dict:
    """Write `NAME.json` (and `NAME.png` if there is a figure) atomically."""
    out.mkdir(parents=True, exist_ok=True)
    name = rec["name"]
    if figure is not None:
        save_figure(figure, out / f"{name}.png")
        rec = {**rec, "figure": f"{name}.png"}
    # compact: some experiments keep per-seed, per-epoch curves (megabytes indented)
    _atomic_write(out / f"{name}.json", json.dumps(rec, separators=(",", ":")).encode())
    return rec
