"""EmbeddingQuantizer: embeddings to int8/uint8 codes or packed bits, with ranges fixed in fit."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._similarity import checked_top_k, paired_similarity, semantic_search, similarity

__all__ = ["EmbeddingQuantizer"]

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_SCALAR = ("int8", "uint8")
_PACKED = ("binary", "ubinary")
_CODE_DTYPES = {
    "float32": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "binary": np.int8,
    "ubinary": np.uint8,
}
# Scalar codes count buckets 0..255; int8 codes (and binary bytes) are shifted down by 128.
_BUCKETS = 255
_SHIFT = 128


class EmbeddingQuantizer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Quantize embeddings to int8/uint8 codes or packed bits, calibrated once in fit.

    The codes of sentence-transformers' ``quantize_embeddings``, but with the
    int8/uint8 ranges learned from the calibration embeddings given to
    :meth:`fit` and then fixed: the same embedding always maps to the same
    code, whatever else is transformed with it. Given the same calibration
    set, the codes equal the reference's
    ``quantize_embeddings(X, precision, calibration_embeddings=calibration)``.

    - ``"int8"`` / ``"uint8"``: each dimension's calibrated ``[min, max]`` is
      cut into 255 equal buckets and a value becomes its bucket number
      (0-255; minus 128 for int8). Values outside the calibrated range go to
      the end buckets (0 or 255), as in the reference.
    - ``"binary"`` / ``"ubinary"``: one bit per dimension (value > 0), packed
      8 to a byte, big-endian as ``numpy.packbits``; ``"binary"`` bytes
      are shifted down by 128 into int8. The output has ``ceil(d / 8)``
      columns. Nothing is learned.
    - ``"float32"``: the embeddings as float32 (a baseline for grid searches).

    Parameters
    ----------
    precision : {"float32", "int8", "uint8", "binary", "ubinary"}, default="int8"
        Code type.
    metric : {"dot", "cosine", "euclidean", "manhattan"}, default="dot"
        Similarity of :meth:`similarity` for float32 and scalar codes, computed
        on the int8-shifted codes (uint8 codes are shifted too, so int8 and
        uint8 score alike). Packed bits are always compared by the negative
        Hamming distance (the number of differing bits).

    Attributes
    ----------
    ranges_ : ndarray of shape (2, n_features), float32
        Per-dimension minimum and maximum of the calibration embeddings
        (scalar precisions only).
    n_features_in_ : int
        Embedding size seen in :meth:`fit`.
    n_features_out_ : int
        Code width (``n_codes`` in the shapes below): ``n_features_in_``,
        or ``ceil(n_features_in_ / 8)`` bytes for packed bits.

    Examples
    --------
    >>> import numpy as np
    >>> from skembed import EmbeddingQuantizer
    >>> calibration = np.array([[-1.0, 0.0], [1.0, 2.0]])
    >>> quantizer = EmbeddingQuantizer("uint8").fit(calibration)
    >>> quantizer.transform(np.array([[0.0, 1.0], [5.0, -5.0]]))
    array([[127, 127],
           [255,   0]], dtype=uint8)
    >>> EmbeddingQuantizer("ubinary").fit_transform(np.array([[0.5, -0.2, 0.1]]))
    array([[160]], dtype=uint8)
    """

    _parameter_constraints: ClassVar[dict] = {
        "precision": [StrOptions(set(PRECISIONS))],
        "metric": [StrOptions({"dot", "cosine", "euclidean", "manhattan"})],
    }

    def __init__(self, precision: str = "int8", *, metric: str = "dot") -> None:
        self.precision = precision
        self.metric = metric

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> EmbeddingQuantizer:
        """Learn the per-dimension ranges of the calibration embeddings.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Float calibration embeddings: a representative sample of what will
            be quantized. Scalar precisions need at least two rows.
        y : ignored

        Returns
        -------
        self : EmbeddingQuantizer
        """
        X = self._checked(X, reset=True)
        if self.precision in _SCALAR:
            if X.shape[0] == 1:
                raise ValueError(
                    f"precision={self.precision!r} learns each dimension's range from the "
                    f"calibration embeddings: it needs at least 2 samples; got 1 sample."
                )
            self.ranges_ = np.vstack([X.min(axis=0), X.max(axis=0)]).astype(np.float32)
        packed = self.precision in _PACKED
        self.n_features_out_ = -(-X.shape[1] // 8) if packed else X.shape[1]
        return self

    @property
    def _n_features_out(self) -> int:
        # Read by ClassNamePrefixFeaturesOutMixin: "embeddingquantizer<i>" per code column.
        return self.n_features_out_

    def _checked(self, X: Any, *, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, dtype="numeric")
        if X.dtype in (np.int8, np.uint8):
            raise ValueError(
                f"EmbeddingQuantizer takes embeddings; got dtype {X.dtype}, the dtype of "
                "quantized codes, which cannot be quantized again."
            )
        return X

    def transform(self, X: Any) -> np.ndarray:
        """Quantize embeddings with the ranges learned in :meth:`fit`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Float embeddings.

        Returns
        -------
        ndarray of shape (n_samples, n_codes)
            float32, int8 or uint8 codes, by ``precision``.
        """
        check_is_fitted(self, "n_features_out_")
        X = self._checked(X, reset=False)
        if self.precision == "float32":
            return X.astype(np.float32)
        if self.precision in _PACKED:
            packed = np.packbits(X > 0, axis=1)
            # Subtracting 128 from a byte is flipping its top bit.
            return (packed ^ _SHIFT).view(np.int8) if self.precision == "binary" else packed
        low, step = self._buckets()
        buckets = np.clip(np.floor((X - low) / step), 0, _BUCKETS)
        if self.precision == "int8":
            return (buckets - _SHIFT).astype(np.int8)
        return buckets.astype(np.uint8)

    def _buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """Each dimension's lowest value and bucket width (1 for a constant dimension)."""
        low, high = self.ranges_
        step = (high - low) / _BUCKETS
        return low, np.where(step == 0, 1, step)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Map scalar codes back to the lower edge of their bucket.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            int8 or uint8 codes from :meth:`transform`.

        Returns
        -------
        ndarray of shape (n_samples, n_features), float64
            Within one bucket width below the original values that fell
            inside the calibrated range.
        """
        check_is_fitted(self, "n_features_out_")
        if self.precision not in _SCALAR:
            raise ValueError(
                f"inverse_transform maps int8/uint8 codes back to values; precision="
                f"{self.precision!r} has no buckets to map back."
            )
        codes = self._codes(X, "X")
        low, step = self._buckets()
        return (codes.astype(np.float64) + _SHIFT) * step + low

    def _codes(self, X: Any, what: str) -> np.ndarray:
        """``X`` checked to be codes of this quantizer; uint8 scalar codes shifted into int8."""
        codes = np.asarray(X)
        expected = _CODE_DTYPES[self.precision]
        if codes.ndim != 2 or codes.dtype != expected or codes.shape[1] != self.n_features_out_:
            raise ValueError(
                f"{what} must be codes from this quantizer's transform: a 2-D {np.dtype(expected)} "
                f"array of {self.n_features_out_} columns; got a {codes.ndim}-D {codes.dtype} "
                f"array of shape {codes.shape}."
            )
        if self.precision == "uint8":
            return codes.astype(np.int16) - _SHIFT
        return codes

    def _signs(self, X: Any, what: str) -> np.ndarray:
        """Packed bits as +1/-1 float32 rows: their dot is bits - 2 x Hamming distance."""
        codes = self._codes(X, what)
        bits = np.unpackbits(codes.view(np.uint8), axis=1)
        if self.precision == "binary":
            # The stored bytes had their top bit flipped; flip it back in every byte.
            bits[:, ::8] ^= 1
        return bits.astype(np.float32) * 2 - 1

    def _hamming_scores(self, dots: Any) -> Any:
        """Negative Hamming distances from the dot products of +1/-1 rows."""
        n_bits = 8 * self.n_features_out_
        return (dots - n_bits) / 2

    def similarity(self, X: Any, Y: Any = None) -> np.ndarray:
        """Similarity matrix of codes.

        Parameters
        ----------
        X : ndarray of shape (n_x, n_codes)
            Codes from :meth:`transform`.
        Y : ndarray of shape (n_y, n_codes), default=None
            Codes; ``None`` compares ``X`` with itself.

        Returns
        -------
        ndarray of shape (n_x, n_y)
            ``metric`` on the (int8-shifted) codes, or, for packed bits, minus
            the number of differing bits (0 for identical codes).
        """
        check_is_fitted(self, "n_features_out_")
        if self.precision in _PACKED:
            x = self._signs(X, "X")
            y = None if Y is None else self._signs(Y, "Y")
            return self._hamming_scores(similarity(x, y, metric="dot"))
        x = self._codes(X, "X")
        return similarity(x, None if Y is None else self._codes(Y, "Y"), metric=self.metric)

    def similarity_pairwise(self, X: Any, Y: Any) -> np.ndarray:
        """Row-by-row similarity of codes, as :meth:`similarity` scores them.

        Parameters
        ----------
        X, Y : ndarray of shape (n, n_codes)
            Codes from :meth:`transform`.

        Returns
        -------
        ndarray of shape (n,)
        """
        check_is_fitted(self, "n_features_out_")
        if self.precision in _PACKED:
            dots = paired_similarity(self._signs(X, "X"), self._signs(Y, "Y"), metric="dot")
            return self._hamming_scores(dots)
        return paired_similarity(self._codes(X, "X"), self._codes(Y, "Y"), metric=self.metric)

    def semantic_search(
        self,
        queries: Any,
        corpus: Any,
        top_k: int = 10,
        *,
        rescore: bool = False,
        rescore_multiplier: int = 4,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best corpus codes per query, optionally rescored with the float queries.

        Queries given as float embeddings are quantized first. With
        ``rescore=True``, the ``top_k *
        rescore_multiplier`` best candidates by code similarity are scored
        again by the dot product of the float query with each candidate's
        reconstruction (:meth:`inverse_transform` for scalar codes, the 0/1
        bits for packed ones, as the reference's rescoring does), and the
        ``top_k`` best of those are kept.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, n_features) or (n_queries, n_codes)
            Float query embeddings, or codes of this quantizer.
        corpus : ndarray of shape (n_corpus, n_codes)
            Codes of this quantizer.
        top_k : int, default=10
            Results per query, at most ``n_corpus``.
        rescore : bool, default=False
            Rescore candidates with the float queries; refused for coded
            queries and for float32 precision (nothing to rescore).
        rescore_multiplier : int, default=4
            Candidates per result that are rescored.

        Returns
        -------
        scores : ndarray of shape (n_queries, top_k)
            Decreasing. Code similarities (see :meth:`similarity`), or the
            rescored dot products.
        indices : ndarray of shape (n_queries, top_k), int64
            Corpus rows; of equal scores the lower row comes first.
        """
        check_is_fitted(self, "n_features_out_")
        if not isinstance(rescore_multiplier, int) or rescore_multiplier < 1:
            raise ValueError(f"rescore_multiplier must be an int >= 1; got {rescore_multiplier!r}.")
        raw = np.asarray(queries)
        is_float = np.issubdtype(raw.dtype, np.floating)
        if rescore and (not is_float or self.precision == "float32"):
            raise ValueError(
                "rescore=True rescores quantized candidates with float query embeddings; got "
                f"{raw.dtype} queries and precision={self.precision!r}. Pass float queries "
                "against quantized codes, or rescore=False."
            )
        coded = self.transform(raw) if is_float else raw
        n_corpus = np.asarray(corpus).shape[0]
        # Checked here as well: with rescoring, the search below asks for more candidates.
        top_k = checked_top_k(top_k, n_corpus)
        candidates = min(n_corpus, top_k * rescore_multiplier) if rescore else top_k
        if self.precision in _PACKED:
            dots, indices = semantic_search(
                self._signs(coded, "queries"), self._signs(corpus, "corpus"), candidates, "dot"
            )
            scores = self._hamming_scores(dots)
        else:
            scores, indices = semantic_search(
                self._codes(coded, "queries"),
                self._codes(corpus, "corpus"),
                candidates,
                self.metric,
            )
        if not rescore:
            return scores, indices
        rebuilt = self._reconstructed(np.asarray(corpus)[indices.ravel()])
        rebuilt = rebuilt.reshape(*indices.shape, -1)
        rescored = np.einsum("qd,qkd->qk", raw.astype(np.float64), rebuilt)
        # A stable sort keeps the code ranking's lower-row-first order among equal scores.
        order = np.argsort(-rescored, axis=1, kind="stable")[:, :top_k]
        return np.take_along_axis(rescored, order, 1), np.take_along_axis(indices, order, 1)

    def _reconstructed(self, codes: np.ndarray) -> np.ndarray:
        """Float stand-ins of codes for rescoring: bucket edges, or the 0/1 bits."""
        if self.precision in _SCALAR:
            return self.inverse_transform(codes)
        bits = (self._signs(codes, "corpus") + 1) / 2
        return bits[:, : self.n_features_in_].astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        return tags
