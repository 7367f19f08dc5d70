"""Rewrite docstrings from reST (Sphinx) to the Markdown that mkdocstrings renders.

    python docs/_ext/rst2md.py [--check] PATH [PATH ...]

Each PATH is a Python file or a folder searched for them. Only docstrings are
touched (those of modules, classes and functions, and the string after an
assignment that documents an attribute), found with `ast`; the rest of a file
is left byte for byte. In each docstring:

- a role, `:func:`serial``, `:class:`~purenet.layers.Layer``, `:mod:`, `:data:`,
  `:meth:`, `:attr:`, `:exc:`, `:obj:`, `:const:`, becomes an autorefs cross
  reference, ``[`serial`][purenet.layers.core.serial]``, when its target is a
  public object of purenet. Relative names are resolved as Sphinx would, against
  the class, the module (its definitions and imports), then its packages; the
  target is followed through re-exports to the module that defines it (where
  its page has the anchor). A `~` shows the last component. Other targets
  (`jax.vjp`, `numpy.ndarray`, a private name) become plain code spans;
- `:math:`a`` becomes `$a$`, a `.. math::` directive a `$$ ... $$` block;
- double backticks become single ones;
- a paragraph ending in `::` followed by an indented block becomes the
  paragraph ending in `:` and a fenced block (`python` where the block parses
  as Python, else `text`);
- a simple table (`=====  =====` borders) becomes a pipe table, `|` escaped in
  its cells (outside code spans); a table without a header row gets an empty one.

Doctest blocks (from a `>>>` line to the next blank line), literal blocks and
fenced blocks are copied as they are. A line that the conversion made longer
than 100 characters is wrapped at a space outside code, math and links,
continuing the paragraph (a link longer than the line stays on its own line).

Running it twice changes nothing the second time. `--check` changes nothing
and exits 1, listing the files it would change. Standalone: the standard
library only, and the package is read with `ast`, never imported.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "purenet"
LIMIT = 100
ROOT = Path(__file__).resolve().parents[2]

ROLE = re.compile(r":(?:py:)?(func|class|mod|data|meth|attr|exc|obj|const|math):`([^`]+)`")
DOUBLE = re.compile(r"``(?!`)((?:(?!``).)+?)``(?!`)", re.DOTALL)
BORDER = re.compile(r"^[ \t]*=+(?:[ \t]+=+)+[ \t]*$")
MATH_DIRECTIVE = re.compile(r"^([ \t]*)\.\. math::[ \t]*(.*)$")
FENCE = re.compile(r"^[ \t]*(```|~~~)")
STRUCTURE = re.compile(r"^(?:[-*+] |\d+[.)] |>>>|```|~~~|\||#|>|\$\$)")
SECTION = re.compile(
    r"^[ \t]*(?:Args|Arguments|Parameters|Params|Returns|Yields|Raises|Attributes|Examples?"
    r"|Notes?|Warnings?|Warns|References?|See Also|Other Parameters|Keyword Args"
    r"|Keyword Arguments|Receives|Methods|Functions|Classes|Modules|Todo):[ \t]*$"
)
ITEM = re.compile(r"^[ \t]*[*\w][\w*, .\[\]]*(?: \([^)]*\))?: ")


# ---- the package, read statically ----------------------------------------


@dataclass
class ModuleInfo:
    name: str
    defs: dict[str, set[str] | None] = field(default_factory=dict)  # class -> members
    imports: dict[str, str] = field(default_factory=dict)  # local name -> dotted target
    exports: list[str] | None = None
    package: bool = False


def module_name(path: Path) -> str:
    """The dotted name of a file, from the packages (folders with __init__.py) above it."""
    path = path.resolve()
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts) or path.stem


def _top_level(body):
    """Statements at a module's or class's top level, through `if` and `try`."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level(node.body)
            for handler in node.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(node.orelse)
        else:
            yield node


def _targets(node) -> list[str]:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign | ast.AugAssign):
        targets = [node.target]
    else:
        return []
    names = []
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Name):
                names.append(sub.id)
    return names


def read_module(name: str, tree: ast.Module, package: bool) -> ModuleInfo:
    info = ModuleInfo(name, package=package)
    base = name if package else name.rpartition(".")[0]
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    info.imports[alias.asname] = alias.name
                else:
                    head = alias.name.split(".")[0]
                    info.imports[head] = head
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parent = base.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                source = ".".join(parent + ([source] if source else []))
            for alias in node.names:
                if alias.name != "*":
                    info.imports[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.ClassDef):
            members = set()
            for sub in _top_level(node.body):
                if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    members.add(sub.name)
                members.update(_targets(sub))
            info.defs[node.name] = members
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            info.defs[node.name] = None
        else:
            for target in _targets(node):
                info.defs.setdefault(target, None)
                if target == "__all__" and isinstance(node, ast.Assign | ast.AnnAssign):
                    try:
                        info.exports = [str(n) for n in ast.literal_eval(node.value)]
                    except ValueError:
                        pass
    return info


class Index:
    """Every module of the package (and any other file converted), read with `ast`."""

    def __init__(self, package_dir: Path | None = None):
        self.modules: dict[str, ModuleInfo] = {}
        package_dir = package_dir or ROOT / PACKAGE
        for path in sorted(package_dir.rglob("*.py")):
            if "__pycache__" not in path.parts:
                self.add(
                    module_name(path), path.read_text(encoding="utf-8"), path.name == "__init__.py"
                )
        self._by_name: dict[str, set[str]] | None = None

    def add(self, name: str, source: str, package: bool = False) -> ModuleInfo:
        info = read_module(name, ast.parse(source), package)
        self.modules[name] = info
        self._by_name = None
        return info

    def canonical(self, dotted: str, depth: int = 0) -> str | None:
        """The defining path of `dotted`, followed through imports; None if unknown."""
        if depth > 20:
            return None
        parts = dotted.split(".")
        for k in range(len(parts), 0, -1):
            module = ".".join(parts[:k])
            if module in self.modules:
                break
        else:
            return None
        rest, info = parts[k:], self.modules[module]
        if not rest:
            return module
        head = rest[0]
        if head in info.defs:
            members = info.defs[head]
            if len(rest) == 1:
                return f"{module}.{head}"
            if members is not None and len(rest) == 2 and rest[1] in members:
                return f"{module}.{head}.{rest[1]}"
            return None
        if head in info.imports:
            return self.canonical(".".join([info.imports[head], *rest[1:]]), depth + 1)
        return None

    def documented(self, path: str) -> bool:
        """Whether the site has an entry (an anchor) for this defining path."""
        parts = path.split(".")
        if parts[0] != PACKAGE or any(p.startswith("_") for p in parts[1:]):
            return False
        for k in range(len(parts), 0, -1):
            module = ".".join(parts[:k])
            if module in self.modules:
                break
        rest, info = parts[k:], self.modules[module]
        if not rest:
            return True
        if info.exports is not None and rest[0] not in info.exports:
            return False
        return True

    def by_name(self) -> dict[str, set[str]]:
        """Last component -> the documented paths with that name."""
        if self._by_name is None:
            found: dict[str, set[str]] = {}
            for module, info in self.modules.items():
                if not self.documented(module):
                    continue
                for name, members in info.defs.items():
                    path = f"{module}.{name}"
                    if self.documented(path):
                        found.setdefault(name, set()).add(path)
                        for member in members or ():
                            if self.documented(f"{path}.{member}"):
                                found.setdefault(member, set()).add(f"{path}.{member}")
            self._by_name = found
        return self._by_name

    def resolve(self, target: str, module: str, cls: str | None) -> str | None:
        """The documented purenet path a role's target names, seen from `module`."""
        candidates = []
        if cls:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
        parts = module.split(".")
        candidates += [".".join(parts[:k] + [target]) for k in range(len(parts) - 1, 0, -1)]
        candidates.append(target)
        for candidate in candidates:
            path = self.canonical(candidate)
            if path is not None:
                return path if self.documented(path) else None
        if "." not in target:
            paths = self.by_name().get(target, set())
            if len(paths) == 1:
                return next(iter(paths))
        return None


# ---- one docstring ---------------------------------------------------------


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role(match: re.Match, index: Index, module: str, cls: str | None) -> str:
    kind, text = match.group(1), match.group(2).strip()
    if kind == "math":
        return f"${text}$"
    titled = re.fullmatch(r"(.*?)\s*<([^<>]+)>", text, re.DOTALL)
    if titled:
        title, target = titled.group(1), titled.group(2)
    else:
        title, target = None, text
    short = target.startswith("~")
    target = target.lstrip("~.!")
    if target.endswith("()"):
        target = target[:-2]
    shown = title or (target.rsplit(".", 1)[-1] if short else target)
    path = index.resolve(target, module, cls)
    return f"[`{shown}`][{path}]" if path else f"`{shown}`"


def _double(match: re.Match) -> str:
    code = match.group(1)
    if "`" in code:
        return match.group(0)  # already valid Markdown: a span holding a backtick
    return f"`{code}`"


def inline(text: str, index: Index, module: str, cls: str | None) -> str:
    """Roles, inline math and double backticks of a run of text lines."""
    text = DOUBLE.sub(_double, text)
    return ROLE.sub(lambda m: _role(m, index, module, cls), text)


def _protected(line: str) -> list[tuple[int, int]]:
    """Spans of a line that a wrap must not cut: code, math, links."""
    spans = []
    for pattern in (r"\[`[^`]*`\]\[[^\]]*\]", r"\[[^\]]*\]\([^)]*\)", r"`[^`]*`", r"\$[^$]+\$"):
        for m in re.finditer(pattern, line):
            if not any(a <= m.start() < b for a, b in spans):
                spans.append((m.start(), m.end()))
    return spans


def _break_at(line: str, room: int) -> int | None:
    """Where to cut a too-long line: the last free space within `room`, else the first."""
    spans = _protected(line)
    start = _indent(line)
    spaces = [
        i
        for i, c in enumerate(line)
        if c == " "
        and i > start
        and line[i - 1] != " "
        and not any(a < i < b for a, b in spans)
        and not STRUCTURE.match(line[i + 1 :].lstrip())
        and line[i + 1 :].strip()
    ]
    fitting = [i for i in spaces if i <= room]
    if fitting:
        return fitting[-1]
    return spaces[0] if spaces else None


def _continuation(lines: list[str], i: int, section_indent: int | None) -> int:
    """The indentation of a line continuing `lines[i]`'s paragraph or item."""
    line = lines[i]
    stripped = line.lstrip()
    bullet = re.match(r"([-*+] |\d+[.)] )", stripped)
    if bullet:
        return _indent(line) + len(bullet.group(1))
    if i + 1 < len(lines) and lines[i + 1].strip() and _indent(lines[i + 1]) > _indent(line):
        return _indent(lines[i + 1])
    if section_indent is not None and _indent(line) == section_indent and ITEM.match(line):
        return _indent(line) + 4
    return _indent(line)


def wrap(lines: list[str], changed: set[int], offsets: dict[int, int]) -> list[str]:
    """Cut the changed lines that are too long, pushing the rest into the paragraph."""
    lines = list(lines)
    changed = set(changed)
    i = 0
    while i < len(lines):
        room = LIMIT - offsets.get(i, 0)
        if i not in changed or len(lines[i]) <= room:
            i += 1
            continue
        cut = _break_at(lines[i], room)
        if cut is None:
            i += 1
            continue
        head, tail = lines[i][:cut].rstrip(), lines[i][cut + 1 :].strip()
        section = _section_item_indent(lines, i)
        indent = _continuation(lines, i, section)
        lines[i] = head
        following = lines[i + 1] if i + 1 < len(lines) else ""
        joinable = (
            following.strip()
            and _indent(following) == indent
            and not STRUCTURE.match(following.lstrip())
            and not SECTION.match(following)
            and not (section is not None and indent == section and ITEM.match(following))
            and (i + 1) not in offsets
        )
        if joinable:
            lines[i + 1] = " " * indent + tail + " " + following.strip()
        else:
            lines.insert(i + 1, " " * indent + tail)
            changed = {j + 1 if j > i else j for j in changed}
            offsets = {j + 1 if j > i else j: v for j, v in offsets.items()}
        changed.add(i + 1)
        i += 1
    return lines


def _section_item_indent(lines: list[str], i: int) -> int | None:
    """The indentation of the items of the Google section `lines[i]` is in, if any."""
    for j in range(i - 1, -1, -1):
        if lines[j].strip() and _indent(lines[j]) < _indent(lines[i]):
            if not SECTION.match(lines[j]):
                return None
            return next((_indent(x) for x in lines[j + 1 :] if x.strip()), None)
    return None


def _is_python(block: list[str]) -> bool:
    try:
        ast.parse("\n".join(block))
    except SyntaxError:
        return False
    return True


def _cell(text: str, raw: bool) -> str:
    """A table cell's text with each `|` made safe: kept in code spans (Python-Markdown's
    tables skip them), TeX's `\\vert{}` in `$...$`, escaped elsewhere."""
    slash = "\\" if raw else "\\\\"  # the source of one backslash
    out = []
    for piece in re.split(r"(`[^`]*`|\$[^$]+\$)", text):
        if piece.startswith("`"):
            out.append(piece)
        elif piece.startswith("$") and len(piece) > 1:
            out.append(re.sub(r"(?<!\\)\|", lambda _: slash + "vert{}", piece))
        else:
            out.append(re.sub(r"(?<!\\)\|", lambda _: slash + "|", piece))
    return "".join(out)


def _cells(line: str, columns: list[tuple[int, int]]) -> list[str]:
    """A table row's cells: cut at the columns' starts, or, where text runs over
    a column's start, at the gaps of two or more spaces."""
    starts = [a for a, _ in columns]
    gaps = [(columns[c][1], columns[c + 1][0]) for c in range(len(columns) - 1)]
    crossing = any(line[a:b].strip() for a, b in gaps)
    pieces = [piece.strip() for piece in re.split(r" {2,}", line.strip())]
    if crossing and len(pieces) == len(columns):
        return pieces
    ends = starts[1:] + [len(line)]
    return [line[a:b].strip() for a, b in zip(starts, ends, strict=True)]


def table(lines: list[str], raw: bool, convert) -> list[str]:
    """A simple reST table (its border lines included) as a pipe table."""
    indent = " " * _indent(lines[0])
    border = lines[0]
    columns = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
    borders = [k for k, line in enumerate(lines) if BORDER.match(line)]
    header_end = borders[1] if len(borders) == 3 else None
    rows: list[list[str]] = []
    header: list[list[str]] = []
    for k, line in enumerate(lines):
        if k in borders or not line.strip():
            continue
        cells = _cells(line, columns)
        target = header if header_end is not None and k < header_end else rows
        if target and not cells[0]:
            for c, cell in enumerate(cells):
                if cell:
                    target[-1][c] = f"{target[-1][c]} {cell}".strip()
        else:
            target.append(cells)
    head = [" ".join(col) for col in zip(*header, strict=True)] if header else [""] * len(columns)

    def row(cells):
        cells = [_cell(convert(cell), raw) for cell in cells]
        return indent + "| " + " | ".join(cells) + " |"

    first = row(head) if any(head) else indent + "|" + " |" * len(columns)
    out = [first, indent + "|" + " --- |" * len(columns)]
    out += [row(cells) for cells in rows]
    return out


def convert_text(
    text: str,
    index: Index,
    module: str,
    cls: str | None = None,
    raw: bool = True,
    first_column: int = 0,
    closing: int = 3,
) -> str:
    """One docstring's source text (between its quotes) converted."""
    lines = text.split("\n")
    body = [_indent(line) for line in lines[1:] if line.strip()]
    base = min(body) if body else 0
    lead = _indent(lines[0])
    padded = bool(lines[0].strip())
    if padded:
        lines[0] = " " * base + lines[0].lstrip()
    out: list[str] = []
    changed: set[int] = set()
    offsets = {0: first_column + lead - base}
    n = len(lines)
    i = 0

    def convert(chunk: str) -> str:
        return inline(chunk, index, module, cls)

    reindented: set[int] = set()  # input lines moved into a list item

    def flush_run(run: list[str], first: int):
        start = len(out)
        joined = "\n".join(run)
        new = convert(joined).split("\n")
        for k, (old, line) in enumerate(zip(run, new, strict=True)):
            if old != line or first + k in reindented:
                changed.add(start + k)
        out.extend(new)

    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            out.append(line)
            i += 1
            continue
        if stripped.startswith(">>>"):  # a doctest block, to the next blank line
            while i < n and lines[i].strip():
                out.append(lines[i])
                i += 1
            continue
        fence = FENCE.match(line)
        if fence:  # a fenced block, copied to its closing fence
            out.append(line)
            i += 1
            while i < n:
                out.append(lines[i])
                i += 1
                if lines[i - 1].strip().startswith(fence.group(1)):
                    break
            continue
        if BORDER.match(line):
            j, borders = i + 1, 1
            while j < n:
                if BORDER.match(lines[j]) and _indent(lines[j]) == _indent(line):
                    borders += 1
                    headerless = j + 1 >= n or not lines[j + 1].strip()
                    if borders == 3 or headerless:
                        break
                j += 1
            out.extend(table(lines[i : j + 1], raw, convert))
            i = j + 1
            continue
        directive = MATH_DIRECTIVE.match(line)
        if directive:
            indent = _indent(line)
            j = i + 1
            while j < n and (not lines[j].strip() or _indent(lines[j]) > indent):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():
                j -= 1
            following = lines[i + 1 : j]
            cut = min((_indent(x) for x in following if x.strip()), default=0)
            pad = " " * indent
            formula = [pad + directive.group(2).strip()] if directive.group(2).strip() else []
            formula += [pad + x[cut:] if x.strip() else "" for x in following]
            while formula and not formula[0].strip():
                formula.pop(0)
            out += [pad + "$$", *formula, pad + "$$"]
            i = j
            continue
        # a run of text lines, to a blank line or a block that starts here
        run, first = [], i
        while i < n and lines[i].strip() and not _starts_block(lines[i]):
            run.append(lines[i])
            i += 1
            if run[-1].rstrip().endswith("::"):
                break
        if not run:  # a block start that no branch above took: copy it
            out.append(lines[i])
            i += 1
            continue
        last = run[-1].rstrip()
        if last.endswith("::"):
            ref = _indent(run[0]) if len(run) == 1 else _indent(run[-1])
            item = re.match(r"( *)([-*+] |\d+[.)] )", run[0])
            if item:  # a list item's blocks are indented from its text
                ref = len(item.group(0))
            j = i
            while j < n and not lines[j].strip():
                j += 1
            k = j
            while k < n and (not lines[k].strip() or _indent(lines[k]) > ref):
                k += 1
            while k > j and not lines[k - 1].strip():
                k -= 1
            block = lines[j:k]
            if last.strip() == "::":
                run = run[:-1]
            elif last.endswith(" ::"):
                run[-1] = last[:-3].rstrip()
            else:
                run[-1] = last[:-1]
            if run:
                flush_run(run, first)
                changed.add(len(out) - 1)
            if block and block[0].lstrip().startswith(">>>"):
                out.extend(lines[i:k])  # doctests stay exactly as they are
                i = k
            elif block:
                cut = min(_indent(b) for b in block if b.strip())
                pad = " " * ref
                bullet = re.match(r"( *)([-*+] |\d+[.)] )", run[0]) if run else None
                if bullet and ref == len(bullet.group(0)):
                    # inside a list item: Python-Markdown wants the item's blocks
                    # indented by 4, the fence and the item's paragraphs after it
                    pad = " " * (len(bullet.group(1)) + 4)
                    m = k
                    while m < n and (not lines[m].strip() or _indent(lines[m]) >= ref):
                        if lines[m].strip():
                            lines[m] = " " * (len(pad) - ref) + lines[m]
                            reindented.add(m)
                        m += 1
                    if (
                        m < n
                        and lines[m - 1].strip()
                        and re.match(r" *([-*+] |\d+[.)] )", lines[m])
                    ):
                        lines.insert(m, "")  # else the next item joins the paragraph
                        n += 1
                if run:
                    out.append("")
                out.append(
                    pad + "```" + ("python" if _is_python([b[cut:] for b in block]) else "text")
                )
                out.extend(pad + b[cut:] if b.strip() else "" for b in block)
                out.append(pad + "```")
                i = k
            continue
        flush_run(run, first)

    offsets[len(out) - 1] = offsets.get(len(out) - 1, 0) + closing
    out = wrap(out, changed, offsets)
    if padded:
        out[0] = " " * lead + out[0][min(base, _indent(out[0])) :]
    return "\n".join(out)


def _starts_block(line: str) -> bool:
    return bool(
        line.strip().startswith(">>>")
        or FENCE.match(line)
        or BORDER.match(line)
        or MATH_DIRECTIVE.match(line)
    )


# ---- one file --------------------------------------------------------------


def _docstrings(tree: ast.Module):
    """(string node, enclosing class name) for every docstring of the module."""

    def visit(body, cls):
        previous = None
        for node in body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                if isinstance(node.value.value, str) and (
                    node is body[0] or isinstance(previous, ast.Assign | ast.AnnAssign)
                ):
                    yield node.value, cls
            if isinstance(node, ast.ClassDef):
                yield from visit(node.body, node.name)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from visit(node.body, cls)
            previous = node

    yield from visit(tree.body, None)


def _column(line: str, byte_offset: int) -> int:
    return len(line.encode("utf-8")[:byte_offset].decode("utf-8", errors="replace"))


def convert_source(source: str, module: str, index: Index) -> str:
    """A module's source with its docstrings converted; everything else as it was."""
    tree = ast.parse(source)
    lines = source.split("\n")
    edits = []
    for node, cls in _docstrings(tree):
        first, last = node.lineno - 1, node.end_lineno - 1
        start = _column(lines[first], node.col_offset)
        end = _column(lines[last], node.end_col_offset)
        if first == last:
            segment = lines[first][start:end]
        else:
            segment = "\n".join([lines[first][start:], *lines[first + 1 : last], lines[last][:end]])
        opening = re.match(r"([rRuU]*)(\"\"\"|'''|\"|')", segment)
        if opening is None or not segment.endswith(opening.group(2)):
            continue
        quote = opening.group(2)
        inner = segment[opening.end() : len(segment) - len(quote)]
        try:
            if ast.literal_eval(segment) != node.value:
                continue  # implicit concatenation or the like: leave it
        except (ValueError, SyntaxError):
            continue
        raw = "r" in opening.group(1).lower()
        new = convert_text(inner, index, module, cls, raw, start + opening.end(), len(quote))
        if new != inner:
            edits.append((first, start, last, end, opening.group(0) + new + quote))
    for first, start, last, end, text in sorted(edits, reverse=True):
        lines[first : last + 1] = (lines[first][:start] + text + lines[last][end:]).split("\n")
    return "\n".join(lines)


def python_files(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            files.append(path)
        else:
            raise SystemExit(f"rst2md: {path}: expected a Python file or a folder")
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="Python files or folders")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 listing what would change"
    )
    args = parser.parse_args(argv)
    index = Index()
    changed = []
    for path in python_files(args.paths):
        source = path.read_text(encoding="utf-8")
        name = module_name(path)
        if name not in index.modules:
            index.add(name, source, path.name == "__init__.py")
        new = convert_source(source, name, index)
        if new != source:
            changed.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "would change" if args.check else "changed"
    for path in changed:
        print(f"rst2md: {verb} {path}")
    print(f"rst2md: {len(changed)} file(s) {verb}", file=sys.stderr)
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
