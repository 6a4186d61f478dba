"""The process-wide registry of loaded encoders, keyed by folder content, device and dtype."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ._encoder import Encoder
from ._fingerprint import folder_fingerprint

__all__ = ["load_encoder", "loaded_models", "release_models", "set_max_loaded_models"]


DEFAULT_MAX_LOADED_MODELS = 4


class _LoadedModels:
    """The process-wide registry of loaded encoders: least recently used first out."""

    def __init__(self, max_models: int) -> None:
        self.entries: OrderedDict[tuple, Encoder] = OrderedDict()
        self.max_models = max_models
        self.lock = threading.Lock()

    def get(self, folder: Path, device: torch.device, trust_remote_code: bool, dtype) -> Encoder:
        # Keyed by content: a folder rewritten in place gets a new fingerprint, so a new load.
        fingerprint = folder_fingerprint(folder)
        key = (str(folder), fingerprint, str(device), str(dtype), trust_remote_code)
        with self.lock:
            encoder = self.entries.get(key)
            if encoder is None:
                # Older contents of the same folder are stale: nothing new may share them.
                for stale in [k for k in self.entries if k[0] == key[0] and k[1] != fingerprint]:
                    del self.entries[stale]
                encoder = Encoder(folder, device, trust_remote_code, dtype)
                key = (str(folder), encoder.fingerprint, *key[2:])
                self.entries[key] = encoder
            self.entries.move_to_end(key)
            self._evict()
            return encoder

    def _evict(self) -> None:
        while len(self.entries) > self.max_models:
            self.entries.popitem(last=False)


_LOADED = _LoadedModels(DEFAULT_MAX_LOADED_MODELS)


def load_encoder(
    folder: Path,
    device: torch.device,
    trust_remote_code: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Encoder:
    """Return the process-wide encoder for (folder contents, device, dtype), loading it once.

    Clones of an estimator, and estimators with the same model, share one copy
    of the weights. The registry is keyed by the folder's fingerprint, so a
    folder rewritten in place is loaded again, and it holds at most
    :func:`set_max_loaded_models` models, dropping the least recently used.
    """
    return _LOADED.get(folder, device, trust_remote_code, dtype)


def set_max_loaded_models(n: int) -> None:
    """Bound how many loaded models the process keeps for sharing.

    Parameters
    ----------
    n : int
        Most (folder, device, dtype) models kept, least recently used dropped
        first; default 4. ``0`` keeps none: every fit loads its own copy.
        A fitted estimator keeps its own model alive whatever this bound.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"The number of loaded models must be an integer >= 0, got {n!r}.")
    with _LOADED.lock:
        _LOADED.max_models = n
        _LOADED._evict()


def release_models() -> None:
    """Drop every shared loaded model.

    The memory of a model is freed once no fitted estimator holds it either
    (delete or refit those); the next fit loads it again.
    """
    with _LOADED.lock:
        _LOADED.entries.clear()


def loaded_models() -> list[dict[str, str]]:
    """The models the process keeps for sharing, least recently used first.

    Returns
    -------
    list of dict
        ``folder``, ``fingerprint``, ``device`` and ``dtype`` of each.
    """
    with _LOADED.lock:
        return [
            {"folder": folder, "fingerprint": fingerprint, "device": device, "dtype": dtype}
            for folder, fingerprint, device, dtype, _ in _LOADED.entries
        ]
