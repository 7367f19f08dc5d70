"""A griffe extension for the documentation build: ``Example:`` is a section.

Google style (and Sphinx's Napoleon, which reads it) treats a docstring's
``Example:`` and ``Examples:`` headings alike; griffe knows only the plural
and would render the singular as a note whose doctest lines are plain text.
This rewrites the heading before griffe parses the docstring. Only the
rendering changes: the doctests run from the sources as written.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_SINGULAR = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _SINGULAR.sub(r"\1Examples:", obj.docstring.value)
