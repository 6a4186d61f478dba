"""truncate_dim (Matryoshka truncation) and the reference library's SimilarityFunction members."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers import SimilarityFunction as ReferenceFunction
from sklearn.model_selection import GridSearchCV

from skembed import SentenceEmbedder, SimilarityFunction, similarity

TEXTS = ["the cat sits in the garden", "a man is playing guitar", "the dog plays", "new tv"]

pytestmark = pytest.mark.usefixtures("fresh_cache")


def _reference(folder, **kwargs):
    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS, **kwargs)


@pytest.mark.parametrize("normalize_folder", [False, True])
@pytest.mark.parametrize("normalize_embeddings", [False, True])
def test_truncate_dim_matches_reference(make_tiny_model, normalize_folder, normalize_embeddings):
    # With a Normalize module the reference cuts after it (rows not unit length);
    # normalize_embeddings normalises after the cut.
    folder = make_tiny_model(normalize=normalize_folder)
    embedder = SentenceEmbedder(
        folder, device="cpu", truncate_dim=8, normalize_embeddings=normalize_embeddings
    ).fit()
    ours = embedder.transform(TEXTS)
    expected = _reference(folder, truncate_dim=8, normalize_embeddings=normalize_embeddings)
    assert ours.shape == (len(TEXTS), 8) == expected.shape
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)
    assert embedder.n_features_out_ == 8
    assert len(embedder.get_feature_names_out()) == 8


def test_truncation_reuses_the_full_cached_rows(tiny_model):
    full = SentenceEmbedder(tiny_model, device="cpu").fit().transform(TEXTS)
    cut = SentenceEmbedder(tiny_model, device="cpu", truncate_dim=5).fit().transform(TEXTS)
    np.testing.assert_array_equal(cut, full[:, :5])
    cut[0, 0] = 123.0  # the caller's copy: the cache keeps serving the model's rows
    again = SentenceEmbedder(tiny_model, device="cpu", truncate_dim=5).fit().transform(TEXTS)
    np.testing.assert_array_equal(again, full[:, :5])


def test_truncate_dim_larger_than_the_model_is_refused(tiny_model):
    with pytest.raises(ValueError, match="truncate_dim=33 exceeds the 32 embedding dimensions"):
        SentenceEmbedder(tiny_model, truncate_dim=33).fit()
    with pytest.raises(ValueError, match="truncate_dim"):
        SentenceEmbedder(tiny_model, truncate_dim=0).fit()


def test_save_records_truncate_dim_for_both_libraries(tiny_model, tmp_path):
    embedder = SentenceEmbedder(tiny_model, device="cpu", truncate_dim=6).fit()
    embedder.save(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config_sentence_transformers.json").read_text())
    assert config["truncate_dim"] == 6
    reloaded = SentenceEmbedder(tmp_path / "saved", device="cpu").fit()
    assert reloaded.truncate_dim_ == 6
    np.testing.assert_array_equal(reloaded.transform(TEXTS), embedder.transform(TEXTS))
    np.testing.assert_allclose(
        _reference(tmp_path / "saved"), embedder.transform(TEXTS), atol=1e-6, rtol=0
    )


def test_save_refuses_truncation_with_normalisation(tiny_model, tmp_path):
    embedder = SentenceEmbedder(
        tiny_model, device="cpu", truncate_dim=6, normalize_embeddings=True
    ).fit()
    with pytest.raises(ValueError, match="normalize_embeddings=False"):
        embedder.save(tmp_path / "saved")


def test_grid_search_over_truncate_dim(tiny_model):
    pairs = [(a, b) for a in TEXTS for b in TEXTS if a != b]
    gold = np.arange(len(pairs), dtype=float)
    search = GridSearchCV(
        SentenceEmbedder(tiny_model, device="cpu"), {"truncate_dim": [4, 16, None]}, cv=2
    ).fit(pairs, gold)
    assert list(search.cv_results_["param_truncate_dim"]) == [4, 16, None]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.parametrize(
    "member", [ReferenceFunction.COSINE, ReferenceFunction.DOT_PRODUCT, ReferenceFunction.MANHATTAN]
)
def test_reference_members_are_accepted(tiny_model, member):
    assert SimilarityFunction(member).value == member.value
    embedder = SentenceEmbedder(tiny_model, similarity_fn_name=member).fit()
    assert embedder.similarity_fn_name_ == member.value
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_array_equal(similarity(x, metric=member), similarity(x, metric=member.value))


@pytest.mark.parametrize(
    "name", [ReferenceFunction.MAXSIM, ReferenceFunction.MEAN_MAXSIM, "maxsim"]
)
def test_maxsim_is_refused_as_not_supported(tiny_model, name):
    with pytest.raises(ValueError, match="is not supported: late-interaction MaxSim"):
        SentenceEmbedder(tiny_model, similarity_fn_name=name).fit()
    with pytest.raises(ValueError, match="is not supported"):
        similarity(np.eye(2), metric=name)


def test_unknown_metric_is_named(tiny_model):
    with pytest.raises(ValueError, match="Unknown similarity function 'bogus'"):
        SentenceEmbedder(tiny_model, similarity_fn_name="bogus").fit()
    with pytest.raises(ValueError, match="instance of 'str'"):
        SentenceEmbedder(tiny_model, similarity_fn_name=3).fit()
