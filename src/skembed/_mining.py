"""Paraphrase mining and community detection over embeddings, a block of rows at a time."""

from __future__ import annotations

import operator
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import validate_data

from ._constraints import PositiveCount
from ._similarity import Metric, similarity
from ._similarity_function import SimilarityFunction

__all__ = ["CommunityClusterer", "community_detection", "paraphrase_mining"]

# Scores computed at once: rows x n_samples float32 within this many bytes.
_BLOCK_BYTES = 64 << 20


def _block_rows(n_samples: int, max_block_bytes: int | None) -> int:
    budget = _BLOCK_BYTES if max_block_bytes is None else operator.index(max_block_bytes)
    if budget < 4 * n_samples:
        raise ValueError(
            f"max_block_bytes={max_block_bytes} cannot hold one row of {n_samples} float32 scores."
        )
    return max(1, budget // (4 * max(1, n_samples)))


def _embeddings(X: Any) -> np.ndarray:
    rows = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X)
    if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.floating):
        raise ValueError(
            f"Expected float embeddings of shape (n_samples, n_features); got a {rows.ndim}-D "
            f"{rows.dtype} array of shape {rows.shape}."
        )
    return rows


def paraphrase_mining(
    X: Any,
    *,
    top_k: int = 100,
    max_pairs: int = 500_000,
    metric: Metric = "cosine",
    max_block_bytes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the most similar pairs of rows among all pairs.

    The reference library's ``paraphrase_mining_embeddings``: each row's
    ``top_k`` most similar other rows are candidates, and the ``max_pairs``
    best distinct candidate pairs are returned, best first. The similarity
    matrix is never built: scores are computed one block of rows at a time,
    each within ``max_block_bytes``.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Embeddings, e.g. ``SentenceEmbedder().fit_transform(texts)``.
    top_k : int, default=100
        Candidates per row.
    max_pairs : int, default=500000
        Most pairs returned.
    metric : str or SimilarityFunction, default="cosine"
        Similarity function; assumed symmetric.
    max_block_bytes : int, default=None
        Bound on the float32 scores computed at once; ``None`` means 64 MiB.

    Returns
    -------
    scores : ndarray of shape (n_pairs,)
        Decreasing; float32 for float32 embeddings.
    pairs : ndarray of shape (n_pairs, 2), int64
        Row indices ``i < j`` of each pair. The reference's
        ``[score, i, j]`` triples are ``zip(scores, *pairs.T)``.

    Notes
    -----
    A pair's score is that computed for the lower row when the higher row is
    among its candidates, else for the higher row, as in the reference.
    Ties are broken deterministically: among rows of equal score the lower
    index is a candidate first, and pairs of equal score are listed (and
    kept at the ``max_pairs`` cut) in increasing ``(i, j)``. The reference
    breaks them by ``torch.topk`` and heap order, so at an exact tie the two
    may list, or keep, different pairs of that same score.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import paraphrase_mining
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> scores, pairs = paraphrase_mining(X, top_k=1)
    >>> pairs
    array([[0, 1],
           [1, 2]])
    """
    E = _embeddings(X)
    n = E.shape[0]
    top_k = operator.index(top_k)
    max_pairs = operator.index(max_pairs)
    if top_k < 1 or max_pairs < 1:
        raise ValueError(f"top_k and max_pairs must be >= 1; got {top_k} and {max_pairs}.")
    SimilarityFunction(metric)
    rows = _block_rows(n, max_block_bytes)
    k = min(top_k, n - 1)
    kept_scores = np.empty(0, dtype=np.result_type(E.dtype, np.float32))
    kept_pairs = np.empty((0, 2), dtype=np.int64)
    for start in range(0, n if k > 0 else 0, rows):
        block = np.array(similarity(E[start : start + rows], E, metric=metric))
        query = np.arange(start, start + block.shape[0])
        scores, columns = _top_columns(block, k, query)
        query = np.repeat(query, k)
        found = np.sort(np.stack([query, columns.ravel()], axis=1), axis=1)
        kept_scores, kept_pairs = _best_pairs(
            np.concatenate([kept_scores, scores.ravel()]),
            np.concatenate([kept_pairs, found]),
            max_pairs,
        )
    return kept_scores, kept_pairs


def _top_columns(scores: np.ndarray, k: int, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` best columns other than its own; of equal scores the lower column first.

    A row's own column is left out by position, not by score: among scores of -inf (a
    distance that overflowed) a score could not tell it apart.
    """
    # A stable sort on the negated scores orders equal scores by column.
    order = np.argsort(-scores, axis=1, kind="stable")
    order = order[order != own[:, None]].reshape(len(order), -1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


def _best_pairs(
    scores: np.ndarray, pairs: np.ndarray, max_pairs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs (the first-found score of each), the ``max_pairs`` best, best first."""
    _, first = np.unique(pairs, axis=0, return_index=True)
    first.sort()  # keep the found order, so each pair keeps the score found first
    scores, pairs = scores[first], pairs[first]
    order = np.lexsort((pairs[:, 1], pairs[:, 0], -scores))[:max_pairs]
    return scores[order], pairs[order]


def community_detection(
    X: Any,
    *,
    threshold: float = 0.75,
    min_community_size: int = 10,
    batch_size: int = 1024,
) -> list[list[int]]:
    """Find communities: rows whose cosine similarity to a central row reaches a threshold.

    The reference library's ``community_detection``, a block of
    ``batch_size`` rows at a time. Every row with at least
    ``min_community_size`` rows (itself included) at cosine similarity
    ``>= threshold`` is a candidate centre; candidates are taken largest
    first, each keeping the rows no earlier community took, and kept if at
    least ``min_community_size`` remain.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Embeddings.
    threshold : float, default=0.75
        Least cosine similarity to the centre.
    min_community_size : int, default=10
        Fewest rows in a community.
    batch_size : int, default=1024
        Rows whose similarities are computed at once.

    Returns
    -------
    list of list of int
        Communities, largest first; each starts with its centre, then its
        other rows by decreasing similarity to it.

    Notes
    -----
    Ties: communities of equal size keep the order of their centres' rows
    (as in the reference, whose sorts are stable), and rows of equal
    similarity to a centre are listed by index (the reference lists them in
    ``torch.topk`` order, so the same members may come in another order).

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import community_detection
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    >>> community_detection(X, threshold=0.9, min_community_size=2)
    [[2, 4, 3], [0, 1]]
    """
    E = _embeddings(X)
    if not np.isfinite(E).all():
        # As similarity() and paraphrase_mining: a NaN would silently match nothing.
        raise ValueError("X holds NaN or infinity; community detection needs finite embeddings.")
    batch_size = operator.index(batch_size)
    min_community_size = operator.index(min_community_size)
    if batch_size < 1 or min_community_size < 1:
        raise ValueError(
            f"batch_size and min_community_size must be >= 1; got {batch_size} and "
            f"{min_community_size}."
        )
    n = E.shape[0]
    if n < min_community_size:
        return []
    # The reference's arithmetic (torch, float32 unit rows, one matrix product per block), so
    # that scores at the threshold fall on the same side of it.
    # torch warns on read-only arrays (a cached transform output is one); normalize copies anyway.
    rows = torch.as_tensor(E if E.flags.writeable else E.copy())
    unit = torch.nn.functional.normalize(rows, p=2.0, dim=1)
    # The reference compares with a float32 threshold, whatever the embeddings' dtype.
    level = np.float32(threshold)
    candidates = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            scores = (unit[start : start + batch_size] @ unit.T).numpy()
            close = scores >= level
            for row in np.flatnonzero(close.sum(axis=1) >= min_community_size):
                members = np.flatnonzero(close[row])
                members = members[np.argsort(-scores[row, members], kind="stable")]
                candidates.append((start + int(row), members))
    candidates.sort(key=lambda candidate: len(candidate[1]), reverse=True)
    taken = np.zeros(n, dtype=bool)
    communities = []
    for centre, members in candidates:
        if taken[centre]:
            continue
        free = members[~taken[members]]
        if len(free) >= min_community_size:
            community = [centre, *free[free != centre].tolist()]
            communities.append(community)
            taken[community] = True
    return sorted(communities, key=len, reverse=True)


class CommunityClusterer(ClusterMixin, BaseEstimator):
    """Cluster embeddings into communities around central rows.

    A scikit-learn clusterer around :func:`community_detection`: rows of a
    community share its label, the largest community is 0, and rows in no
    community are labelled -1 (noise, as in DBSCAN).

    Parameters
    ----------
    threshold : float, default=0.75
        Least cosine similarity to a community's centre.
    min_community_size : int, default=10
        Fewest rows in a community.
    batch_size : int, default=1024
        Rows whose similarities are computed at once.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,), int64
        Community of each row, or -1.
    communities_ : list of list of int
        The communities, as :func:`community_detection` returns them.
    centers_ : ndarray of shape (n_communities,), int64
        The centre row of each community.
    n_features_in_ : int
        Embedding size seen in :meth:`fit`.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import CommunityClusterer
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    >>> CommunityClusterer(threshold=0.9, min_community_size=2).fit_predict(X)
    array([1, 1, 0, 0, 0])
    """

    _parameter_constraints: ClassVar[dict] = {
        "threshold": [Interval(Real, None, None, closed="neither")],
        "min_community_size": [PositiveCount()],
        "batch_size": [PositiveCount()],
    }

    def __init__(
        self, threshold: float = 0.75, min_community_size: int = 10, batch_size: int = 1024
    ) -> None:
        self.threshold = threshold
        self.min_community_size = min_community_size
        self.batch_size = batch_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> CommunityClusterer:
        """Find the communities of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Embeddings.
        y : ignored

        Returns
        -------
        self : CommunityClusterer
        """
        X = validate_data(self, X, dtype=[np.float32, np.float64])
        self.communities_ = community_detection(
            X,
            threshold=self.threshold,
            min_community_size=self.min_community_size,
            batch_size=self.batch_size,
        )
        self.labels_ = np.full(X.shape[0], -1, dtype=np.int64)
        for label, community in enumerate(self.communities_):
            self.labels_[community] = label
        self.centers_ = np.asarray([c[0] for c in self.communities_], dtype=np.int64)
        return self
