"""STS evaluation: how well pair similarities rank like gold scores, for every metric."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.base import clone

from ._inputs import as_text_pairs, embed_pairs
from ._options import allows_missing
from ._similarity import paired_similarity
from ._similarity_function import SimilarityFunction

__all__ = ["evaluate_sts", "spearman_score"]


def _gold(scores: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pair scores and gold scores as float64 vectors of one length."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    gold = np.asarray(y, dtype=np.float64).ravel()
    if len(gold) != len(scores):
        raise ValueError(f"X has {len(scores)} pairs but y has {len(gold)} scores.")
    return scores, gold


def spearman_score(scores: Any, y: Any) -> float:
    """Spearman's rho between pair similarities and gold scores (the STS score)."""
    return float(spearmanr(*_gold(scores, y)).statistic)


def evaluate_sts(
    embedder: Any, X: Any, y: Any, *, metrics: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """Pearson and Spearman correlations of each metric's pair similarities with gold scores.

    The STS evaluation of the reference library (its
    ``EmbeddingSimilarityEvaluator``), for several metrics at once: the texts
    are encoded once, then each pair is scored with each metric. ``skembed
    evaluate`` prints these figures (x 100).

    Parameters
    ----------
    embedder : SentenceEmbedder
        The embedder; a clone of it is fitted, so ``embedder`` is left as it is.
    X : text pairs
        Two-column DataFrame, ``(n, 2)`` array or list of 2-tuples.
    y : array-like of shape (n,)
        Gold similarity scores.
    metrics : list of str, default=None
        Metrics to evaluate; ``None`` means all four.

    Returns
    -------
    dict
        ``{metric: {"spearman": rho, "pearson": r}}``, in the order of
        ``metrics``.

    Examples
    --------
    >>> from skembed import SentenceEmbedder, evaluate_sts
    >>> from skembed.datasets import load_stsb
    >>> dev = load_stsb("dev")
    >>> figures = evaluate_sts(SentenceEmbedder(), dev[["sentence1", "sentence2"]],
    ...                        dev["score"])  # doctest: +SKIP
    >>> round(100 * figures["cosine"]["spearman"], 2)  # doctest: +SKIP
    86.72
    """
    names = [SimilarityFunction(m).value for m in (metrics or SimilarityFunction.possible_values())]
    # A clone fitted on no input: its transform takes one column of texts whatever
    # ``embedder`` was fitted on (texts or pairs).
    fitted = clone(embedder).fit()
    first, second = as_text_pairs(X, allow_missing=allows_missing(fitted.missing))
    x, y_embeddings = embed_pairs(first, second, fitted.transform)
    figures = {}
    for name in names:
        scores, gold = _gold(paired_similarity(x, y_embeddings, metric=name), y)
        figures[name] = {
            "spearman": float(spearmanr(scores, gold).statistic),
            "pearson": float(pearsonr(scores, gold).statistic),
        }
    return figures
