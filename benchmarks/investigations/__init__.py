"""One-off investigations: each answered one question about purenet's speed.

They are not part of `python -m benchmarks` (nothing here is compared run
to run); each still runs on its own, `python -m benchmarks.investigations.NAME`,
and `benchmarks/README.md` says what question it answered and the answer:

* `donation`: does `donate_argnums` speed up a training step on CPU?
* `variants`: does another way of writing the hand-written gradient beat
  `jax.grad`?
* `tiny_profile`: where do 1,000 vmapped XOR networks spend their time?
* `conv_profile`: what bounds a LeNet-5 step against PyTorch?

`donation` and `variants` are written as benchmarks (a `run(config) ->
dict` in the format of `benchmarks.registry`); `main` runs one and
prints its tables as Markdown instead of writing `results.json`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from benchmarks import report
from benchmarks.registry import Config


def main(run: Callable[[Config], dict], prog: str, argv: list[str] | None = None) -> dict:
    """Run `run` (a benchmark-style function) from the command line; print its result.

    Args:
      run: `run(config) -> dict`, a result in the format of `benchmarks.registry`.
      prog: the command shown in `--help`.
      argv: command-line arguments (default: `sys.argv[1:]`): `--full` for the
        long mode, `--scale S` to multiply repeat counts (`--scale 0.01`: a smoke run).

    Returns:
      The result `run` returned.
    """
    doc = sys.modules[run.__module__].__doc__ or ""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="longer runs")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply repeat counts (0.01: a smoke run)"
    )
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale: expected a positive number, got {args.scale}")

    def log(msg):
        print(f"[{prog}] {msg}", file=sys.stderr, flush=True)

    result = run(Config(full=args.full, scale=args.scale, log=log))
    print(result["description"].replace("``", "`"), end="\n\n")
    for table in result["tables"]:
        print("\n".join(report._table(table)))
    for note in result.get("notes", []):
        print(note, end="\n\n")
    return result
