"""PairedSimilarity: a transformer from text pairs to their similarity."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from ._embedder import SentenceEmbedder
from ._inputs import TextInputMixin, as_text_pairs
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

    Parameters
    ----------
    embedder : SentenceEmbedder, default=None
        The embedder to clone and fit; ``None`` means ``SentenceEmbedder()``.
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
        "query_document": ["boolean"],
    }

    def __init__(
        self, embedder: SentenceEmbedder | None = None, *, query_document: bool = False
    ) -> None:
        self.embedder = embedder
        self.query_document = query_document

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any = None) -> PairedSimilarity:
        """Fit a clone of the embedder on the text pairs ``X``.

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
        as_text_pairs(X, allow_missing=allows_missing(embedder.missing))
        # The embedder encodes each side as one column of texts, so it is not fitted on the
        # pairs: its transform then takes texts, as scikit-learn's column-count check wants.
        self.__dict__.pop("document_embedder_", None)
        if self.query_document:
            self.document_embedder_ = clone(embedder).set_params(role="document").fit()
            embedder.set_params(role="query")
        self.embedder_ = embedder.fit()
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
        ndarray of shape (n, 1), float32
        """
        check_is_fitted(self)
        if not self.query_document:
            return self.embedder_.similarity_pairwise(X).reshape(-1, 1)
        queries, documents = as_text_pairs(X, allow_missing=allows_missing(self.embedder_.missing))
        similarities = paired_similarity(
            self.embedder_.transform(queries),
            self.document_embedder_.transform(documents),
            metric=self.embedder_.similarity_fn_name_,
        )
        return similarities.reshape(-1, 1)

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
