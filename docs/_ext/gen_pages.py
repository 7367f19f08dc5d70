"""A MkDocs hook that writes the pages which must follow the code, not a hand.

- ``api/<module>.md``: one API reference page per public module of purenet
  (found by walking the package, so a new module gets its page), rendering
  exactly the module's public names: its ``__all__`` where it has one, else
  every name it defines without a leading underscore. Names that a package
  only re-exports (``purenet.backprop``, ``purenet.layers.dense``) are listed
  there with a link to the page of their home module, where they are
  documented once. A name that is both a submodule and a function the
  package imports from it (``purenet.models.gpt``) is the function: that is
  what ``purenet.models.gpt`` is once the package is imported.
- ``api/index.md``: every public name with the one-line summary of its
  docstring, module by module (as optax's API page).

The pages come in the order of ``ORDER`` below, the module map of DESIGN.md
(lower modules first); a module missing from it goes at the end of its
package's group (and the build says so, as information).
- The list of experiments in ``guides/experiments.md`` (the line
  ``<!-- experiments -->``), read from the registry ``EXPERIMENTS`` of
  ``experiments/__main__.py`` and each experiment's ``CLAIM``.

The "API reference" section of the navigation in mkdocs.yml is replaced by
the generated pages. Everything is read statically (griffe for purenet, ``ast``
for the experiments): the build imports neither JAX nor matplotlib.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import griffe
from mkdocs.structure.files import File

PACKAGE = "purenet"
ROOT = Path(__file__).resolve().parents[2]
API_SECTION = "API reference"
EXPERIMENTS_MARKER = "<!-- experiments -->"

# The API pages' order: DESIGN.md's module map ("Modules (the arrows point one
# way...)"), lower modules first, each package followed by its modules. The one
# place that order is written; a name here whose module does not exist (yet) is
# skipped.
ORDER = [
    "purenet",
    "purenet.params",
    "purenet.activations",
    "purenet.losses",
    "purenet.layers",
    "purenet.layers.core",
    "purenet.layers.checking",
    "purenet.layers.normalization",
    "purenet.layers.dropout",
    "purenet.layers.conv",
    "purenet.layers.pooling",
    "purenet.layers.recurrent",
    "purenet.layers.attention",
    "purenet.layers.sharing",
    "purenet.layers.per_example_rules",
    "purenet.models",
    "purenet.models.gpt",
    "purenet.models.hf",
    "purenet.models.generate",
    "purenet.cost",
    "purenet.per_example",
    "purenet.privacy",
    "purenet.feedback",
    "purenet.gradcheck",
    "purenet.testing",
    "purenet.testing.strategies",
    "purenet.testing.plugin",
    "purenet.interop",
    "purenet.optim",
    "purenet.transforms",
    "purenet.schedules",
    "purenet.clipping",
    "purenet.train",
    "purenet.metrics",
    "purenet.checkpoint",
    "purenet.parallel",
    "purenet.data",
    "purenet.datasets",
]

log = logging.getLogger(f"mkdocs.hooks.{Path(__file__).stem}")


@dataclass
class Name:
    name: str  # as exported by the module
    home: str  # the full path of the object it names, where it is documented
    kind: str  # "module", "class", "function", "attribute"
    summary: str
    defined_here: bool


@dataclass
class Module:
    path: str
    page: str  # src_uri of its API page
    names: list[Name]


def page_of(path: str) -> str:
    return "api/purenet.md" if path == PACKAGE else f"api/{path.removeprefix(PACKAGE + '.')}.md"


def cell(text: str) -> str:
    """``text`` for a Markdown table cell, where a bare ``|`` would end the cell.

    Outside code and math it is escaped (``\\|``); inside a code span it is kept
    (Python-Markdown's tables skip code spans, and would show the backslash); inside
    ``$...$`` it becomes TeX's ``\\vert`` (an escaped one would reach the math
    renderer as ``\\|``, a double bar)."""
    out = []
    for piece in re.split(r"(`[^`]*`|\$[^$]+\$)", text):
        if piece.startswith("`"):
            out.append(piece)
        elif piece.startswith("$") and len(piece) > 1:
            piece = piece.replace("\\|", "\\Vert{}")  # TeX's double bar, spelled out
            out.append(re.sub(r"\|", r"\\vert{}", piece))
        else:
            out.append(re.sub(r"(?<!\\)\|", r"\\|", piece))
    return "".join(out)


def summary_of(obj: griffe.Object) -> str:
    """The docstring's first paragraph on one line, ready for a table cell."""
    if obj.docstring is None or not obj.docstring.value.strip():
        return ""
    first = obj.docstring.value.strip().split("\n\n", 1)[0]
    return cell(" ".join(line.strip() for line in first.splitlines()))


def rank(path: str) -> tuple[float, str]:
    """Where the module ``path`` goes: its place in ``ORDER``; one missing from
    it goes after the last listed module of its package (its package's group),
    else at the end, and in alphabetical order among those."""
    if path in ORDER:
        return float(ORDER.index(path)), path
    parent = path.rpartition(".")[0]
    group = [i for i, p in enumerate(ORDER) if p == parent or p.startswith(parent + ".")]
    return max(group, default=len(ORDER)) + 0.5, path


def in_order(modules: list[Module]) -> list[Module]:
    for module in modules:
        if module.path not in ORDER:
            log.info(f"gen_pages: {module.path} is not in ORDER; its page goes after its package's")
    return sorted(modules, key=lambda m: rank(m.path))


def _public_names(module: griffe.Module) -> list[str]:
    if module.exports is not None:
        return [str(name) for name in module.exports]
    return [
        name
        for name, member in module.members.items()
        if not name.startswith("_") and not member.is_alias and not member.is_module
    ]


def collect() -> list[Module]:
    """Every public module of purenet, in reading order, with its public names."""
    package = griffe.load(PACKAGE, search_paths=[str(ROOT)], resolve_aliases=True)
    out = []

    def walk(module: griffe.Module):
        names = []
        for name in _public_names(module):
            member = module.members[name]
            target = member.final_target if member.is_alias else member
            defined_here = not member.is_alias
            imported = module.imports.get(name, "")
            if member.is_module and imported.startswith(PACKAGE + ".") and imported != member.path:
                # `from purenet.models.gpt import gpt`: after the import the
                # package's name `gpt` is the function, not the submodule
                target = package[imported.removeprefix(PACKAGE + ".")]
                target = target.final_target if target.is_alias else target
                defined_here = False
            names.append(
                Name(
                    name=name,
                    home=target.path,
                    kind=target.kind.value,
                    summary=summary_of(target),
                    defined_here=defined_here,
                )
            )
        out.append(Module(module.path, page_of(module.path), names))
        for name, sub in module.modules.items():
            if not name.startswith("_") and not sub.is_alias:
                walk(sub)

    walk(package)
    return in_order(out)


def api_page(module: Module) -> str:
    own = [n.name for n in module.names if n.defined_here and n.kind != "module"]
    # The page's one title is this H1; mkdocstrings' own heading for the module
    # (which would repeat it) is hidden but keeps its anchor, #purenet.x.
    lines = [f"# `{module.path}`", "", f"::: {module.path}", "    options:"]
    lines += ["      show_root_heading: false", "      toc_label: Overview"]
    if own:
        lines.append("      members:")
        lines += [f"        - {name}" for name in own]
    else:
        lines.append("      members: false")
    elsewhere = [n for n in module.names if not n.defined_here and n.kind != "module"]
    submodules = sorted((n for n in module.names if n.kind == "module"), key=lambda n: rank(n.home))
    if submodules:
        lines += ["", "## Modules", "", "| module | summary |", "| --- | --- |"]
        lines += [f"| [`{n.home}`][{n.home}] | {n.summary} |" for n in submodules]
    if elsewhere:
        lines += [
            "",
            "## Re-exported names",
            "",
            f"Each is `{module.path}.NAME` and is documented in its home module.",
            "",
            "| name | home | summary |",
            "| --- | --- | --- |",
        ]
        lines += [f"| `{n.name}` | [`{n.home}`][{n.home}] | {n.summary} |" for n in elsewhere]
    return "\n".join(lines) + "\n"


def index_page(modules: list[Module]) -> str:
    lines = [
        "# API index",
        "",
        "Every public name of purenet with the first line of its docstring,",
        "module by module. Names re-exported by a package (`purenet.backprop`,",
        "`purenet.layers.dense`) are listed under their home module. This page is",
        "generated from the code at each build (`docs/_ext/gen_pages.py`).",
    ]
    for module in modules:
        own = [n for n in module.names if n.defined_here and n.kind != "module"]
        lines += ["", f"## [`{module.path}`][{module.path}]", ""]
        if not own:
            what = (
                "Modules and re-exports"
                if any(n.kind == "module" for n in module.names)
                else "Re-exports"
            )
            lines.append(f"{what} only; see its page.")
            continue
        lines += ["| name | summary |", "| --- | --- |"]
        lines += [f"| [`{n.name}`][{n.home}] | {n.summary} |" for n in own]
    return "\n".join(lines) + "\n"


def _string(node: ast.AST) -> str | None:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def registered_experiments() -> list[str]:
    """``EXPERIMENTS`` of ``experiments/__main__.py``, read without importing it."""
    registry = ast.parse((ROOT / "experiments" / "__main__.py").read_text())
    for node in registry.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "EXPERIMENTS" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("experiments/__main__.py: no EXPERIMENTS list found")


def experiments_table() -> str:
    """The registered experiments with their claims, read from the sources."""
    folder = ROOT / "experiments"
    names = registered_experiments()
    rows = ["| experiment | claim | figure |", "| --- | --- | --- |"]
    for name in names:
        source = folder / f"{name}.py"
        if not source.exists():
            raise RuntimeError(f"experiments/{name}.py: registered in EXPERIMENTS but missing")
        claim = ""
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "CLAIM" for t in node.targets
            ):
                claim = _string(node.value) or ""
        claim = cell(claim)
        figure = f"[figure](../results/index.md#{name})"
        rows.append(f"| `{name}` | {claim} | {figure} |")
    return f"{len(names)} experiments are registered, in this order:\n\n" + "\n".join(rows)


# ---- MkDocs events -------------------------------------------------------

_modules: list[Module] = []


def on_config(config):
    _modules[:] = collect()
    api = [{"Index": "api/index.md"}] + [{m.path: m.page} for m in _modules]
    nav = config["nav"] or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and API_SECTION in item:
            nav[i] = {API_SECTION: api}
            break
    else:
        nav.append({API_SECTION: api})
    config["nav"] = nav
    return config


def on_files(files, config):
    generated = {m.page: api_page(m) for m in _modules}
    generated["api/index.md"] = index_page(_modules)
    for uri, content in generated.items():
        old = files.get_file_from_path(uri)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "guides/experiments.md":
        if EXPERIMENTS_MARKER not in markdown:
            raise RuntimeError(f"guides/experiments.md: expected the line {EXPERIMENTS_MARKER}")
        markdown = markdown.replace(EXPERIMENTS_MARKER, experiments_table())
    return markdown
