"""Write the published results into the README and the docs, from a run's JSON.

`python -m experiments.readme [RESULTS]` (default `docs/results`) reads
`RESULTS/NAME.json` for every experiment registered in `EXPERIMENTS` and
rewrites two generated parts, each between its two markers:

- in `README.md`, between `<!-- BEGIN CLAIMS -->` and `<!-- END CLAIMS -->`:
  the claims at a glance, one table row per experiment (its claim, what was
  measured, the verdict, and a link to its section of the results page);
- in `RESULTS/index.md` (the docs site's results page), between
  `<!-- BEGIN EXPERIMENTS -->` and `<!-- END EXPERIMENTS -->`: a section per
  experiment with its claim, measured verdict, figure and the command that
  regenerates it.

A registered experiment without a JSON yet gets its row and its section,
saying it is not yet published (its claim read from its source). Numbers come
only from the JSON files, which `python -m experiments NAME --full --out
docs/results` writes; everything outside the markers is written by hand and
kept.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

from experiments.__main__ import EXPERIMENTS

CLAIMS = ("<!-- BEGIN CLAIMS -->", "<!-- END CLAIMS -->")
SECTIONS = ("<!-- BEGIN EXPERIMENTS -->", "<!-- END EXPERIMENTS -->")
PAGE = "index.md"  # the results page, inside the results folder
UNPUBLISHED = "not yet published"


def _cell(text: str) -> str:
    """`text` on one line for a Markdown table cell (a `|` would end the cell)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def source_claim(name: str) -> str:
    """`CLAIM` of `experiments/NAME.py`, read without importing it ("" if none)."""
    source = Path(__file__).resolve().parent / f"{name}.py"
    if not source.exists():
        return ""
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CLAIM" for t in node.targets
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return ""
            return value if isinstance(value, str) else ""
    return ""


def records(results: Path) -> list[tuple[str, dict | None]]:
    """Every registered experiment, in the registry's order, with its JSON
    record from `results` (None where it has none yet)."""
    out = []
    for name in EXPERIMENTS:
        path = results / f"{name}.json"
        out.append((name, json.loads(path.read_text()) if path.exists() else None))
    return out


def _status(record: dict) -> str:
    return "supported" if record["supported"] else "**not supported**"


def claims_table(results: Path) -> str:
    """The README's table: one row per registered experiment."""
    page = f"{results.as_posix()}/{PAGE}"
    lines = [
        CLAIMS[0],
        "",
        "| experiment | claim | measured | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for name, r in records(results):
        link = f"[`{name}`]({page}#{name})"
        if r is None:
            claim = _cell(source_claim(name))
            lines.append(f"| {link} | {claim} | - | {UNPUBLISHED} |")
            continue
        lines.append(
            f"| {link} | {_cell(r['claim'])} | {_cell(r['verdict'])} | "
            f"{_status(r)} ({r['mode']} run) |"
        )
    lines += ["", CLAIMS[1]]
    return "\n".join(lines)


def sections(results: Path) -> str:
    """The results page's part: a section per registered experiment."""
    lines = [SECTIONS[0], ""]
    for name, r in records(results):
        lines += [f"## {name}", ""]
        if r is None:
            lines += [
                f"*Claim:* {source_claim(name)}",
                "",
                f"*Not yet published:* `python -m experiments {name} --full --out "
                f"{results.as_posix()}` runs it, then `python -m experiments.readme "
                f"{results.as_posix()}` adds it here.",
                "",
            ]
            continue
        lines += [
            f"*Claim:* {r['claim']}",
            "",
            f"*Measured ({r['mode']} run, {_status(r)}):* {r['verdict']}",
            "",
        ]
        if r.get("figure"):
            lines += [f"![{name}]({r['figure']})", ""]
        lines += [
            f"Regenerate: `python -m experiments {name} --{r['mode']}` "
            f"({r['seconds']:.0f} s here; numbers in `{results.as_posix()}/{name}.json`).",
            "",
        ]
    lines.append(SECTIONS[1])
    return "\n".join(lines)


def splice(text: str, markers: tuple[str, str], body: str, where: str) -> str:
    """`text` with its part between `markers` (markers included) replaced by `body`."""
    begin, end = markers
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"{where}: expected the markers {begin} and {end}, once each, in order")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return head + body + tail


def main(argv) -> int:
    results = Path(argv[0] if argv else "docs/results")
    if not results.is_dir():
        raise SystemExit(f"results: expected a folder of experiment JSON files, got {results}")
    readme, page = Path("README.md"), results / PAGE
    new_readme = splice(readme.read_text(), CLAIMS, claims_table(results), str(readme))
    new_page = splice(page.read_text(), SECTIONS, sections(results), str(page))
    readme.write_text(new_readme)
    page.write_text(new_page)
    published = sum(r is not None for _, r in records(results))
    print(f"wrote {readme} and {page}: {published} of {len(EXPERIMENTS)} experiments published")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
