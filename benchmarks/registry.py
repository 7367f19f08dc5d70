"""The registry of benchmarks: a name -> function table that `python -m
benchmarks` runs.

A benchmark is a function `run(config: Config) -> dict` registered with
`register`. It returns a JSON-serialisable result:

```python
{
  "description": "what is measured and how",
  "tables": [{"title": str, "headers": [str, ...], "rows": [[str, ...], ...]}],
  "notes": [str, ...],          # optional: one paragraph each
  "data": {...},                # raw numbers (seconds, ratios, counts)
}
```

The runner adds the command that reproduces it, the mode, the wall time and
the date. Adding a benchmark is writing such a function in a module of this
package and adding the module to `MODULES` (one line); a listed module
whose file does not exist yet is skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Config:
    """How hard to try.

    Attributes:
      full: `--full`: longer runs, and the runs that quick mode extrapolates.
      scale: multiplies every repeat count (a smoke test uses a tiny value;
        counts never drop below their minimum of 2 or 3).
      log: progress printer (`print` to stderr by default).
    """

    full: bool = False
    scale: float = 1.0
    log: Callable[[str], None] = print

    def repeats(self, quick: int, full: int, minimum: int = 3) -> int:
        """A repeat count for this mode, scaled."""
        return max(minimum, int(round((full if self.full else quick) * self.scale)))


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    run: Callable[[Config], dict]
    summary: str
    default: bool  # run by a plain ``python -m benchmarks``


BENCHMARKS: dict[str, Benchmark] = {}

# Modules whose import registers benchmarks, in the order they run.
MODULES = (
    "benchmarks.gradient",
    "benchmarks.gradcheck_speed",
    "benchmarks.train_epoch",
    "benchmarks.gflops",
    "benchmarks.tiny",
    "benchmarks.conv",
    "benchmarks.recurrent",
    "benchmarks.attention",
    "benchmarks.attention_memory",
    "benchmarks.gpt",
    "benchmarks.per_example",
)


def register(name: str, summary: str, *, default: bool = True):
    """Decorator: add `run(config) -> dict` to `BENCHMARKS` as `name`."""

    def wrap(fn):
        if name in BENCHMARKS:
            raise ValueError(f"name: benchmark {name!r} is registered twice")
        BENCHMARKS[name] = Benchmark(name, fn, summary, default)
        return fn

    return wrap


def load() -> dict[str, Benchmark]:
    """Import every benchmark module; return the registry."""
    for module in MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return BENCHMARKS
