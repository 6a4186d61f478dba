"""An encoder that loads its model only when texts must be run through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .encoder import Encoder, EncoderGroup


class DeferredEncoder:
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
        load: Callable[[], Encoder | EncoderGroup],
    ) -> None:
        self.fingerprint = fingerprint
        self.device = device
        self.dtype = dtype
        self.embedding_dimension = embedding_dimension
        self._load = load
        self._encoder: Encoder | EncoderGroup | None = None

    def loaded(self) -> Encoder | EncoderGroup:
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

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        """Load the model if needed and encode; see :meth:`Encoder.encode`."""
        return self.loaded().encode(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Anything beyond the cache key (the tokenizer, the model's limits, save) needs the model.
        if name.startswith("__") or name == "_encoder":
            raise AttributeError(name)
        return getattr(self.loaded(), name)
