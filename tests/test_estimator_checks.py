"""scikit-learn's estimator checks, and their text-data counterparts.

The estimators' tags say they take strings (``input_tags.string``) in 1-D or
2-D containers. scikit-learn's checks still generate *numeric* arrays for
every check that fits or transforms data, and skembed refuses numbers with a
TypeError naming the first non-text value, so those checks are listed below
as expected failures, each with its reason. The API checks that need no data
run and pass. ``test_text_*`` below re-runs what the data checks verify, with
texts, on a tiny random BERT.
"""

from __future__ import annotations

import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skembed import PairedSimilarity, SentenceEmbedder
from skembed.cache import clear_cache

NUMERIC = (
    "the check feeds numeric arrays; skembed estimators take texts and refuse numbers with a "
    "TypeError naming the first non-text value (the text counterpart is tested below)"
)
SPARSE = (
    "the check feeds a sparse numeric matrix and expects scikit-learn's own 'sparse' error "
    "message; texts cannot be sparse and skembed raises a TypeError saying what it expects"
)
NAN = (
    "the check feeds NaN/inf numbers; missing *texts* are governed by the missing= policy "
    "(tested in test_sklearn_ecosystem.py)"
)
DTYPES = "the check feeds float32/int/object numeric arrays; only str values are texts"

EXPECTED_FAILED_CHECKS = {
    "check_complex_data": DTYPES,
    "check_dict_unchanged": NUMERIC,
    "check_dont_overwrite_parameters": NUMERIC,
    "check_dtype_object": DTYPES,
    "check_estimator_sparse_array": SPARSE,
    "check_estimator_sparse_matrix": SPARSE,
    "check_estimator_sparse_tag": SPARSE,
    "check_estimators_dtypes": DTYPES,
    "check_estimators_empty_data_messages": (
        "an empty collection of texts is valid input and encodes to a (0, d) matrix; the check "
        "wants fit to reject empty numeric data"
    ),
    "check_estimators_fit_returns_self": NUMERIC,
    "check_estimators_nan_inf": NAN,
    "check_estimators_overwrite_params": NUMERIC,
    "check_estimators_pickle": NUMERIC,
    "check_estimators_pickle(readonly_memmap=True)": NUMERIC,
    "check_f_contiguous_array_estimator": NUMERIC,
    "check_fit2d_1feature": NUMERIC,
    "check_fit2d_1sample": NUMERIC,
    "check_fit2d_predict1d": NUMERIC,
    "check_fit_check_is_fitted": NUMERIC,
    "check_fit_idempotent": NUMERIC,
    "check_fit_score_takes_y": NUMERIC,
    "check_methods_sample_order_invariance": NUMERIC,
    "check_methods_subset_invariance": NUMERIC,
    "check_n_features_in": NUMERIC,
    "check_n_features_in_after_fitting": NUMERIC,
    "check_pipeline_consistency": NUMERIC,
    "check_positive_only_tag_during_fit": NUMERIC,
    "check_readonly_memmap_input": NUMERIC,
    "check_transformer_data_not_an_array": NUMERIC,
    "check_transformer_general": NUMERIC,
    "check_transformer_general(readonly_memmap=True)": NUMERIC,
    "check_transformer_preserve_dtypes": NUMERIC,
}


def expected_failed_checks(estimator) -> dict[str, str]:
    failed = dict(EXPECTED_FAILED_CHECKS)
    if isinstance(estimator, SentenceEmbedder):
        # A 1-D numeric array is refused for being numbers; PairedSimilarity refuses it for
        # having one column, which is the error the check wants.
        failed["check_fit1d"] = NUMERIC
    return failed


@parametrize_with_checks(
    [SentenceEmbedder(device="cpu"), PairedSimilarity(SentenceEmbedder(device="cpu"))],
    expected_failed_checks=expected_failed_checks,
    # A listed check that starts to pass fails the run, so the list and its count in
    # docs/installation.rst cannot go stale.
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


TEXTS = [
    "the cat sits outside",
    "a man is playing guitar",
    "the new movie is awesome",
    "a woman watches tv",
    "the dog plays in the garden",
    "he drove to the stadium",
]
PAIRS = list(zip(TEXTS, TEXTS[::-1], strict=True))


@pytest.fixture(params=["embedder", "pairs"])
def case(request, tiny_model):
    """(unfitted estimator, valid input) for each skembed estimator."""
    embedder = SentenceEmbedder(tiny_model, device="cpu")
    if request.param == "embedder":
        return embedder, TEXTS
    return PairedSimilarity(embedder), PAIRS


def test_text_fit_returns_self_and_keeps_params(case):
    estimator, X = case
    before = joblib.hash(estimator.get_params())
    assert estimator.fit(X) is estimator
    assert joblib.hash(estimator.get_params()) == before


def test_text_transform_keeps_dict_and_is_idempotent(case):
    estimator, X = case
    first = estimator.fit(X).transform(X)
    state = dict(estimator.__dict__)
    assert np.array_equal(estimator.transform(X), first)
    assert estimator.__dict__.keys() == state.keys()
    assert all(estimator.__dict__[k] is v for k, v in state.items())
    np.testing.assert_array_equal(estimator.fit(X).transform(X), first)
    np.testing.assert_array_equal(clone(estimator).fit_transform(X), first)


def test_text_sample_order_and_subset_invariance(case):
    estimator, X = case
    estimator.fit(X)
    clear_cache()  # compute every subset afresh, not from the cache
    full = estimator.transform(X)
    order = np.random.default_rng(0).permutation(len(X))
    clear_cache()
    np.testing.assert_allclose(estimator.transform([X[i] for i in order]), full[order], atol=1e-6)
    for start in range(0, len(X), 2):
        clear_cache()
        np.testing.assert_allclose(
            estimator.transform(X[start : start + 2]), full[start : start + 2], atol=1e-6
        )


def test_text_unfitted_and_pickle(case):
    estimator, X = case
    with pytest.raises(NotFittedError):
        estimator.transform(X)
    expected = estimator.fit(X).transform(X)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.transform(X), expected)


def test_text_n_features_in_and_names(case):
    estimator, X = case
    estimator.fit(X)
    out = estimator.transform(X)
    assert estimator.n_features_in_ == (1 if X is TEXTS else 2)
    assert len(estimator.get_feature_names_out()) == out.shape[1]
    assert out.dtype == np.float32 and out.shape[0] == len(X)


def test_text_non_text_values_are_refused(case):
    estimator, X = case
    bad = [1.5] * len(X) if X is TEXTS else [(1.5, 2.5)] * len(X)
    with pytest.raises(TypeError, match="every text must be a str"):
        estimator.fit(bad)
