"""The public names: renamed 0.1 names as deprecated aliases, private implementation modules,
and an ``import skembed`` that loads no torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest

import skembed


@pytest.mark.parametrize(
    ("old", "new"),
    [("pairwise_similarity", "paired_similarity"), ("PairSimilarity", "PairedSimilarity")],
)
def test_renamed_names_warn_and_are_the_new_objects(old, new):
    with pytest.warns(FutureWarning, match=rf"skembed\.{old} is deprecated.*skembed\.{new}") as rec:
        alias = getattr(skembed, old)
    assert alias is getattr(skembed, new)
    assert len(rec) == 1 and rec[0].filename == __file__  # points at the caller
    # The old name keeps warning on every use; the new name never warns.
    with pytest.warns(FutureWarning):
        getattr(skembed, old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(skembed, new)
    assert old in skembed.__all__ and new in skembed.__all__


def test_deprecated_import_from_form_warns():
    with pytest.warns(FutureWarning, match="paired_similarity"):
        from skembed import pairwise_similarity
    assert pairwise_similarity is skembed.paired_similarity


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'skembed' has no attribute 'no_such_name'"):
        _ = skembed.no_such_name


def test_pair_similarity_method_warns_and_gives_similarity_pairwise(tiny_model):
    embedder = skembed.SentenceEmbedder(tiny_model, device="cpu").fit()
    pairs = pd.DataFrame({"a": ["a cat", "the man"], "b": ["a dog", "a woman"]})
    expected = embedder.similarity_pairwise(pairs)
    with pytest.warns(
        FutureWarning, match=r"pair_similarity\(X\) is deprecated.*similarity_pairwise"
    ):
        got = embedder.pair_similarity(pairs)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("skembed._similarity", ["similarity", "paired_similarity", "semantic_search"]),
        ("skembed._embedder", ["SentenceEmbedder"]),
        ("skembed._fine_tuning", ["SentenceFineTuner"]),
        ("skembed._fine_tuned_classifier", ["FineTunedClassifier"]),
        ("skembed._pair_similarity", ["PairedSimilarity"]),
        ("skembed._similarity_function", ["SimilarityFunction"]),
        ("skembed._quantization", ["EmbeddingQuantizer"]),
        ("skembed._mining", ["CommunityClusterer", "community_detection", "paraphrase_mining"]),
        ("skembed._evaluation", ["evaluate_sts"]),
    ],
)
def test_private_modules_define_the_public_objects(module, names):
    imported = importlib.import_module(module)
    assert isinstance(imported, types.ModuleType)
    for name in names:
        assert getattr(imported, name) is getattr(skembed, name)


def test_block_budget_default_is_64_mib():
    import skembed._similarity as similarity_module

    assert similarity_module.DEFAULT_BLOCK_BYTES == 64 << 20


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300
    )


# Fresh interpreters (no torch imported yet) that import only the light modules: quick.


def test_import_skembed_loads_no_torch():
    result = _python("import skembed, sys; assert 'torch' not in sys.modules")
    assert result.returncode == 0, result.stderr
    result = _python(
        "import sys, skembed, skembed._options, skembed._similarity_function\n"
        "from skembed import SimilarityFunction, __version__\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr


def test_cli_help_loads_no_torch():
    result = _python(
        "import sys\n"
        "from skembed.cli import main\n"
        "try:\n"
        "    main(['encode', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    assert result.returncode == 0, result.stderr
    assert "usage: skembed encode" in result.stdout
