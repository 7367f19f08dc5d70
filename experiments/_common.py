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
over seeds and hyperparameters (learning rates, penalty strengths: they are
traced values), and jitted once per architecture (`jit`). An
experiment that trains otherwise says why in its docstring (gradient_check
trains nothing; optimizers steps on analytic 2-D surfaces, which are not
networks; batch_sizes times single epochs). `make_train(...,
evaluate=...)` records a probe after every epoch; to evaluate every `k`
epochs, scan `make_train(..., k)` (regularization). A full-batch run is
`make_train(model, loss, opt, m, m, epochs)`: one step per epoch. Pass the
`state` that `model.init` returns (`init_many`; `stateless` for
params built by hand).

**Modes** (`Mode`) are explicit. `Mode.QUICK` is the default of
`python -m experiments` (about two minutes for all experiments on two
CPU cores); `Mode.FULL` is behind the README's figures; `Mode.SMOKE` is
for the tests: tiny sizes that run the whole pipeline (measure, JSON,
judge, draw) in seconds, whose numbers support nothing. An experiment
chooses its sizes with `pick` (`pick(mode, smoke=3, quick=40,
full=150)`): every mode named at the one place a size is chosen, never a
mode compared as a string.

**Seeds.** `seeds` is the `--seeds` option (`None`: the experiment's
default for the mode, `num_seeds`); `settings["seeds"]` records the
number used.

Adding an experiment: write `experiments/NAME.py` with the four names
above, add one line to `EXPERIMENTS` in `experiments/__main__.py`, and
add `NAME` to a smoke test's list (`tests/test_experiments_*.py`).
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


# --------------------------------------------------------------------- helpers


def jit(fn):
    """`jax.jit` for an experiment's vmapped training run.

    The runs are many small networks: XLA's CPU backend spends seconds
    optimising code that then runs in milliseconds, so compile at backend
    optimisation level 0 (same numbers; several times quicker to compile).
    """
    return jax.jit(fn, compiler_options={"xla_backend_optimization_level": 0})


def init_many(model, keys, in_shape, dtype=np.float32):
    """`(params, state)` of `model` for each key, stacked on a leading axis.

    One eager `init` per key: compiling the random kernels under `vmap`
    and `jit` costs seconds more than this loop on small networks.
    """
    inits = [model.init(k, in_shape, dtype)[1:] for k in keys]
    return jax.tree.map(lambda *a: np.stack([np.asarray(x) for x in a]), *inits)


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
