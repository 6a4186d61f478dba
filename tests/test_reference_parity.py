"""Integration: the real all-MiniLM-L6-v2 against sentence-transformers and published figures."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pytest
import torch
from conftest import METRICS
from sklearn.model_selection import GridSearchCV

from skembed import SentenceEmbedder, SimilarityFunction, paired_similarity, similarity

pytestmark = pytest.mark.integration

SEED = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
# The tables of the reference documentation, as printed there (4 decimals).
SEED_COSINE = "[[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]"
SEED_MANHATTAN = (
    "[[-0.0000, -12.6269, -20.2167], [-12.6269, -0.0000, -20.1288], [-20.2167, -20.1288, -0.0000]]"
)
SENTENCES1 = ["The new movie is awesome", "The cat sits outside", "A man is playing guitar"]
SENTENCES2 = ["The dog plays in the garden", "The new movie is so great", "A woman watches TV"]
PAIRS_COSINE = "[[0.0543, 0.8939, -0.0502], [0.2838, -0.0029, 0.1310], [0.2277, -0.0136, -0.0327]]"


def table(matrix) -> str:
    """Format a matrix the way the reference documentation prints it."""
    return "[" + ", ".join("[" + ", ".join(f"{v:.4f}" for v in row) + "]" for row in matrix) + "]"


@pytest.fixture(scope="module")
def embedder(real_model):
    return SentenceEmbedder(real_model, device="cpu").fit()


@pytest.fixture(scope="module")
def reference(real_model):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(real_model), device="cpu")


@pytest.fixture(scope="module")
def dev_sentences(stsb_dev):
    unique = dict.fromkeys(stsb_dev["sentence1"].tolist() + stsb_dev["sentence2"].tolist())
    return list(unique)[:2000]


@pytest.fixture(scope="module")
def dev_embeddings(embedder, reference, dev_sentences):
    return embedder.transform(dev_sentences), reference.encode(dev_sentences)


def test_seed_tables(embedder):
    embeddings = embedder.transform(SEED)
    assert table(embedder.similarity(embeddings, embeddings)) == SEED_COSINE
    embedder.similarity_fn_name = SimilarityFunction.MANHATTAN
    try:
        assert table(embedder.similarity(embeddings, embeddings)) == SEED_MANHATTAN
    finally:
        embedder.similarity_fn_name = None
    cross = embedder.similarity(embedder.transform(SENTENCES1), embedder.transform(SENTENCES2))
    assert table(cross) == PAIRS_COSINE


def test_default_model_name_resolves_to_bundled_model():
    embedder = SentenceEmbedder(device="cpu").fit()
    assert embedder.n_features_out_ == 384
    assert table(embedder.similarity(SEED)) == SEED_COSINE


def test_embeddings_match_reference_on_2000_dev_sentences(dev_sentences, dev_embeddings):
    ours, theirs = dev_embeddings
    assert len(dev_sentences) == 2000
    assert ours.shape == theirs.shape == (2000, 384)
    assert np.abs(ours - theirs).max() <= 1e-5


@pytest.mark.parametrize("metric", METRICS)
def test_similarity_matches_reference_util(dev_embeddings, metric):
    from sentence_transformers import SimilarityFunction as ReferenceFunction

    ours, _ = dev_embeddings
    a, b = ours[:1000], ours[1000:]
    matrix = ReferenceFunction.to_similarity_fn(metric)(torch.from_numpy(a), torch.from_numpy(b))
    assert np.abs(similarity(a, b, metric) - matrix.numpy()).max() <= 1e-4
    rows = ReferenceFunction.to_similarity_pairwise_fn(metric)(
        torch.from_numpy(a), torch.from_numpy(b)
    )
    assert np.abs(paired_similarity(a, b, metric) - rows.numpy()).max() <= 1e-4


@pytest.mark.parametrize(("split", "published"), [("test", 82.03), ("dev", 86.72)])
def test_stsb_spearman_matches_published(embedder, request, split, published):
    frame = request.getfixturevalue(f"stsb_{split}")
    score = embedder.score(frame[["sentence1", "sentence2"]], frame["score"])
    assert round(100 * score, 2) == published


def test_grid_search_over_metrics_on_stsb_dev(real_model, stsb_dev):
    search = GridSearchCV(
        SentenceEmbedder(real_model, device="cpu"),
        {"similarity_fn_name": METRICS},
        cv=3,
    ).fit(stsb_dev[["sentence1", "sentence2"]], stsb_dev["score"])
    assert [p["similarity_fn_name"] for p in search.cv_results_["params"]] == METRICS
    assert np.all(search.cv_results_["mean_test_score"] > 0.8)


def test_joblib_dump_is_small_and_reloads_bit_identical(embedder, dev_sentences):
    expected = embedder.transform(dev_sentences[:200])
    buffer = io.BytesIO()
    joblib.dump(embedder, buffer)
    assert len(buffer.getvalue()) < 1_000_000
    buffer.seek(0)
    np.testing.assert_array_equal(joblib.load(buffer).transform(dev_sentences[:200]), expected)


def test_saved_folder_loads_in_reference(real_model, tmp_path, dev_sentences):
    from sentence_transformers import SentenceTransformer

    embedder = SentenceEmbedder(real_model, device="cpu", similarity_fn_name="manhattan").fit()
    embedder.save(tmp_path / "saved")
    reloaded = SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert reloaded.similarity_fn_name == "manhattan"
    texts = dev_sentences[:300]
    assert np.abs(reloaded.encode(texts) - embedder.transform(texts)).max() <= 1e-5
    ours = SentenceEmbedder(tmp_path / "saved", device="cpu").fit(texts)
    assert ours.similarity_fn_name_ == "manhattan"


def test_pandas_output_keeps_index_with_real_model(real_model):
    import pandas as pd

    series = pd.Series(SEED * 7, index=range(100, 121)).iloc[:20]
    frame = SentenceEmbedder(real_model, device="cpu").set_output(transform="pandas")
    out = frame.fit_transform(series)
    assert out.shape == (20, 384)
    assert list(out.index) == list(range(100, 120))


def test_column_transformer_with_real_model(real_model):
    import pandas as pd
    from sklearn.compose import ColumnTransformer

    frame = pd.DataFrame({"text": SENTENCES1 + SENTENCES2, "x": range(6)})
    out = ColumnTransformer(
        [("emb", SentenceEmbedder(real_model, device="cpu"), "text"), ("num", "passthrough", ["x"])]
    ).fit_transform(frame)
    assert out.shape == (6, 385)


def test_paraphrase_grid_search_on_stsb_train(real_model, stsb_train):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from skembed import PairedSimilarity

    train = stsb_train.head(900)
    search = GridSearchCV(
        Pipeline(
            [
                ("sim", PairedSimilarity(SentenceEmbedder(real_model, device="cpu"))),
                ("clf", LogisticRegression()),
            ]
        ),
        {"sim__embedder__similarity_fn_name": METRICS},
        cv=3,
        n_jobs=2,
    ).fit(train[["sentence1", "sentence2"]], (train["score"] >= 3).astype(int))
    assert len(search.cv_results_["params"]) == 4
    assert search.best_score_ > 0.75
