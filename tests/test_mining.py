"""paraphrase_mining, community_detection and CommunityClusterer against the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers.util import community_detection as reference_communities
from sentence_transformers.util import paraphrase_mining_embeddings
from sklearn.base import clone

from skembed import CommunityClusterer, community_detection, paraphrase_mining


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 20, 16))
    return (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, 16))).astype(
        np.float32
    )


def _assert_same_ranking(scores, pairs, expected_scores, expected_pairs, tol):
    """Equal scores within ``tol``; equal pairs, but for order swaps within near-equal scores."""
    assert len(pairs) == len(expected_pairs)
    np.testing.assert_allclose(scores, expected_scores, atol=tol, rtol=0)
    same = (pairs == expected_pairs).all(axis=1)
    near_tie = np.abs(np.diff(expected_scores, prepend=np.inf)) < tol
    near_tie |= np.abs(np.diff(expected_scores, append=-np.inf)) < tol
    assert np.all(same | near_tie), np.flatnonzero(~(same | near_tie))
    # A near tie at the max_pairs cut may keep either pair; above it the sets agree.
    above = expected_scores > expected_scores[-1] + tol
    assert {tuple(p) for p in pairs[above]} == {tuple(p) for p in expected_pairs[above]}


def _reference_pairs(X, **kwargs):
    triples = paraphrase_mining_embeddings(torch.from_numpy(X), **kwargs)
    return np.array([t[0] for t in triples]), np.array([t[1:] for t in triples])


@pytest.mark.reference_fix("paraphrase_mining keeps each query's top_k across corpus chunks")
@pytest.mark.parametrize(("top_k", "max_pairs"), [(5, 10_000), (3, 200), (50, 100_000)])
def test_paraphrase_mining_equals_the_reference(top_k, max_pairs):
    X = _clustered(400)
    scores, pairs = paraphrase_mining(X, top_k=top_k, max_pairs=max_pairs)
    expected_scores, expected_pairs = _reference_pairs(X, top_k=top_k, max_pairs=max_pairs)
    _assert_same_ranking(scores, pairs, expected_scores, expected_pairs, 1e-6)


def test_paraphrase_mining_streams_in_blocks_with_the_same_result():
    X = _clustered(300)
    whole = paraphrase_mining(X, top_k=4, max_pairs=500)
    blocks = paraphrase_mining(X, top_k=4, max_pairs=500, max_block_bytes=4 * 300 * 7)
    # Blocks of other heights may round a score differently in its last float32 bit.
    _assert_same_ranking(*blocks, *whole, 1e-6)


def test_paraphrase_mining_ties_list_lower_pairs_first():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores, pairs = paraphrase_mining(X, top_k=3, max_pairs=2)
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2]])
    np.testing.assert_array_equal(scores, [1.0, 1.0])


@pytest.mark.reference_fix("community_detection as rewritten in 6.2")
@pytest.mark.parametrize(("threshold", "size"), [(0.7, 5), (0.8, 3), (0.95, 2)])
def test_community_detection_equals_the_reference(threshold, size):
    X = _clustered(500)
    ours = community_detection(X, threshold=threshold, min_community_size=size, batch_size=128)
    expected = reference_communities(X, threshold=threshold, min_community_size=size)
    assert len(ours) > 1
    assert [c[0] for c in ours] == [c[0] for c in expected]
    assert [sorted(c) for c in ours] == [sorted(c) for c in expected]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="got a 2-D int64 array"):
        paraphrase_mining(np.ones((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="top_k and max_pairs must be >= 1; got 0"):
        paraphrase_mining(np.ones((3, 2)), top_k=0)
    with pytest.raises(ValueError, match="max_block_bytes=8 cannot hold one row"):
        paraphrase_mining(np.ones((3, 2)), max_block_bytes=8)
    with pytest.raises(ValueError, match="Unknown similarity function"):
        paraphrase_mining(np.ones((3, 2)), metric="jaccard")
    with pytest.raises(ValueError, match="min_community_size"):
        CommunityClusterer(min_community_size=0).fit(np.ones((3, 2)))


def test_clusterer_labels_follow_the_communities():
    X = _clustered(300)
    clusterer = CommunityClusterer(threshold=0.75, min_community_size=4)
    labels = clusterer.fit_predict(X)
    communities = community_detection(X, threshold=0.75, min_community_size=4)
    assert clusterer.communities_ == communities
    for label, community in enumerate(communities):
        assert set(np.flatnonzero(labels == label)) == set(community)
    assert set(np.flatnonzero(labels == -1)).isdisjoint(set().union(*map(set, communities)))
    np.testing.assert_array_equal(clusterer.centers_, [c[0] for c in communities])
    assert not hasattr(clone(clusterer), "labels_")


@pytest.mark.integration
@pytest.mark.slow
def test_mining_and_communities_equal_the_reference_on_2000_stsb_sentences(
    real_model, stsb_test, fresh_cache
):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.util import paraphrase_mining as reference_mining

    from skembed import SentenceEmbedder

    sentences = list(
        dict.fromkeys(stsb_test["sentence1"].tolist() + stsb_test["sentence2"].tolist())
    )[:2000]
    reference = SentenceTransformer(str(real_model), device="cpu")
    ours = SentenceEmbedder(real_model, device="cpu").fit().transform(sentences)
    theirs = reference.encode(sentences)

    triples = reference_mining(reference, sentences, top_k=10, max_pairs=5000)
    scores, pairs = paraphrase_mining(ours, top_k=10, max_pairs=5000)
    assert len(pairs) == 5000
    expected_scores = np.array([t[0] for t in triples])
    expected_pairs = np.array([t[1:] for t in triples])
    # The two libraries' embeddings agree to about 1e-7.
    _assert_same_ranking(scores, pairs, expected_scores, expected_pairs, 1e-5)

    ours_found = community_detection(ours, threshold=0.6, min_community_size=5)
    expected = reference_communities(theirs, threshold=0.6, min_community_size=5)
    assert len(ours_found) > 5
    assert [sorted(c) for c in ours_found] == [sorted(c) for c in expected]
    assert [c[0] for c in ours_found] == [c[0] for c in expected]


def test_clusterer_ends_a_pipeline_from_texts(tiny_model, fresh_cache):
    from sklearn.pipeline import make_pipeline

    from skembed import SentenceEmbedder

    texts = ["the cat sits", "the cat sits", "a dog plays", "the cat sits in the garden"]
    pipeline = make_pipeline(
        SentenceEmbedder(tiny_model, device="cpu"), CommunityClusterer(0.99, 2)
    )
    labels = pipeline.fit_predict(texts)
    assert labels[0] == labels[1] == 0  # the same text twice: similarity 1
    embeddings = SentenceEmbedder(tiny_model, device="cpu").fit_transform(texts)
    np.testing.assert_array_equal(labels, CommunityClusterer(0.99, 2).fit_predict(embeddings))
