"""Text inputs: mixed types, invalid Unicode, column names and text-or-embedding detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skembed import SentenceEmbedder


@pytest.fixture(scope="module")
def embedder(tiny_model) -> SentenceEmbedder:
    return SentenceEmbedder(tiny_model, device="cpu").fit()


@pytest.mark.parametrize(
    ("texts", "position"),
    [
        (["fine", "a\ud800"], "position 1"),
        (["\udfff"], "position 0"),
        (pd.Series(["ok", "bad \udc80 byte"], index=[10, 20], dtype=object), "index label 20"),
    ],
)
def test_lone_surrogates_are_refused_with_their_position(embedder, texts, position):
    with pytest.raises(ValueError, match="not valid Unicode") as info:
        embedder.transform(texts)
    assert position in str(info.value)


def test_lone_surrogates_are_refused_by_fit_and_pairs(embedder):
    with pytest.raises(ValueError, match=r"not valid Unicode at position 1"):
        SentenceEmbedder(embedder.model_name_or_path, device="cpu").fit(["a", "\ud800"])
    with pytest.raises(ValueError, match=r"second column.*not valid Unicode at position 0"):
        embedder.similarity_pairwise([("a", "b\ud83d")])


# Non-text values that slipped through as embeddings, or failed with a conversion error.
@pytest.mark.parametrize(
    "values",
    [
        [True, False],
        [1.0, "a"],
        [b"bytes", b"more"],
        [None, "a"],
        np.array([1, "a"], dtype=object),
        pd.Series(["a", 1]),
    ],
)
def test_non_text_values_are_refused_with_their_position(embedder, values):
    for method in (embedder.transform, embedder.similarity):
        with pytest.raises((TypeError, ValueError), match=r"position \d") as info:
            method(values)
        assert "every text must be a str" in str(info.value) or "missing" in str(info.value)


@pytest.mark.parametrize(
    "texts",
    [
        ("a cat", "a dog"),
        pd.Series(["a cat", "a dog"], dtype="category"),
        pd.DataFrame({"text": pd.Series(["a cat", "a dog"], dtype="category")}),
        "polars categorical series",
        "polars categorical frame",
        pd.Series(["a cat", "a dog"], dtype="string"),
    ],
)
def test_similarity_accepts_every_text_input_transform_accepts(embedder, texts):
    if isinstance(texts, str):
        # polars is an optional extra: only its cases skip without it.
        pl = pytest.importorskip("polars")
        column = pl.Series(["a cat", "a dog"], dtype=pl.Categorical)
        texts = column if texts.endswith("series") else pl.DataFrame({"text": column})
    expected = embedder.similarity(embedder.transform(["a cat", "a dog"]))
    np.testing.assert_allclose(embedder.similarity(texts), expected, atol=1e-6)


def test_numeric_inputs_are_still_embeddings(embedder):
    x = embedder.transform(["a cat", "a dog"])
    inputs = [x, x.tolist(), pd.DataFrame(x)]
    try:
        import polars as pl
    except ImportError:  # an optional extra: the other containers are still checked
        pass
    else:
        inputs.append(pl.DataFrame(x))
    for as_input in inputs:
        np.testing.assert_allclose(embedder.similarity(as_input), embedder.similarity(x), atol=1e-6)


def test_empty_text_list_gives_empty_results(embedder):
    for empty in ([], (), np.array([], dtype=object), pd.Series([], dtype=object)):
        out = embedder.transform(empty)
        assert out.shape == (0, embedder.n_features_out_) and out.dtype == np.float32
    assert embedder.similarity([]).shape == (0, 0)


def test_transform_refuses_a_column_other_than_the_fitted_one(tiny_model):
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit(pd.DataFrame({"text": ["a"]}))
    with pytest.raises(ValueError, match=r"column\(s\) \['body'\].*fitted on \['text'\]"):
        embedder.transform(pd.DataFrame({"body": ["a cat"]}))
    with pytest.raises(ValueError, match=r"fitted on \['text'\]"):
        embedder.transform(pd.Series(["a cat"], name="body"))
    # The fitted column, or an input without names, is fine.
    assert embedder.transform(pd.DataFrame({"text": ["a cat"]})).shape[0] == 1
    assert embedder.transform(["a cat"]).shape[0] == 1


def test_transform_refuses_one_column_after_a_fit_on_pairs(tiny_model):
    pairs = pd.DataFrame({"s1": ["a cat"], "s2": ["a dog"]})
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit(pairs, [1.0])
    with pytest.raises(ValueError, match="fitted on 2 text columns"):
        embedder.transform(["a cat"])
    assert embedder.similarity_pairwise(pairs).shape == (1,)
