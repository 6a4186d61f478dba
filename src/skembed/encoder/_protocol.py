"""What the estimators call on an encoder, stated once."""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import torch

from ._chunking import WindowEmbeddings
from ._folder import FolderSpec
from ._types import EncodeResult, EncodeSettings

__all__ = ["EncoderLike"]


@runtime_checkable
class EncoderLike(Protocol):
    """The interface of :class:`Encoder`, ``EncoderGroup`` and ``DeferredEncoder``.

    The caches key embeddings by ``fingerprint``, ``device`` (its type), ``dtype``
    and the settings; the estimators read the model's description and call
    :meth:`encode` and :meth:`save`.
    """

    #: SHA-256 of the model files.
    fingerprint: str
    #: The (first) device the model runs on.
    device: torch.device
    #: Precision of the transformer.
    dtype: torch.dtype
    #: Size of the embeddings :meth:`encode` returns.
    embedding_dimension: int

    @property
    def spec(self) -> FolderSpec:
        """The model folder's modules and settings."""
        ...

    @property
    def default_max_seq_length(self) -> int:
        """The model's own token limit."""
        ...

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the model allows, if it has a limit."""
        ...

    @property
    def reads_whole_texts(self) -> bool:
        """Whether the model takes no token limit (a StaticEmbedding input)."""
        ...

    def encode(
        self, texts: list[str], settings: EncodeSettings | None = None, **options: Any
    ) -> EncodeResult:
        """Embeddings of ``texts`` in input order, and which were truncated."""
        ...

    def encode_chunks(
        self, texts: list[str], settings: EncodeSettings, **options: Any
    ) -> WindowEmbeddings:
        """One embedding per window of each text (``settings.chunking`` set)."""
        ...

    def count_tokens(self, texts: list[str], settings: EncodeSettings | None = None) -> Any:
        """Tokens of each text as the tokenizer counts them, prompt included, nothing cut."""
        ...

    def save(self, path: str | os.PathLike[str], **options: Any) -> None:
        """Write the model as a sentence-transformers folder."""
        ...
