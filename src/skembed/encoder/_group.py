"""Several devices, one encoder interface: the work is spread across them."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._chunking import WindowEmbeddings
from ._encoder import Encoder
from ._folder import FolderSpec
from ._loaded import load_encoder
from ._protocol import EncoderLike
from ._types import EncodeResult, EncodeSettings

__all__ = ["EncoderGroup", "load_encoders"]


class EncoderGroup(EncoderLike):
    """The same model on several devices, encoding shards of the input in parallel.

    It offers what the estimators use of an :class:`Encoder`, and nothing
    else: :meth:`encode`, :meth:`save`, and the model's description, which is
    the same on every device (it is read from the first one). ``device`` is
    the first device; the cache keys embeddings by its type.

    Parameters
    ----------
    encoders : list of Encoder
        One per device, all of the same folder and dtype.
    """

    def __init__(self, encoders: list[Encoder]) -> None:
        fingerprints = {encoder.fingerprint for encoder in encoders}
        dtypes = {encoder.dtype for encoder in encoders}
        if len(fingerprints) != 1 or len(dtypes) != 1:
            raise ValueError(
                "The encoders of a group must hold the same model files in the same dtype; got "
                f"fingerprints {sorted(f[:12] for f in fingerprints)} and dtypes {dtypes}."
            )
        self.encoders = encoders
        first = encoders[0]
        self.fingerprint: str = first.fingerprint
        self._spec: FolderSpec = first.spec
        self.device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        self.embedding_dimension: int = first.embedding_dimension

    @property
    def spec(self) -> FolderSpec:
        """The model folder's modules and settings (see :attr:`Encoder.spec`)."""
        return self._spec

    @property
    def reads_whole_texts(self) -> bool:
        """Whether the model takes no token limit (see :attr:`Encoder.reads_whole_texts`)."""
        return self.encoders[0].reads_whole_texts

    @property
    def default_max_seq_length(self) -> int:
        """The model's token limit (see :attr:`Encoder.default_max_seq_length`)."""
        return self.encoders[0].default_max_seq_length

    @property
    def max_position_embeddings(self) -> int | None:
        """The longest input the model allows (see :attr:`Encoder.max_position_embeddings`)."""
        return self.encoders[0].max_position_embeddings

    def save(self, path: str | os.PathLike[str], **options: Any) -> None:
        """Save the model once; same arguments as :meth:`Encoder.save`."""
        self.encoders[0].save(path, **options)

    def encode(
        self, texts: list[str], settings: EncodeSettings | None = None, **kwargs: Any
    ) -> EncodeResult:
        """Encode texts across the devices; same arguments and result as :meth:`Encoder.encode`."""
        shards = _balanced_shards(texts, len(self.encoders))
        progress = kwargs.pop("progress", None)

        def run(encoder: Encoder, shard: np.ndarray) -> EncodeResult:
            # A shard's positions are its own: report them as positions in ``texts``.
            report = None if progress is None else (lambda rows: progress(shard[rows]))
            return encoder.encode([texts[i] for i in shard], settings, progress=report, **kwargs)

        with ThreadPoolExecutor(max_workers=len(self.encoders)) as pool:
            results = list(pool.map(run, self.encoders, shards))
        out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        for rows, result in zip(shards, results, strict=True):
            out[rows] = result.embeddings
            truncated[rows] = result.truncated
        return EncodeResult(out, truncated)

    def encode_chunks(
        self, texts: list[str], settings: EncodeSettings, **kwargs: Any
    ) -> WindowEmbeddings:
        """The windows' embeddings across the devices; see :meth:`Encoder.encode_chunks`."""
        shards = _balanced_shards(texts, len(self.encoders))

        def run(encoder: Encoder, shard: np.ndarray) -> WindowEmbeddings:
            return encoder.encode_chunks([texts[i] for i in shard], settings, **kwargs)

        with ThreadPoolExecutor(max_workers=len(self.encoders)) as pool:
            results = list(pool.map(run, self.encoders, shards))
        text = np.concatenate([shard[r.text] for shard, r in zip(shards, results, strict=True)])
        # Back to input order; a text's windows keep theirs (a stable sort).
        order = np.argsort(text, kind="stable")
        embeddings = np.concatenate([r.embeddings for r in results])[order]
        tokens = np.concatenate([r.tokens for r in results])[order]
        return WindowEmbeddings(embeddings, text[order], tokens)

    def count_tokens(self, texts: list[str], settings: EncodeSettings | None = None) -> np.ndarray:
        """Tokens of each text; see :meth:`Encoder.count_tokens`."""
        return self.encoders[0].count_tokens(texts, settings)


def _balanced_shards(texts: list[str], n: int) -> list[np.ndarray]:
    # Dealt round-robin by length, so every device gets a like mix of long and short texts.
    order = np.argsort([-len(text) for text in texts], kind="stable")
    return [order[i::n] for i in range(n)]


def load_encoders(
    folder: Path,
    devices: list[torch.device],
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Encoder | EncoderGroup:
    """One process-wide encoder per device; a group when there are several devices."""
    encoders = [load_encoder(folder, device, trust_remote_code, dtype) for device in devices]
    return encoders[0] if len(encoders) == 1 else EncoderGroup(encoders)
