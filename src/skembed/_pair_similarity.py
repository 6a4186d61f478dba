"""PairedSimilarity: a transformer from text pairs to their similarity."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from ._embedder import SentenceEmbedder
from ._evaluation import spearman_score
from ._inputs import TextInputMixin, as_text_pairs, embed_pairs
from ._options import allows_missing
from ._similarity import paired_similarity

__all__ = ["PairedSimilarity"]


class PairedSimilarity(TextInputMixin, TransformerMixin, BaseEstimator):
    """Score text pairs with a sentence embedder's similarity function.

    Turns each pair of texts into one feature, the similarity of their
    embeddings under ``embedder.similarity_fn_name``. Followed by a classifier
    it makes a paraphrase or duplicate detector; the metric is a
    hyperparameter of the nested embedder
    (``"<step>__embedder__similarity_fn_name"`` in a grid search).

    With a ``quantizer``, the pairs are scored on quantized embeddings: the
    quantizer is calibrated on the embeddings of the training pairs' texts
    and scores as :meth:`EmbeddingQuantizer.similarity_pairwise` does, so a
    grid search can weigh ``"quantizer__precision"`` (with, say,
    ``"embedder__truncate_dim"``) by :meth:`score`.

    Parameters
    ----------
    embedder : SentenceEmbedder, default=None
        The embedder to clone and fit; ``None`` means ``SentenceEmbedder()``.
    quantizer : EmbeddingQuantizer, default=None
        The quantizer to clone and calibrate; ``None`` compares the float
        embeddings with ``embedder.similarity_fn_name``.
    query_document : bool, default=False
        Embed the first text of each pair as a query and the second as a
        document (``role="query"`` and ``role="document"`` of the embedder,
        whatever its own ``role``): the query and document prompts, and the
        query and document routes of a model with a Router, as the
        reference's ``encode_query`` / ``encode_document``. For question-answer
        or query-passage pairs scored with an asymmetric model.

    Attributes
    ----------
    embedder_ : SentenceEmbedder
        The fitted clone of ``embedder`` (with ``role="query"`` when
        ``query_document`` is set).
    document_embedder_ : SentenceEmbedder
        With ``query_document`` only: the fitted clone with ``role="document"``
        that embeds the second texts.
    quantizer_ : EmbeddingQuantizer or None
        The calibrated clone of ``quantizer``.
    n_features_in_ : int
        Always 2: the two texts of a pair.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import Pipeline
    >>> from skembed import PairedSimilarity, SentenceEmbedder
    >>> detector = Pipeline([
    ...     ("sim", PairedSimilarity(SentenceEmbedder(device="cpu"))),
    ...     ("clf", LogisticRegression()),
    ... ])
    >>> pairs = [("A man plays guitar.", "A man is playing a guitar."),
    ...          ("A cat sleeps.", "The stock market fell.")]
    >>> labels = [1, 0]  # paraphrase or not
    >>> detector.fit(pairs, labels).predict(pairs)  # doctest: +SKIP
    array([1, 0])
    """

    _parameter_constraints: ClassVar[dict] = {
        "embedder": [HasMethods(["similarity_pairwise"]), None],
        "quantizer": [HasMethods(["fit", "transform", "similarity_pairwise"]), None],
        "query_document": ["boolean"],
    }

    def __init__(
        self,
        embedder: SentenceEmbedder | None = None,
        quantizer: Any = None,
        *,
        query_document: bool = False,
    ) -> None:
        self.embedder = embedder
        self.quantizer = quantizer
        self.query_document = query_document

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any = None) -> PairedSimilarity:
        """Fit a clone of the embedder; calibrate a clone of the quantizer on ``X``'s texts.

        Parameters
        ----------
        X : text pairs
            Two-column DataFrame, ``(n, 2)`` array or list of 2-tuples.
        y : ignored

        Returns
        -------
        self : PairedSimilarity
        """
        embedder = clone(SentenceEmbedder() if self.embedder is None else self.embedder)
        # Pairs are checked before any model loads.
        as_text_pairs(X, allow_missing=allows_missing(embedder.missing))
        # The embedder encodes each side as one column of texts, so it is not fitted on the
        # pairs: its transform then takes texts, as scikit-learn's column-count check wants.
        self.__dict__.pop("document_embedder_", None)
        if self.query_document:
            self.document_embedder_ = clone(embedder).set_params(role="document").fit()
            embedder.set_params(role="query")
        self.embedder_ = embedder.fit()
        self.quantizer_ = None
        if self.quantizer is not None:
            self.quantizer_ = clone(self.quantizer).fit(np.vstack(self._embed_pairs(X)))
        self.n_features_in_ = 2
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Similarity of each pair.

        Parameters
        ----------
        X : text pairs
            Two-column DataFrame, ``(n, 2)`` array or list of 2-tuples.

        Returns
        -------
        ndarray of shape (n, 1)
            float32; float64 for int8/uint8 codes.
        """
        check_is_fitted(self)
        if self.quantizer_ is None and not self.query_document:
            return self.embedder_.similarity_pairwise(X).reshape(-1, 1)
        first, second = self._embed_pairs(X)
        if self.quantizer_ is None:
            scores = paired_similarity(first, second, metric=self.embedder_.similarity_fn_name_)
        else:
            scores = self.quantizer_.similarity_pairwise(
                self.quantizer_.transform(first), self.quantizer_.transform(second)
            )
        return np.asarray(scores).reshape(-1, 1)

    def _embed_pairs(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the first and of the second texts of the pairs."""
        first, second = as_text_pairs(X, allow_missing=allows_missing(self.embedder_.missing))
        if self.query_document:
            return self.embedder_.transform(first), self.document_embedder_.transform(second)
        return embed_pairs(first, second, self.embedder_.transform)

    def score(self, X: Any, y: Any, sample_weight: None = None) -> float:
        """Spearman correlation between the pair similarities and gold scores.

        Parameters
        ----------
        X : text pairs
            Two-column DataFrame, ``(n, 2)`` array or list of 2-tuples.
        y : array-like of shape (n,)
            Gold similarity scores.
        sample_weight : None
            Not supported; present for the scikit-learn signature.

        Returns
        -------
        float
            Spearman's rho, as :meth:`SentenceEmbedder.score`.
        """
        if sample_weight is not None:
            raise ValueError("PairedSimilarity.score does not support sample_weight.")
        return spearman_score(self.transform(X).ravel(), y)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Return ``["similarity"]``.

        Parameters
        ----------
        input_features : ignored

        Returns
        -------
        ndarray of str
        """
        check_is_fitted(self)
        return np.asarray(["similarity"], dtype=object)
