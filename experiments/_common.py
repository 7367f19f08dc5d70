"""What every experiment shares: its configuration, its outcome, and saving both.

An experiment is a module in this package with::

    NAME = "zero_init_symmetry"            # file stem of its outputs
    CLAIM = "Zero initialisation keeps every hidden unit identical ..."
    def run(config: Config) -> Outcome: ...

``run`` computes everything it reports in the same call, draws the figure
from those numbers, and returns them; the runner (``python -m experiments``)
writes ``NAME.png`` and ``NAME.json`` and prints the verdict line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np

GENERATOR = "purenet-experiments"


@dataclasses.dataclass(frozen=True)
class Config:
    """How to run: ``mode`` is ``"quick"`` or ``"full"``; ``seeds`` is the
    number of random seeds for claims that depend on randomness (``None``:
    the experiment's own default for the mode)."""

    mode: str = "quick"
    seeds: int | None = None
    out: Path = Path("results")

    def pick(self, quick, full):
        """``quick`` in quick mode, ``full`` in full mode."""
        return quick if self.mode == "quick" else full

    def num_seeds(self, quick: int, full: int) -> int:
        return self.seeds if self.seeds is not None else self.pick(quick, full)


@dataclasses.dataclass
class Outcome:
    """What an experiment found.

    Attributes:
      verdict: one line stating the claim's measured numbers, e.g.
        ``"zero init: 1 distinct hidden unit, accuracy 0.50; random: 1.00"``.
      supported: whether the numbers support the claim.
      numbers: JSON-serialisable numbers behind the figure and the verdict.
      settings: JSON-serialisable settings (sizes, learning rates, epochs, seeds).
      figure: a matplotlib figure drawn from ``numbers`` (or ``None``).
      summary: short numbers for the summary table (a few key: value pairs).
    """

    verdict: str
    supported: bool
    numbers: dict
    settings: dict
    figure: object = None
    summary: dict = dataclasses.field(default_factory=dict)


def seed_stats(values, missing=None) -> dict:
    """Mean, standard deviation, min, max and count of per-seed values
    (``missing``: a sentinel value to leave out, e.g. -1 for "never")."""
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
    if isinstance(value, Path):
        return str(value)
    return value


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


def check_writable(out: Path, name: str):
    """Refuse to replace a ``NAME.json`` that this runner did not write, so a
    user's own file of that name is never overwritten."""
    path = out / f"{name}.json"
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("generator") == GENERATOR
        except (ValueError, OSError, AttributeError):
            ours = False
        if not ours:
            raise FileExistsError(
                f"out: {path} exists and was not written by python -m experiments; "
                "move it or choose another --out"
            )


def save(name: str, claim: str, outcome: Outcome, config: Config, seconds: float) -> dict:
    """Write ``NAME.json`` (and ``NAME.png`` if there is a figure) atomically."""
    config.out.mkdir(parents=True, exist_ok=True)
    record = {
        "generator": GENERATOR,
        "name": name,
        "claim": claim,
        "verdict": outcome.verdict,
        "supported": bool(outcome.supported),
        "summary": to_json(outcome.summary),
        "mode": config.mode,
        "seconds": round(seconds, 2),
        "settings": to_json(outcome.settings),
        "numbers": to_json(outcome.numbers),
        "versions": {
            "jax": jax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "backend": jax.default_backend(),
        },
    }
    if outcome.figure is not None:
        import io

        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        outcome.figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(outcome.figure)
        _atomic_write(config.out / f"{name}.png", buffer.getvalue())
        record["figure"] = f"{name}.png"
    # compact: some experiments keep per-seed, per-epoch curves (megabytes indented)
    _atomic_write(config.out / f"{name}.json", json.dumps(record, separators=(",", ":")).encode())
    return record
