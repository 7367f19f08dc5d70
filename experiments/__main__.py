"""Run the experiments: ``python -m experiments [NAME ...] [--quick | --full]
[--seeds N] [--out DIR]``.

Each experiment writes ``NAME.png`` and ``NAME.json`` into ``--out``
(default ``results/``) and prints a one-line verdict; the run ends by writing
``README.md`` there, a table of every claim with its measured numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from experiments import _common

# In the order of the notes: checking gradients first, then why the recipe is
# what it is, then the tools, then the 1986 paper.
EXPERIMENTS = [
    "gradient_check",
    "zero_init_symmetry",
    "sigmoid_mse_vs_cross_entropy",
    "linear_hidden_collapse",
    "output_heads",
    "batch_sizes",
    "optimizers",
    "vanishing_gradients",
    "regularization",
    "rumelhart_1986",
]


def available() -> list[str]:
    """The experiments whose module exists (all of them, once written)."""
    here = Path(__file__).parent
    return [name for name in EXPERIMENTS if (here / f"{name}.py").exists()]


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "names", nargs="*", help=f"experiments to run (default: all): {', '.join(EXPERIMENTS)}"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="quick settings (default)"
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the full settings behind the README's figures",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of random seeds (default: per experiment)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="output folder (default: results/)"
    )
    args = parser.parse_args(argv)
    known = available()
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(
            f"unknown experiment(s) {', '.join(unknown)}; expected some of: {', '.join(known)}"
        )
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds: expected a positive integer, got {args.seeds}")
    return args


def write_summary(out: Path, mode: str):
    """``out/README.md``: one row per experiment found in ``out``."""
    rows = []
    for name in EXPERIMENTS:
        path = out / f"{name}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("generator") == _common.GENERATOR:
                rows.append(record)
    lines = [
        "# Experiment results",
        "",
        f"Written by `python -m experiments` ({mode} mode for this run; each row says its own).",
        "",
        "| experiment | claim | supported | measured | mode | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        figure = f"[{r['name']}]({r['figure']})" if r.get("figure") else r["name"]
        lines.append(
            f"| {figure} | {r['claim']} | {'yes' if r['supported'] else '**no**'} | "
            f"{r['verdict']} | {r['mode']} | {r['seconds']} |"
        )
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    config = _common.Config(mode=args.mode or "quick", seeds=args.seeds, out=args.out)
    names = args.names or available()
    for name in names:  # before any work: never overwrite a file we did not write
        _common.check_writable(config.out, name)
    print(f"purenet experiments ({config.mode}): {', '.join(names)} -> {config.out}/", flush=True)
    started_all = time.perf_counter()
    unsupported = []
    for name in names:
        module = importlib.import_module(f"experiments.{name}")
        started = time.perf_counter()
        outcome = module.run(config)
        seconds = time.perf_counter() - started
        _common.save(name, module.CLAIM, outcome, config, seconds)
        mark = "ok " if outcome.supported else "NO "
        print(f"[{mark}] {name} ({seconds:.1f}s): {outcome.verdict}", flush=True)
        if not outcome.supported:
            unsupported.append(name)
    write_summary(config.out, config.mode)
    total = time.perf_counter() - started_all
    print(f"done in {total:.1f}s; summary in {config.out / 'README.md'}", flush=True)
    if unsupported:
        print(f"claims not supported by this run's numbers: {', '.join(unsupported)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
