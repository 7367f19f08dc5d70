"""docs/_ext/rst2md.py: reST docstrings to Markdown, only inside docstrings, idempotent."""

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rst2md():
    spec = importlib.util.spec_from_file_location("rst2md", ROOT / "docs" / "_ext" / "rst2md.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rst2md"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def index(rst2md):
    return rst2md.Index(ROOT / "purenet")


def convert(rst2md, index, source, module="purenet.layers.core"):
    return rst2md.convert_source(textwrap.dedent(source), module, index)


def test_roles_become_autorefs_or_code(rst2md, index):
    out = convert(
        rst2md,
        index,
        '''\
        def f():
            """Uses :func:`serial`, :class:`~purenet.layers.Layer` and :func:`jax.vjp`."""
        ''',
    )
    assert "[`serial`][purenet.layers.core.serial]" in out
    # followed through the re-export to the module that documents it
    assert "[`Layer`][purenet.layers.core.Layer]" in out
    assert "`jax.vjp`" in out and "[`jax.vjp`]" not in out
    assert ":func:" not in out and ":class:" not in out


def test_relative_name_resolves_through_imports(rst2md, index):
    # purenet.layers.conv imports make_layer from purenet.layers.core
    out = convert(
        rst2md,
        index,
        '"""See :func:`make_layer` and :data:`METHODS`."""\n',
        module="purenet.layers.conv",
    )
    assert "[`make_layer`][purenet.layers.core.make_layer]" in out
    assert "[`METHODS`][purenet.layers.conv.METHODS]" in out


def test_private_and_unknown_targets_are_code_spans(rst2md, index):
    out = convert(rst2md, index, '"""See :func:`_checks.fail` and :func:`nowhere`."""\n')
    assert "`_checks.fail`" in out and "`nowhere`" in out and "][" not in out


def test_only_docstrings_change(rst2md, index):
    source = '''\
        """Module ``x``."""
        MESSAGE = "a ``literal`` and :func:`serial` in a string, not a docstring"
        # a comment with ``double`` backticks
        '''
    out = convert(rst2md, index, source)
    assert out.splitlines()[0] == '"""Module `x`."""'
    assert out.splitlines()[1:] == textwrap.dedent(source).splitlines()[1:]


def test_literal_block_table_and_math(rst2md, index):
    out = convert(
        rst2md,
        index,
        r'''
        def f():
            r"""Shapes.

            The forward::

                y = x @ W + b

            =====  ==========
            name   what
            =====  ==========
            ``a``  x | y and ``p|q``
            b      two
                   lines
            c      :math:`|x|`
            =====  ==========

            .. math::  y = \sum_k x_k

            Inline :math:`a^2`.
            """
        ''',
    )
    assert "The forward:\n\n    ```python\n    y = x @ W + b\n    ```\n" in out
    assert "| name | what |\n    | --- | --- |\n    | `a` | x \\| y and `p|q` |" in out
    assert "| b | two lines |" in out
    assert "| c | $\\vert{}x\\vert{}$ |" in out
    assert "$$\n    y = \\sum_k x_k\n    $$" in out
    assert "Inline $a^2$." in out


def test_literal_block_inside_a_list_item(rst2md, index):
    # Python-Markdown keeps a block in a list item only when it is indented by 4,
    # and the next item must follow a blank line, or it runs into the paragraph
    out = convert(
        rst2md,
        index,
        '''\
        """Two.

        * ``dx``: the formula::

              dx = dy W

          (the rest of the item).
        * ``dW``: next.
        """
        ''',
    )
    assert "* `dx`: the formula:\n\n    ```text\n    dx = dy W\n    ```\n" in out
    assert "\n    (the rest of the item).\n\n* `dW`: next." in out
    assert rst2md.convert_source(out, "purenet.layers.core", index) == out


def test_pipe_escaped_in_a_plain_string(rst2md, index):
    # outside a raw string the backslash that escapes | is itself escaped
    out = convert(rst2md, index, '"""T.\n\n===  ===\na    b | c\n===  ===\n"""\n')
    assert "| a | b \\\\| c |" in out
    namespace = {}
    exec(compile(out.replace('"""T', 'DOC = """T', 1), "<test>", "exec"), namespace)
    assert "| a | b \\| c |" in namespace["DOC"]


def test_doctests_kept_exactly(rst2md, index):
    source = '''\
        def f():
            """Example::

                >>> f(``x``)  # :func:`serial`
                1

            >>> g(``y``)
            2
            """
        '''
    out = convert(rst2md, index, source)
    lines = textwrap.dedent(source).splitlines()
    kept = [line for line in lines if ">>>" in line or line.strip() in ("1", "2")]
    assert len(kept) == 4
    for line in kept:
        assert line in out.splitlines()
    assert "Example:\n" in out


def test_long_lines_wrapped_and_idempotent(rst2md, index):
    source = '''\
        def f():
            """Combinators :func:`serial`, :func:`parallel`, :func:`fan_out`, :func:`fan_in_sum`.

            Args:
              x: the :func:`fan_in_concat` of :func:`residual` and :func:`serial`, which goes on.
            """
        '''
    once = convert(rst2md, index, source)
    assert max(len(line) for line in once.splitlines()) <= 100
    # the Args entry continues indented under its name, the summary under itself
    assert "\n          [`residual`][purenet.layers.core.residual] and" in once
    assert "\n    [`parallel`][purenet.layers.core.parallel]," in once
    assert rst2md.convert_source(once, "purenet.layers.core", index) == once


def test_the_tree_is_converted(rst2md, index):
    """The library's docstrings are already Markdown: a second run changes nothing."""
    for path in sorted((ROOT / "purenet").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert rst2md.convert_source(source, rst2md.module_name(path), index) == source, path
