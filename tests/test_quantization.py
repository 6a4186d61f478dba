"""EmbeddingQuantizer: parity with the reference's quantize_embeddings, fixed ranges, search."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd
import pytest
from sentence_transformers.util.quantization import quantize_embeddings
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skembed import EmbeddingQuantizer, PairedSimilarity, SentenceEmbedder

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]
RNG = np.random.default_rng(0)
CALIBRATION = RNG.normal(size=(200, 21)).astype(np.float32)
# Wider than the calibration, so that some values fall outside its ranges.
EMBEDDINGS = (1.3 * RNG.normal(size=(50, 21))).astype(np.float32)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_codes_equal_the_reference_with_the_same_calibration(precision):
    quantizer = EmbeddingQuantizer(precision).fit(CALIBRATION)
    ours = quantizer.transform(EMBEDDINGS)
    expected = quantize_embeddings(
        EMBEDDINGS, precision=precision, calibration_embeddings=CALIBRATION
    )
    assert ours.dtype == expected.dtype
    np.testing.assert_array_equal(ours, expected)
    assert ours.shape[1] == quantizer.n_features_out_ == len(quantizer.get_feature_names_out())


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_the_same_embedding_gets_the_same_code_in_any_batch(precision):
    quantizer = EmbeddingQuantizer(precision).fit(CALIBRATION)
    alone = quantizer.transform(EMBEDDINGS[:1])
    with_others = quantizer.transform(EMBEDDINGS)
    np.testing.assert_array_equal(alone[0], with_others[0])
    # The reference without calibration ranges each call on its own batch: codes drift.
    drifting = quantize_embeddings(EMBEDDINGS[:10], precision=precision)
    assert not np.array_equal(drifting[0], with_others[0])


def test_inverse_transform_is_within_one_bucket():
    quantizer = EmbeddingQuantizer("int8").fit(CALIBRATION)
    inside = CALIBRATION[:20]
    rebuilt = quantizer.inverse_transform(quantizer.transform(inside))
    width = (quantizer.ranges_[1] - quantizer.ranges_[0]) / 255
    assert np.all(rebuilt <= inside + 1e-6)
    assert np.all(inside - rebuilt <= width + 1e-6)


def test_packed_bits_are_compared_by_hamming_distance():
    for precision in ["binary", "ubinary"]:
        quantizer = EmbeddingQuantizer(precision).fit(CALIBRATION)
        codes = quantizer.transform(EMBEDDINGS[:6])
        bits = EMBEDDINGS[:6] > 0
        hamming = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
        np.testing.assert_array_equal(quantizer.similarity(codes), -hamming)
        np.testing.assert_array_equal(
            quantizer.similarity_pairwise(codes, codes[::-1]), -np.diag(hamming[:, ::-1])
        )


def test_int8_similarity_is_the_dot_of_the_codes():
    quantizer = EmbeddingQuantizer("int8").fit(CALIBRATION)
    codes = quantizer.transform(EMBEDDINGS[:5])
    wide = codes.astype(np.int64)
    np.testing.assert_array_equal(quantizer.similarity(codes), wide @ wide.T)
    # uint8 codes are shifted onto the int8 ones, so both precisions score alike.
    unsigned = EmbeddingQuantizer("uint8").fit(CALIBRATION)
    np.testing.assert_array_equal(
        unsigned.similarity(unsigned.transform(EMBEDDINGS[:5])), wide @ wide.T
    )


@pytest.mark.parametrize("precision", ["int8", "binary", "ubinary"])
def test_search_finds_the_rows_and_rescoring_ranks_by_float_dot(precision):
    quantizer = EmbeddingQuantizer(precision).fit(CALIBRATION)
    corpus = quantizer.transform(CALIBRATION)
    scores, indices = quantizer.semantic_search(CALIBRATION[:5], corpus, top_k=3)
    np.testing.assert_array_equal(indices[:, 0], np.arange(5))  # each query finds itself
    assert np.all(np.diff(scores, axis=1) <= 0)
    scores, indices = quantizer.semantic_search(
        CALIBRATION[:5], corpus, top_k=3, rescore=True, rescore_multiplier=200
    )
    # Every candidate rescored: the ranking by the float query's dot with the reconstructions.
    rebuilt = (
        quantizer.inverse_transform(corpus)
        if precision == "int8"
        else (CALIBRATION > 0).astype(float)
    )
    expected = CALIBRATION[:5].astype(np.float64) @ rebuilt.T
    np.testing.assert_array_equal(indices, np.argsort(-expected, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.take_along_axis(expected, indices, 1), rtol=1e-12)


def test_bad_inputs_are_refused_with_what_was_given():
    with pytest.raises(ValueError, match="needs at least 2 samples; got 1 sample"):
        EmbeddingQuantizer("int8").fit(CALIBRATION[:1])
    quantizer = EmbeddingQuantizer("int8").fit(CALIBRATION)
    codes = quantizer.transform(EMBEDDINGS)
    with pytest.raises(ValueError, match="got dtype int8"):
        quantizer.transform(codes)
    with pytest.raises(ValueError, match="2-D int8 array of 21 columns; got a 2-D uint8"):
        quantizer.similarity(codes.view(np.uint8))
    with pytest.raises(ValueError, match="rescore=True rescores"):
        quantizer.semantic_search(codes[:2], codes, rescore=True)
    with pytest.raises(ValueError, match="has no buckets"):
        EmbeddingQuantizer("binary").fit(CALIBRATION).inverse_transform(codes)
    with pytest.raises(ValueError, match="precision"):
        EmbeddingQuantizer("int4").fit(CALIBRATION)


def test_sklearn_citizenship(tmp_path):
    quantizer = EmbeddingQuantizer("ubinary").set_output(transform="pandas")
    frame = quantizer.fit_transform(pd.DataFrame(CALIBRATION))
    assert list(frame.columns) == [f"embeddingquantizer{i}" for i in range(3)]
    fitted = EmbeddingQuantizer("int8").fit(CALIBRATION)
    joblib.dump(fitted, tmp_path / "q.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "q.joblib").transform(EMBEDDINGS), fitted.transform(EMBEDDINGS)
    )
    assert not hasattr(clone(fitted), "ranges_")


def test_grid_search_over_precision_and_truncate_dim(tiny_model, fresh_cache):
    words = ["the cat sits", "a dog plays", "the man plays guitar", "a woman watches tv", "new"]
    pairs = [(a, b) for a in words for b in words if a < b]
    gold = np.arange(len(pairs), dtype=float)
    search = GridSearchCV(
        PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu"), EmbeddingQuantizer()),
        {"embedder__truncate_dim": [8, None], "quantizer__precision": ["float32", "ubinary"]},
        cv=2,
    ).fit(pairs, gold)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    codes = best.quantizer_.transform(best.embedder_.transform([p[0] for p in pairs]))
    expected = best.quantizer_.similarity_pairwise(
        codes, best.quantizer_.transform(best.embedder_.transform([p[1] for p in pairs]))
    )
    np.testing.assert_array_equal(best.transform(pairs).ravel(), expected)
