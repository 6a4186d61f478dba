"""Several devices, one encoder interface: the work is spread across them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._encoder import Encoder, EncodeResult, EncodeSettings, load_encoder

__all__ = ["EncoderGroup", "load_encoders"]


class EncoderGroup:
    """The same model on several devices, encoding shards of the input in parallel.

    Every attribute other than :meth:`encode` is the first encoder's: the
    model, settings and output are the same on every device.

    Parameters
    ----------
    encoders : list of Encoder
        One per device, all of the same folder and dtype.
    """

    def __init__(self, encoders: list[Encoder]) -> None:
        self.encoders = encoders

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoders[0], name)

    def encode(
        self, texts: list[str], settings: EncodeSettings | None = None, **kwargs: Any
    ) -> EncodeResult:
        """Encode texts across the devices; same arguments and result as :meth:`Encoder.encode`."""
        shards = _balanced_shards(texts, len(self.encoders))
        with ThreadPoolExecutor(max_workers=len(self.encoders)) as pool:
            results = list(
                pool.map(
                    lambda job: job[0].encode([texts[i] for i in job[1]], settings, **kwargs),
                    zip(self.encoders, shards, strict=True),
                )
            )
        out = np.empty((len(texts), self.embedding_dimension), dtype=np.float32)
        truncated = np.zeros(len(texts), dtype=bool)
        for rows, result in zip(shards, results, strict=True):
            out[rows] = result.embeddings
            truncated[rows] = result.truncated
        return EncodeResult(out, truncated)


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
