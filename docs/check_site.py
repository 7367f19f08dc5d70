"""Check what the built documentation site shows, not only that it built.

    python docs/check_site.py SITE_DIR

``mkdocs build --strict`` passes a page that shows Sphinx markup as text, a
table run together as a paragraph or a formula left as TeX. This reads every
HTML page of the built site (stdlib ``html.parser``; a second or two) and
fails, listing each offence with its page, on:

- a literal reST role (``:func:``, ``:class:``, ...) or directive
  (``.. math::``, ``.. code::``, ...), a reST literal-block marker (a
  paragraph ending in ``::``), a reST simple table (``=====  =====``), or
  double backticks, in text outside code;
- an unresolved cross-reference (``[name][purenet.x]`` left as text);
- math left as text: ``$$``, ``\\(``, ``\\[`` or ``\\begin{`` outside an
  element that the math renderer handles (class ``arithmatex``);
- a broken internal link or anchor, or an image whose file is missing;
- a page titled twice (two ``<h1>``, or another heading that repeats the
  ``<h1>``'s text), or a table whose header row has an empty cell;
- a public name of purenet (each module's ``__all__``, else the names it
  defines) with no anchor on any page, or without a docstring;
- a registered experiment (``experiments/__main__.py: EXPERIMENTS``) whose
  figure the results page does not show.

The public names and the experiments are read as the site's hook reads them
(``docs/_ext/gen_pages.py``). Exit status 1 if anything is found.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))
import gen_pages  # noqa: E402  (the hook: public names, registered experiments)

ROLE = re.compile(
    r"(?<![\w:]):(?:py:)?(?:func|class|mod|data|meth|attr|exc|obj|const|ref|doc|term|math|any|envvar)"
    r":"
)
DIRECTIVE = re.compile(r"(?:^|\s)\.\. [a-z][a-z-]*::")
SIMPLE_TABLE = re.compile(r"={3,}[ \t]+={3,}")
LITERAL_MARKER = re.compile(r"\w::\s*$")
UNRESOLVED_REF = re.compile(r"\]\[[\w.]+\]")
TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{")
VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
    "source", "track", "wbr",
}  # fmt: skip
CODE = "\x00"  # stands for a piece of code in the text that is checked
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
BLOCKS = {"p", "li", "td", "th", "dd", "dt"} | HEADINGS


class Page(HTMLParser):
    """One page: its ids, links, images, and its text outside code, by block."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.texts: list[tuple[str, bool, list[str]]] = []  # (text, in math, its code)
        self.codes: list[str] = []
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, code/skip, math)
        self.block: list[str] = []
        self.headings: list[tuple[str, str]] = []  # (tag, its text with its code)
        self.header_rows: list[list[str]] = []  # each table's <thead> cells' text
        self._heading: list[str] | None = None
        self._header_cell: list[str] | None = None

    def _in(self) -> tuple[bool, bool]:
        return (any(s[1] for s in self.stack), any(s[2] for s in self.stack))

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag == "a" and a.get("href") is not None:
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag in VOID:
            return
        if tag in BLOCKS:
            self._flush()
        if tag in HEADINGS:
            self._heading = []
        if tag == "thead":
            self.header_rows.append([])
        if tag == "th" and self.header_rows and any(s[0] == "thead" for s in self.stack):
            self._header_cell = []
        classes = (a.get("class") or "").split()
        skip = tag in {"code", "pre", "script", "style", "kbd", "samp", "textarea"}
        skip = skip or "highlight" in classes
        math = "arithmatex" in classes or "katex" in classes
        self.stack.append((tag, skip, math))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in BLOCKS:
            self._flush()
        if tag in HEADINGS and self._heading is not None:
            text = " ".join("".join(self._heading).split()).removesuffix("\u00b6").strip()
            self.headings.append((tag, text))
            self._heading = None
        if tag == "th" and self._header_cell is not None:
            self.header_rows[-1].append("".join(self._header_cell).strip())
            self._header_cell = None

    def handle_data(self, data):
        for part in (self._heading, self._header_cell):
            if part is not None:
                part.append(data)
        skip, math = self._in()
        if skip:
            if self.block and self.block[-1] == CODE:  # one piece of code, several nodes
                self.codes[-1] += data
            else:
                self.block.append(CODE)  # checked as one neutral character
                self.codes.append(data)
            return
        if math:
            self.texts.append((data, True, []))
            return
        self.block.append(data)

    def _flush(self):
        text = "".join(self.block)
        if text.strip():
            self.texts.append((text, False, self.codes))
        self.block, self.codes = [], []

    def close(self):
        super().close()
        self._flush()


def excerpt(text: str, codes: list[str], start: int, width: int = 60) -> str:
    """The text around ``start``, its code shown in backticks again."""
    lo, hi = max(0, start - width), start + width
    pieces = iter(codes[text.count(CODE, 0, lo) :])
    snippet = "".join(f"`{next(pieces)}`" if c == CODE else c for c in text[lo:hi])
    snippet = " ".join(snippet.split())
    return ("..." if lo else "") + snippet + ("..." if hi < len(text) else "")


def check(site: Path) -> dict[str, list[str]]:
    offences: dict[str, list[str]] = defaultdict(list)
    pages: dict[Path, Page] = {}
    for path in sorted(site.rglob("*.html")):
        page = Page()
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
        page.close()
        pages[path] = page

    def where(path: Path) -> str:
        return path.relative_to(site).as_posix() if path.is_relative_to(site) else str(path)

    for path, page in pages.items():
        for text, in_math, codes in page.texts:
            if in_math:
                continue
            for kind, pattern in (
                ("reST role shown as text", ROLE),
                ("reST directive shown as text", DIRECTIVE),
                ("reST table shown as text", SIMPLE_TABLE),
                ("reST literal-block marker '::' shown", LITERAL_MARKER),
                ("double backticks shown", re.compile("``")),
                ("unresolved cross-reference", UNRESOLVED_REF),
                ("math not rendered (TeX outside a math element)", TEX),
            ):
                for m in pattern.finditer(text):
                    offences[kind].append(f"{where(path)}: {excerpt(text, codes, m.start())!r}")
        for href in page.links:
            target = resolve(site, path, href, pages)
            if target is None:
                continue
            file, fragment = target
            if file not in pages and not file.exists():
                offences["broken link"].append(f"{where(path)}: {href!r} (no {where(file)})")
            elif fragment and file in pages and fragment not in pages[file].ids:
                offences["broken anchor"].append(f"{where(path)}: {href!r} (no id {fragment!r})")
        for src in page.images:
            target = resolve(site, path, src, pages)
            if target is not None and not target[0].is_file():
                offences["missing image"].append(f"{where(path)}: {src!r}")
        titles = [text for tag, text in page.headings if tag == "h1"]
        repeated = [text for tag, text in page.headings if tag != "h1" and text in titles[:1]]
        if len(titles) > 1 or repeated:
            offences["page titled twice"].append(f"{where(path)}: {titles + repeated}")
        for row in page.header_rows:
            if not all(row):
                offences["table header with an empty cell"].append(f"{where(path)}: {row}")

    ids = {i: path for path, page in pages.items() for i in page.ids}
    for module in gen_pages.collect():
        for name in module.names:
            if name.home not in ids:
                offences["public name without a page or anchor"].append(
                    f"{module.path}.{name.name} (expected the anchor #{name.home})"
                )
            elif name.defined_here and not name.summary:
                offences["public name without a docstring"].append(
                    f"{where(ids[name.home])}#{name.home}"
                )

    results = site / "results" / "index.html"
    shown = set(pages[results].images) if results in pages else set()
    for name in gen_pages.registered_experiments():
        if f"{name}.png" not in shown:
            offences["experiment figure not on the results page"].append(
                f"results/index.html: no <img src={name + '.png'!r}>"
            )
    return offences


def resolve(site: Path, page: Path, url: str, pages) -> tuple[Path, str] | None:
    """The file and fragment an internal URL points to; None for external ones."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")):
        return None
    fragment = unquote(parts.fragment)
    if not parts.path:
        return page, fragment
    base = site if parts.path.startswith("/") else page.parent
    target = (base / unquote(parts.path).lstrip("/")).resolve()
    if url.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, fragment


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build --site-dir)")
    parser.add_argument(
        "--max", type=int, default=0, help="list at most this many offences of each kind (0: all)"
    )
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        parser.error(f"site: expected a built site with an index.html, got {args.site}")
    started = time.perf_counter()
    offences = check(args.site.resolve())
    seconds = time.perf_counter() - started
    total = sum(len(v) for v in offences.values())
    for kind, found in offences.items():
        print(f"\n{kind}: {len(found)}")
        shown = found if args.max <= 0 else found[: args.max]
        for line in shown:
            print(f"  {line}")
        if len(shown) < len(found):
            print(f"  ... and {len(found) - len(shown)} more")
    if total:
        print(f"\ncheck_site: {total} offence(s) in {args.site} ({seconds:.1f} s):")
        for kind, found in offences.items():
            print(f"  {len(found):5d}  {kind}")
        return 1
    print(f"check_site: {args.site} shows what it says ({seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
