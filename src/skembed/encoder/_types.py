"""What an encode call takes (the settings that change embeddings) and gives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._chunking import Chunking

__all__ = ["EncodeResult", "EncodeSettings"]


@dataclass(frozen=True)
class EncodeSettings:
    """Every option of :meth:`Encoder.encode` that can change an embedding.

    Caches key embeddings by all of these fields, so an option added here can
    never reuse vectors computed without it.

    Parameters
    ----------
    max_seq_length : int, optional
        Token limit per text; default is the model's.
    prompt : str, optional
        Text prepended to every input.
    normalize_embeddings : bool, default=False
        L2-normalise the output rows.
    task : str, optional
        The task of the texts (``"query"``, ``"document"``): picks the route of a
        model with a Router; no effect on other models.
    chunking : Chunking, optional
        Encode a text longer than one window as several windows whose
        embeddings are combined (and then normalised, with
        ``normalize_embeddings``); ``None`` truncates it at ``max_seq_length``.
    """

    max_seq_length: int | None = None
    prompt: str | None = None
    normalize_embeddings: bool = False
    task: str | None = None
    chunking: Chunking | None = None


@dataclass(frozen=True)
class EncodeResult:
    """Embeddings of a list of texts, in input order, and which texts were truncated."""

    embeddings: np.ndarray
    truncated: np.ndarray

    @property
    def n_truncated(self) -> int:
        """How many texts were longer than the token limit."""
        return int(self.truncated.sum())
