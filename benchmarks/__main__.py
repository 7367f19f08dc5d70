"""`python -m benchmarks [--full] [--only NAME ...] [--out DIR | --publish] [--list]`

Runs the registered benchmarks (all default ones, or those named with
`--only`) and prints their tables. A run writes `results.json` (merged with
the results of benchmarks not run this time) and `README.md` (the tables)
into `--out` (default `benchmarks-out/`, which git ignores), so a run on
another machine leaves the checkout alone. `--publish` writes the
published figures instead: `benchmarks/results.json` and the generated part
of `benchmarks/README.md`. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import machine, registry, report

HERE = os.path.dirname(os.path.abspath(__file__))
# The published figures, rewritten only by `--publish`.
PUBLISHED_JSON = os.path.join(HERE, "results.json")
PUBLISHED_README = os.path.join(HERE, "README.md")
DEFAULT_OUT = "benchmarks-out"


def _command(argv: list[str]) -> str:
    return " ".join(["python -m benchmarks", *argv])


def run(
    names: list[str] | None = None,
    *,
    full: bool = False,
    scale: float = 1.0,
    out: str = DEFAULT_OUT,
    publish: bool = False,
    argv: list[str] | None = None,
    log=None,
    show=None,
) -> dict:
    """Run benchmarks, write the results file and the tables, print the tables.

    Args:
      names: benchmarks to run (default: every default benchmark).
      full: long mode.
      scale: multiplies repeat counts (tests use a small value).
      out: the folder of `results.json` and `README.md` (created; its
        `results.json` from an earlier run is merged with this one's).
      publish: write the published `benchmarks/results.json` and the
        generated part of `benchmarks/README.md` instead of `out`.
      argv: recorded as the reproducing command.
      log: progress printer (default: stderr).
      show: printer of the tables at the end (default: stdout).

    Returns:
      The merged results that were written.
    """
    if log is None:

        def log(msg):
            print(f"[benchmarks] {msg}", file=sys.stderr, flush=True)

    if show is None:
        show = print

    available = registry.load()
    if names is None:
        names = [n for n, b in available.items() if b.default]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {unknown}; known: {sorted(available)}")
    if publish:
        json_path, readme_path = PUBLISHED_JSON, PUBLISHED_README
    else:
        os.makedirs(out, exist_ok=True)
        json_path, readme_path = os.path.join(out, "results.json"), os.path.join(out, "README.md")
    config = registry.Config(full=full, scale=scale, log=log)
    info = machine.describe()
    new = {}
    for name in names:
        t0 = time.perf_counter()
        result = available[name].run(config)
        result["seconds"] = time.perf_counter() - t0
        result["mode"] = "full" if full else "quick"
        cmd_argv = ["--only", name] + (["--full"] if full else [])
        result["command"] = _command(cmd_argv if argv is None else argv)
        new[name] = result
        log(f"{name}: {result['seconds']:.1f} s")
    info["load_average_end"] = machine.load_average()
    merged = report.merge(report.load(json_path), info, new, order=list(available))
    report.save(json_path, merged)
    report.update_readme(readme_path, merged)
    ran = {"benchmarks": {n: merged["benchmarks"][n] for n in names}}
    show(report.render(ran))
    log(f"wrote {json_path} and {readme_path}")
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true", help="longer runs, no extrapolation")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run this benchmark (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--out",
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"folder of results.json and README.md (default: {DEFAULT_OUT}/)",
    )
    where.add_argument(
        "--publish",
        action="store_true",
        help="rewrite the published benchmarks/results.json and benchmarks/README.md",
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, b in registry.load().items():
            print(f"{name:18} {'' if b.default else '(only with --only) '}{b.summary}")
        return
    run(args.only, full=args.full, out=args.out, publish=args.publish)


if __name__ == "__main__":
    main()
