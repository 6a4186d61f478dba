"""scikit-learn's estimator checks for the estimators that take embeddings (numbers)."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from skembed import CommunityClusterer, EmbeddingQuantizer


@parametrize_with_checks(
    [
        EmbeddingQuantizer(),
        EmbeddingQuantizer("ubinary"),
        CommunityClusterer(threshold=0.5, min_community_size=2),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
