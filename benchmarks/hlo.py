"""What the compiler made of a jitted function: a summary of its optimized HLO.

`summarize(fn, *args)` compiles `jax.jit(fn)` for `args` and reads
`.lower(...).compile().as_text()`: the HLO after XLA's optimizations, as it
runs. It counts, in the entry computation (one line = one kernel launched by
XLA:CPU's thunk runtime, bitcasts aside):

* matrix products, split by who runs them: `ynn` (a `__ynn_fusion`, the
  YNNPACK kernels XLA:CPU uses for the dots it supports) or `xla` (a plain
  `dot` instruction, which XLA:CPU runs with Eigen, or a tiny dot XLA fused
  into a loop with elementwise work), with their shapes and contracting
  dimensions;
* `transpose` and `copy` instructions anywhere (a materialised transpose
  shows up as one of these);
* kernels (fusions and other instructions) in the entry computation;
* the entry computation layout (argument and result layouts).

Run `python -m benchmarks.hlo` to print the comparison of the hand-written
backprop with `jax.value_and_grad` for the gradient benchmark's shapes.
"""

from __future__ import annotations

import re

import jax

_DOT = re.compile(
    r"= (f\d+\[[\d,]*\])\{?[\d,]*\}? dot\((.*?)\), (lhs_contracting_dims=\{\d*\}), "
    r"(rhs_contracting_dims=\{\d*\})"
)


def compiled_text(fn, *args) -> str:
    """Optimized HLO text of `jax.jit(fn)` for `args`."""
    return jax.jit(fn).lower(*args).compile().as_text()


def _computations(text: str) -> dict[str, list[str]]:
    """Map computation name -> its instruction lines."""
    comps: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.endswith("{") and ("%" in line.split("(")[0]):
            current = line.split("(")[0].replace("ENTRY", "").strip().lstrip("%").strip()
            comps[current] = []
        elif line.startswith("}"):
            current = None
        elif current is not None and "=" in line:
            comps[current].append(re.sub(r", metadata=\{[^}]*\}", "", line.strip()))
    return comps


def _entry_name(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("ENTRY"):
            return line.split("(")[0].replace("ENTRY", "").strip().lstrip("%")
    raise ValueError("no ENTRY computation in HLO text")


def summarize(fn, *args) -> dict:
    """Counts of dots, transposes, copies and kernels in the compiled `fn`."""
    text = compiled_text(fn, *args)
    comps = _computations(text)
    entry = comps[_entry_name(text)]
    ynn_bodies = {
        m.group(1)
        for line in entry
        if '"__ynn_fusion"' in line
        for m in [re.search(r"calls=%([\w.\-]+)", line)]
        if m
    }
    dots = []
    for name, lines in comps.items():
        for line in lines:
            m = _DOT.search(line)
            if m:
                engine = "ynn" if name in ynn_bodies else "xla"
                dots.append(f"{engine} {m.group(1)} {m.group(3)} {m.group(4)}")
    kernels = [
        line
        for line in entry
        if not re.search(r" (parameter|constant|bitcast|tuple|get-tuple-element)\(", line)
    ]
    everything = [line for lines in comps.values() for line in lines]
    layout = re.search(r"entry_computation_layout=\{(.*?)\}, ", text)
    return {
        "dots": sorted(dots),
        "dots_ynn": sum(d.startswith("ynn") for d in dots),
        "dots_xla": sum(d.startswith("xla") for d in dots),
        "transposes": sum(" transpose(" in line for line in everything),
        "copies": sum(" copy(" in line for line in everything),
        "kernels": len(kernels),
        "entry_layout": layout.group(1) if layout else None,
    }


def loop_bodies(fn, *args) -> list[dict]:
    """Kernels of each `while` body in the compiled `fn` (a `lax.scan`
    compiles to one `while` in the entry; its body runs once per step).

    Per body: `kernels` (instruction lines that launch work: fusions,
    dots, copies, ...), `fusions` (kLoop), `ynn` (`__ynn_fusion`:
    YNNPACK dots and reductions), `dots` (plain `dot`), and
    `small_call`: True when XLA:CPU compiled the whole loop into one kernel
    (`xla_cpu_small_call`, the small-while-loop hoisting pass).
    """
    text = compiled_text(fn, *args)
    comps = _computations(text)
    small = "xla_cpu_small_call" in text
    out = []
    for line in (line for lines in comps.values() for line in lines):
        m = re.search(r" while\(.*body=%?([\w.\-]+)", line)
        if not m or m.group(1) not in comps:
            continue
        body = comps[m.group(1)]
        kernels = [
            b
            for b in body
            if not re.search(r" (parameter|constant|bitcast|tuple|get-tuple-element)\(", b)
        ]
        out.append(
            {
                "body": m.group(1),
                "kernels": len(kernels),
                "fusions": sum("kind=kLoop" in b for b in kernels),
                "ynn": sum('"__ynn_fusion"' in b for b in kernels),
                "dots": sum(" dot(" in b for b in kernels),
                "small_call": small,
            }
        )
    return out


def compare_gradients(problem) -> dict:
    """HLO summaries of the hand-written backprop and `jax.value_and_grad`
    of the objective, for one `benchmarks.models.Problem`."""
    import purenet

    hand = purenet.backprop(problem.model, problem.loss)
    auto = jax.value_and_grad(purenet.objective(problem.model, problem.loss))
    args = (problem.params, problem.x, problem.t)
    a, b = summarize(hand, *args), summarize(auto, *args)
    return {"hand": a, "jax_grad": b, "same_entry_layout": a["entry_layout"] == b["entry_layout"]}


def main() -> None:
    from benchmarks.gradient import SHAPES
    from benchmarks.models import problem

    for sizes, batch, loss in SHAPES:
        p = problem(sizes, batch, loss=loss)
        cmp = compare_gradients(p)
        print(f"== {p.name} ({loss}); same entry layout: {cmp['same_entry_layout']}")
        for who in ("hand", "jax_grad"):
            s = cmp[who]
            print(
                f"  {who:8}: {s['kernels']} kernels, dots {s['dots_ynn']} ynn + "
                f"{s['dots_xla']} xla, {s['transposes']} transposes, {s['copies']} copies"
            )
            for d in s["dots"]:
                print(f"            {d}")


if __name__ == "__main__":
    main()
