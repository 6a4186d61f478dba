"""Texts longer than the model's window: the long-text parameters of SentenceEmbedder.

The parameters (``long_text``, ``chunk_tokens``, ``chunk_overlap``,
``chunk_pooling``), their checks at fit time, and the methods that work per window
(:meth:`LongTextMixin.transform_chunks`) or count tokens
(:meth:`LongTextMixin.count_tokens`). The cutting and combining themselves are the
encoder's (:mod:`skembed.encoder._chunking`).
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._constraints import PositiveCount
from ._model_settings import truncated
from ._options import CHUNK_POOLINGS, LONG_TEXT_POLICIES
from ._warnings import truncation_warning, warn_at_caller
from .encoder import Chunking, EncoderLike, EncodeSettings

__all__ = ["LONG_TEXT_CONSTRAINTS", "LongTextMixin"]

LONG_TEXT_CONSTRAINTS: dict[str, list] = {
    "long_text": [StrOptions(set(LONG_TEXT_POLICIES))],
    "chunk_tokens": [PositiveCount(), None],
    "chunk_overlap": [Interval(Integral, 0, None, closed="left")],
    "chunk_pooling": [StrOptions(set(CHUNK_POOLINGS))],
}


class LongTextMixin:
    """Long-text handling of :class:`~skembed.SentenceEmbedder` (see its parameters)."""

    # Parameters and fitted attributes of SentenceEmbedder, which also gives _texts,
    # _check_columns, _settings and _get_encoder.
    long_text: str
    chunk_tokens: int | None
    chunk_overlap: int
    chunk_pooling: str
    missing: str
    normalize_embeddings: bool
    batch_size: int | None
    max_batch_tokens: int | None
    max_seq_length_: int
    chunk_tokens_: int
    truncate_dim_: int | None

    def _check_long_text(self, encoder: EncoderLike, settings: EncodeSettings) -> None:
        """Record ``chunk_tokens_``; refuse windows that cannot be cut as asked.

        ``settings`` are those of :meth:`transform` without chunking (for the prompt).
        """
        window = self.chunk_tokens or self.max_seq_length_
        if window > self.max_seq_length_:
            raise ValueError(
                f"chunk_tokens={window} exceeds max_seq_length={self.max_seq_length_}; a "
                "window is at most what the model reads at once. Raise max_seq_length (up to "
                "the model's positions) or lower chunk_tokens."
            )
        self.chunk_tokens_ = window
        if self.long_text != "chunk":
            return
        if encoder.reads_whole_texts:
            raise ValueError(
                "long_text='chunk' cuts a transformer's tokens into windows; this model "
                "(a StaticEmbedding) reads whole texts and has no window. Use "
                "long_text='truncate'."
            )
        # The prompt and the special tokens of an empty text come with every window.
        fixed = int(encoder.count_tokens([""], settings)[0])
        if window - fixed <= self.chunk_overlap:
            raise ValueError(
                f"A window of chunk_tokens={window} tokens holds {fixed} tokens of prompt and "
                f"special tokens, which leaves no room for chunk_overlap={self.chunk_overlap} "
                "+ 1 tokens of text. Use a larger chunk_tokens, a smaller chunk_overlap or a "
                "shorter prompt."
            )

    def _warn_truncated(
        self, cut_mask: np.ndarray, present: list[int] | None, n_texts: int
    ) -> None:
        """Warn (:class:`~skembed.TruncationWarning`) naming the rows that were cut.

        ``cut_mask`` is over the encoded texts: ``present`` (the rows that had a
        text) when missing texts were left out (``missing="zero"``), else all rows.
        """
        cut = np.flatnonzero(cut_mask)
        if not len(cut):
            return
        zeroed = present is not None and self.missing == "zero"
        positions = (np.asarray(present)[cut] if zeroed else cut).tolist()
        warn_at_caller(truncation_warning(positions, n_texts, self.max_seq_length_))

    def _chunking(self, chunked: bool) -> Chunking | None:
        """The encoder's chunking for these parameters; ``None`` unless ``chunked``."""
        if not chunked:
            return None
        return Chunking(self.chunk_tokens_, self.chunk_overlap, self.chunk_pooling)

    def transform_chunks(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """One embedding per window of each text, with the text it comes from.

        Each text is cut into windows of ``chunk_tokens_`` tokens, overlapping by
        ``chunk_overlap`` tokens, whatever ``long_text`` is (a text that fits
        makes one window, the text itself): what :meth:`transform` combines
        under ``long_text="chunk"``, one row per window. For search over long
        documents: :func:`skembed.semantic_search` with ``groups=text_index``
        ranks the texts by their best window. Rows are not cached. A missing
        text (``missing="empty"`` or ``"zero"``) gives one window, of ``""`` or
        all zeros.

        Parameters
        ----------
        X : list, tuple, 1-D array, Series or one-column DataFrame of str
            The texts.

        Returns
        -------
        embeddings : ndarray of shape (n_windows, ``n_features_out_``), float32
            Window embeddings, each text's windows consecutive and in order,
            L2-normalised with ``normalize_embeddings``.
        text_index : ndarray of shape (n_windows,), int64
            The row of ``X`` each window comes from (non-decreasing).

        Examples
        --------
        >>> from skembed import SentenceEmbedder, semantic_search
        >>> embedder = SentenceEmbedder(device="cpu").fit()  # doctest: +SKIP
        >>> windows, text_index = embedder.transform_chunks(documents)  # doctest: +SKIP
        >>> scores, best_documents = semantic_search(
        ...     embedder.transform(["a query"]), windows, top_k=3, groups=text_index
        ... )  # doctest: +SKIP
        """
        check_is_fitted(self)
        self._check_columns(X)
        texts = self._texts(X)
        missing = [i for i, text in enumerate(texts) if text is None]
        result = self._get_encoder().encode_chunks(
            [text or "" for text in texts],
            self._settings(chunked=True),  # with truncate_dim, normalised after the cut below
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
        )
        embeddings = result.embeddings
        if self.truncate_dim_ is not None:
            embeddings = truncated(embeddings, self.truncate_dim_, self.normalize_embeddings)
        if missing and self.missing == "zero":
            embeddings[np.isin(result.text, missing)] = 0.0
        return embeddings, result.text

    def count_tokens(self, X: Any) -> np.ndarray:
        """Tokens of each text as the model's tokenizer counts them, nothing cut.

        The prompt in effect and the special tokens are counted, so that under
        ``long_text="truncate"`` a text is truncated (and named by the
        :class:`~skembed.TruncationWarning`) exactly when its count exceeds
        ``max_seq_length_``: ``embedder.count_tokens(X) > embedder.max_seq_length_``
        is the mask of the rows cut, as the reference library would cut them.
        A missing text counts as ``""`` (0 with ``missing="zero"``).

        Parameters
        ----------
        X : list, tuple, 1-D array, Series or one-column DataFrame of str
            The texts.

        Returns
        -------
        ndarray of shape (n_texts,), int64
        """
        check_is_fitted(self)
        texts = self._texts(X)
        counts = self._get_encoder().count_tokens(
            [text or "" for text in texts], self._settings(chunked=False)
        )
        if self.missing == "zero":
            counts[[i for i, text in enumerate(texts) if text is None]] = 0
        return counts
