"""One version string: pyproject.toml's, read back from the installed metadata."""

import importlib.metadata
import json
import re
import tomllib
from pathlib import Path

import pytest

import purenet

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_distributions():
    assert purenet.__version__ == importlib.metadata.version("purenet")
    # no second, hand-written version number in the package
    assert not re.search(r'__version__ = "\d+\.', (ROOT / "purenet/__init__.py").read_text())


def test_installed_version_is_pyprojects():
    source = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    url = json.loads(
        importlib.metadata.distribution("purenet").read_text("direct_url.json") or "{}"
    ).get("url", "")
    if url.startswith("file://") and Path(url.removeprefix("file://")).resolve() != ROOT:
        pytest.skip(f"purenet is installed from {url}, not from this checkout")
    assert purenet.__version__ == source
