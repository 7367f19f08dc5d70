"""Rewrite the experiments section of the project's README from a run's JSON.

`python -m experiments.readme docs/results` replaces the lines between
`<!-- BEGIN EXPERIMENTS -->` and `<!-- END EXPERIMENTS -->` in
`README.md` with each experiment's claim, measured verdict, figure and the
command that regenerates it. Numbers come only from the JSON files, which
`python -m experiments --full --out docs/results` writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from experiments.__main__ import EXPERIMENTS

BEGIN, END = "<!-- BEGIN EXPERIMENTS -->", "<!-- END EXPERIMENTS -->"


def section(results: Path) -> str:
    lines = [BEGIN, ""]
    for name in EXPERIMENTS:
        path = results / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        status = "supported" if r["supported"] else "**not supported**"
        lines += [
            f"### {name}",
            "",
            f"*Claim:* {r['claim']}",
            "",
            f"*Measured ({r['mode']} run, {status}):* {r['verdict']}",
            "",
            f"![{name}]({results.as_posix()}/{r['figure']})" if r.get("figure") else "",
            "",
            f"Regenerate: `python -m experiments {name} --{r['mode']}` "
            f"({r['seconds']:.0f} s here; numbers in `{results.as_posix()}/{name}.json`).",
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def main(argv) -> int:
    results = Path(argv[0] if argv else "docs/results")
    readme = Path("README.md")
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md: expected the markers {BEGIN} and {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + section(results) + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
