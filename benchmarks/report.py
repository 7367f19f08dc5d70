"""Writing results: `results.json` and the generated table in `README.md`.

`results.json` holds `{"machine": {...}, "benchmarks": {name: result}}`.
A run with `--only` merges its results into the existing file (the other
benchmarks keep their last results, each with its own date and machine).

The README keeps its hand-written text; only the part between the two marker
lines below is regenerated, from the whole `results.json`.
"""

from __future__ import annotations

import json
import os

BEGIN = "<!-- BEGIN GENERATED RESULTS: python -m benchmarks --publish rewrites this part -->"
END = "<!-- END GENERATED RESULTS -->"


def load(path: str) -> dict:
    """The results file, or an empty one."""
    if not os.path.exists(path):
        return {"benchmarks": {}}
    with open(path) as f:
        return json.load(f)


def save(path: str, results: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def merge(old: dict, machine: dict, new: dict[str, dict], order=()) -> dict:
    """`old` with the benchmarks in `new` replaced; each result records the
    machine it ran on. Benchmarks are listed in `order` (registry order),
    unknown names last."""
    benchmarks = dict(old.get("benchmarks", {}))
    for name, result in new.items():
        benchmarks[name] = {**result, "machine": machine}
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(benchmarks, key=lambda n: rank.get(n, len(rank)))
    return {"machine": machine, "benchmarks": {n: benchmarks[n] for n in ordered}}


def _table(table: dict) -> list[str]:
    headers = table["headers"]
    lines = [f"**{table['title']}**", ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    for row in table["rows"]:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    lines.append("")
    return lines


def _machine_line(m: dict) -> str:
    load = m.get("load_average")
    flags = ", ".join(m.get("cpu_flags", []))
    return (
        f"{m['cpu']} ({flags}), {m['usable_cores']} usable cores of {m['cores']}; "
        f"jax {m['jax']}, jaxlib {m['jaxlib']}, numpy {m['numpy']}, Python {m['python']}, "
        f"backend {m['backend']}; {m['date']}"
        + (f"; load average at start {load[0]}" if load else "")
    )


def render(results: dict) -> str:
    """Markdown for every benchmark in `results`."""
    lines = []
    for name, r in results["benchmarks"].items():
        lines.append(f"### `{name}`")
        lines.append("")
        lines.append(r["description"].replace("``", "`"))
        lines.append("")
        lines.append(
            f"Command: `{r['command']}` ({r['mode']} mode, {r['seconds']:.0f} s). "
            f"Machine: {_machine_line(r['machine'])}."
        )
        lines.append("")
        for table in r["tables"]:
            lines += _table(table)
        for note in r.get("notes", []):
            lines.append(note)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def update_readme(path: str, results: dict) -> None:
    """Replace the generated part of the README at `path` (create the file,
    with just that part, if it does not exist)."""
    block = f"{BEGIN}\n\n{render(results)}\n{END}"
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
