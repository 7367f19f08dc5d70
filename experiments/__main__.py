"""Run the experiments: `python -m experiments [NAME ...] [--quick | --full | --smoke]
[--seeds N] [--jobs N] [--out DIR]`, or redraw them: `python -m experiments --replot DIR
[NAME ...]`.

Each experiment writes `NAME.json` (its settings, numbers and verdict) and
`NAME.png` into `--out` (default `results/`) and prints a one-line
verdict; the run ends by writing `README.md` there, a table of every claim
with its measured numbers. `--replot DIR` trains nothing: it judges and
draws again from the JSON files in `DIR` (after a change to a figure or a
verdict's wording) and rewrites the PNGs, the verdicts and the summary.

Several experiments run in `--jobs` worker processes at once (default: 2,
or 1 on a one-core machine), each worker with one XLA thread: the networks
are small, so two single-threaded programs side by side use two cores better
than one program's threads do. A quick run compiles at XLA's optimisation
level 1 with XLA:CPU's elemental emitters (`_parallel.QUICK_XLA_FLAGS`: its
programs are small, and optimising them took longer than running them); an
`XLA_FLAGS` that names either flag wins. The longest expected experiment starts first
(its `QUICK_SECONDS`, or its time in `--out` from an earlier run). While
they run, a terminal shows one live line: each running experiment's units
done (`experiments._common.progress`), its time so far and an estimate
of the time left; a log (output not a terminal) gets one line when an
experiment starts and one with its verdict when it ends.
The skeleton every experiment follows is described in `experiments/_common.py`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from experiments import _common, _parallel
from experiments._common import Mode

# One line per experiment, in the order of the notes: checking gradients
# first, then why the recipe is what it is, then the tools, then the papers.
EXPERIMENTS = [
    "gradient_check",
    "zero_init_symmetry",
    "sigmoid_mse_vs_cross_entropy",
    "linear_hidden_collapse",
    "output_heads",
    "batch_sizes",
    "gradient_noise_scale",
    "optimizers",
    "vanishing_gradients",
    "regularization",
    "rumelhart_1986",
    "family_trees",
    "lenet_digits",
    "mnist1d",
    "feedback_alignment",
    "feedback_rules",
    "attention_vs_recurrence",
    "long_range_memory",
    "char_gpt",
    "dp_sgd",
]


def available() -> list[str]:
    """The registered experiments whose module exists."""
    here = Path(__file__).parent
    return [name for name in EXPERIMENTS if (here / f"{name}.py").exists()]


def load(name: str):
    """The experiment module `name`, checked to follow the skeleton."""
    module = importlib.import_module(f"experiments.{name}")
    missing = [a for a in ("NAME", "CLAIM", "measure", "judge", "draw") if not hasattr(module, a)]
    if missing:
        raise TypeError(
            f"experiments.{name}: missing {', '.join(missing)} (see experiments/_common.py)"
        )
    return module


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "names", nargs="*", help=f"experiments to run (default: all): {', '.join(EXPERIMENTS)}"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const=Mode.QUICK,
        help="quick settings (default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const=Mode.FULL,
        help="the full settings behind the README's figures",
    )
    mode.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const=Mode.SMOKE,
        help="tiny settings that run the pipeline in seconds (for tests; the numbers mean nothing)",
    )
    mode.add_argument(
        "--replot",
        metavar="DIR",
        type=Path,
        default=None,
        help="train nothing: judge and draw again from DIR/NAME.json, rewrite DIR's figures, "
        "verdicts and summary",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="number of random seeds (default: per experiment)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="experiments run at once, each in its own process with one XLA thread "
        "(default: 2, or 1 on a one-core machine; 1 runs them one after the other here)",
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
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs: expected a positive integer, got {args.jobs}")
    if args.replot is not None:
        if args.seeds is not None:
            parser.error("--seeds: not with --replot (replotting trains nothing)")
        if not args.replot.is_dir():
            parser.error(f"--replot: expected a folder of results, got {args.replot}")
    args.mode = args.mode or Mode.QUICK
    return args


def write_summary(out: Path, mode: str | None = None):
    """`out/README.md`: one row per experiment found in `out`."""
    rows = []
    for name in EXPERIMENTS:
        record = _common.read_record(out / f"{name}.json")
        if record is not None:
            rows.append(record)
    said = f"{mode} mode for this run; each row says its own" if mode else "each row says its mode"
    lines = [
        "# Experiment results",
        "",
        f"Written by `python -m experiments` ({said}).",
        "",
        "| experiment | claim | supported | measured | mode | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        figure = f"[{r['name']}]({r['figure']})" if r.get("figure") else r["name"]
        lines.append(
            f"| {figure} | {_cell(r['claim'])} | {'yes' if r['supported'] else '**no**'} | "
            f"{_cell(r['verdict'])} | {r['mode']} | {r['seconds']} |"
        )
    for r in rows:  # every figure shown, under a heading the table links to
        if r.get("figure"):
            lines += ["", f"## {r['name']}", "", f"![{r['name']}]({r['figure']})"]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _cell(text: str) -> str:
    """`text` for a Markdown table cell: a `|` in it would end the cell."""
    return text.replace("|", "\\|")


def run_one(name: str, mode: Mode, seeds: int | None, out: Path) -> dict:
    """Measure, judge, draw and save one experiment; return its record."""
    module = load(name)
    started = time.perf_counter()
    data = _common.check_measured(name, module.measure(mode, seeds))
    seconds = time.perf_counter() - started
    data = _common.as_stored(data)  # judge and draw read what the JSON holds
    verdict = module.judge(data)
    record = _common.record(name, module.CLAIM, data, verdict, mode, seconds)
    return _common.save(out, record, module.draw(data))


def replot_one(name: str, out: Path) -> dict | None:
    """Judge and draw `out/NAME.json` again; `None` if there is none of ours."""
    old = _common.read_record(out / f"{name}.json")
    if old is None:
        return None
    module = load(name)
    data = {"settings": old["settings"], "numbers": old["numbers"]}
    verdict = module.judge(data)
    record = _common.record(name, module.CLAIM, data, verdict, old["mode"], old["seconds"])
    record["versions"] = old.get("versions", record["versions"])  # those that measured
    return _common.save(out, record, module.draw(data))


def _print(record: dict, seconds: float | None = None):
    print(_parallel.line(record, seconds), flush=True)


def expected_seconds(name: str, mode: Mode, out: Path) -> float | None:
    """How long `name` is expected to take: its time in `out` from an
    earlier run in this mode, else (quick mode) the module's `QUICK_SECONDS`."""
    old = _common.read_record(out / f"{name}.json")
    if old is not None and old.get("mode") == mode.value:
        return float(old["seconds"])
    if mode is Mode.QUICK:
        return getattr(load(name), "QUICK_SECONDS", None)
    return None


def replot(out: Path, names: list[str]) -> int:
    print(f"purenet experiments: replotting {out}/ from its JSON (no training)", flush=True)
    done = []
    for name in names:
        record = replot_one(name, out)
        if record is not None:
            _print(record)
            done.append(name)
    if not done:
        print(f"no experiment results (NAME.json written by this runner) in {out}/", flush=True)
        return 1
    write_summary(out)
    print(f"redrew {len(done)} experiment(s); summary in {out / 'README.md'}", flush=True)
    return 0


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.names or available()
    if args.replot is not None:
        return replot(args.replot, names)
    for name in names:  # before any work: never overwrite a file we did not write
        _common.check_writable(args.out, name)
    mode = args.mode
    jobs = args.jobs or min(2, os.cpu_count() or 1)
    jobs = min(jobs, len(names))
    expected = {name: expected_seconds(name, mode, args.out) for name in names}
    print(
        f"purenet experiments ({mode.value}, {jobs} at once): {', '.join(names)} -> {args.out}/",
        flush=True,
    )
    started_all = time.perf_counter()
    display = _parallel.Display(len(names))
    # Quick mode compiles with QUICK_XLA_FLAGS (see there); full runs at XLA's defaults.
    quick_flags = _parallel.QUICK_XLA_FLAGS if mode is Mode.QUICK else ""
    try:
        with _parallel.xla_flags(quick_flags):
            if jobs == 1:
                records = _parallel.run_here(names, mode, args.seeds, args.out, display, expected)
            else:  # the longest first, so that the last to finish is a short one
                order = sorted(names, key=lambda n: -(expected[n] or 0.0))
                records = _parallel.run_workers(
                    order, (mode, args.seeds, args.out), display, expected, jobs
                )
    finally:
        display.close()
    write_summary(args.out, mode.value)
    total = time.perf_counter() - started_all
    print(f"done in {total:.1f}s; summary in {args.out / 'README.md'}", flush=True)
    unsupported = [name for name in names if not records[name]["supported"]]
    if unsupported:
        print(f"claims not supported by this run's numbers: {', '.join(unsupported)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
