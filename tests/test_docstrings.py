"""The examples in the docstrings run and print what they show (those that need no model)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "skembed",
    "skembed._similarity",
    "skembed._similarity_function",
    "skembed._embedder",
    "skembed._fine_tuning",
    "skembed._fine_tuned_classifier",
    "skembed._pair_similarity",
    "skembed._quantization",
    "skembed._mining",
    "skembed._evaluation",
    "skembed._warnings",
    "skembed._device",
    "skembed.cache",
    "skembed.datasets",
    "skembed.encoder._encoder",
    "skembed.parallel",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
