"""The docstring examples of the cheap modules run as doctests: an example that no longer works fails here."""

import doctest
import importlib

import pytest

# Modules whose examples need no model, no network and no files outside a temporary folder.
CHEAP = [
    "workbench.scores",
    "workbench.metrics",
    "workbench.measure",
    "workbench.data",
    "workbench.utils",
    "workbench.provenance",
]


@pytest.mark.parametrize("name", CHEAP)
def test_the_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no doctest example"
    assert result.failed == 0
