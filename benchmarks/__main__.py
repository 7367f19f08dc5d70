"""`python -m benchmarks [--full] [--only NAME ...] [--list]`

Runs the registered benchmarks (all default ones, or those named with
`--only`), writes `benchmarks/results.json` (merged with the results of
benchmarks not run this time) and regenerates the results part of
`benchmarks/README.md`. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from benchmarks import machine, registry, report

HERE = os.path.dirname(os.path.abspath(__file__))


def _command(argv: list[str]) -> str:
    return " ".join(["python -m benchmarks", *argv])


def run(
    names: list[str] | None = None,
    *,
    full: bool = False,
    scale: float = 1.0,
    json_path: str = os.path.join(HERE, "results.json"),
    readme_path: str | None = os.path.join(HERE, "README.md"),
    argv: list[str] | None = None,
    log=None,
) -> dict:
    """Run benchmarks, write the results file and the README's table.

    Args:
      names: benchmarks to run (default: every default benchmark).
      full: long mode.
      scale: multiplies repeat counts (tests use a small value).
      json_path, readme_path: outputs (`readme_path=None`: no README).
      argv: recorded as the reproducing command.
      log: progress printer (default: stderr).

    Returns:
      The merged results that were written.
    """
    if log is None:

        def log(msg):
            print(f"[benchmarks] {msg}", file=sys.stderr, flush=True)

    available = registry.load()
    if names is None:
        names = [n for n, b in available.items() if b.default]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {unknown}; known: {sorted(available)}")
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
    if readme_path is not None:
        report.update_readme(readme_path, merged)
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--full", action="store_true", help="longer runs, no extrapolation")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run this benchmark (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--json", default=os.path.join(HERE, "results.json"), help="results file")
    parser.add_argument(
        "--readme", default=os.path.join(HERE, "README.md"), help="README to update"
    )
    args = parser.parse_args(argv)
    if args.list:
        for name, b in registry.load().items():
            print(f"{name:18} {'' if b.default else '(only with --only) '}{b.summary}")
        return
    run(args.only, full=args.full, json_path=args.json, readme_path=args.readme)


if __name__ == "__main__":
    main()
