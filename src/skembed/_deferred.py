"""An encoder that loads its model only when texts must be run through it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .encoder import EncodeResult, EncoderLike, EncodeSettings, FolderSpec, WindowEmbeddings


class DeferredEncoder(EncoderLike):
    """The description of a fitted model, its weights loaded at first use.

    A fitted estimator that arrives in another process (a pickle holds no
    weights) knows everything the embedding caches key by: the fingerprint of
    the model files, the device and dtype it will run in, and the embedding
    size. With those a warm persistent store serves every stored text without
    loading the model; the model is loaded only when a text has to be encoded
    or when anything else of the encoder is asked for.

    Parameters
    ----------
    fingerprint : str
        SHA-256 of the model files the estimator was fitted with.
    device : torch.device
        The (first) device the model will run on.
    dtype : torch.dtype
        The precision the transformer will run in.
    embedding_dimension : int
        Size of an embedding.
    load : callable
        Loads the model and returns it. A model whose files no longer have the
        fingerprint ``fingerprint`` (the folder was replaced after it was
        checked) is refused, so that no vector of another model is ever keyed
        by this one's fingerprint.
    """

    def __init__(
        self,
        fingerprint: str,
        device: torch.device,
        dtype: torch.dtype,
        embedding_dimension: int,
        load: Callable[[], EncoderLike],
    ) -> None:
        self.fingerprint = fingerprint
        self.device = device
        self.dtype = dtype
        self.embedding_dimension = embedding_dimension
        self._load = load
        self._encoder: EncoderLike | None = None

    def loaded(self) -> EncoderLike:
        """The model, loaded at the first call.

        Raises
        ------
        ValueError
            If the loaded files are not the ones of ``fingerprint``.
        """
        if self._encoder is None:
            encoder = self._load()
            if encoder.fingerprint != self.fingerprint:
                raise ValueError(
                    f"The model files changed after they were checked: they now have fingerprint "
                    f"{encoder.fingerprint[:12]}, not {self.fingerprint[:12]} as when this "
                    "estimator was fitted; fit it again."
                )
            self._encoder = encoder
        return self._encoder

    # Anything beyond the cache key needs the model.

    @property
    def spec(self) -> FolderSpec:
        """The model folder's modules and settings (loads the model)."""
        return self.loaded().spec

    @property
    def default_max_seq_length(self) -> int:
        """The model's own token limit (loads the model)."""
        return self.loaded().default_max_seq_length

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the model allows (loads the model)."""
        return self.loaded().max_position_embeddings

    @property
    def reads_whole_texts(self) -> bool:
        """Whether the model takes no token limit (loads the model)."""
        return self.loaded().reads_whole_texts

    def encode(
        self, texts: list[str], settings: EncodeSettings | None = None, **options: Any
    ) -> EncodeResult:
        """Load the model if needed and encode; see :meth:`Encoder.encode`."""
        return self.loaded().encode(texts, settings, **options)

    def encode_chunks(
        self, texts: list[str], settings: EncodeSettings, **options: Any
    ) -> WindowEmbeddings:
        """Load the model if needed; see :meth:`Encoder.encode_chunks`."""
        return self.loaded().encode_chunks(texts, settings, **options)

    def count_tokens(self, texts: list[str], settings: EncodeSettings | None = None) -> np.ndarray:
        """Load the model if needed; see :meth:`Encoder.count_tokens`."""
        return self.loaded().count_tokens(texts, settings)

    def save(self, path: str | os.PathLike[str], **options: Any) -> None:
        """Load the model if needed and save it; see :meth:`Encoder.save`."""
        self.loaded().save(path, **options)
