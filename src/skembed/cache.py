"""Embedding caches: each distinct text is encoded once per model and settings.

Two levels, both keyed by a *namespace* (a hash of the model's file
fingerprint, device type, precision and every setting that changes an embedding:
``max_seq_length``, prompt, normalisation) and the text:

- an in-process LRU cache shared by every estimator, so clones and the fits of
  a grid search reuse embeddings. Its size is bounded in bytes
  (:func:`set_cache_limit`, default 1 GiB, ``0`` turns it off); the least
  recently used entries are dropped first.
- an optional persistent store (:class:`DiskEmbeddingStore`), a SQLite file
  that several processes and sessions share. Writes are transactions, so an
  interrupted write leaves no partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encoder import Encoder

__all__ = [
    "DiskEmbeddingStore",
    "EmbeddingCache",
    "cache_info",
    "clear_cache",
    "encode_cached",
    "set_cache_limit",
]

DEFAULT_CACHE_BYTES = 1 << 30
# Bookkeeping per entry beyond the vector itself (dict slot, key tuple, array header).
_ENTRY_OVERHEAD = 200


@dataclass(frozen=True)
class CachedEncoding:
    """Embeddings in input order and, per row, whether its text was truncated."""

    embeddings: np.ndarray
    truncated: np.ndarray


class EmbeddingCache:
    """A thread-safe LRU cache of text embeddings, bounded in bytes.

    Parameters
    ----------
    max_bytes : int
        Upper bound on the memory held (vectors, texts and per-entry overhead).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[np.ndarray, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _size(text: str, vector: np.ndarray) -> int:
        return vector.nbytes + len(text) + _ENTRY_OVERHEAD

    def get(self, namespace: str, texts: Sequence[str]) -> dict[str, tuple[np.ndarray, bool]]:
        """Return the cached ``(vector, truncated)`` of those texts that are cached."""
        found = {}
        with self._lock:
            for text in texts:
                entry = self._entries.get((namespace, text))
                if entry is not None:
                    self._entries.move_to_end((namespace, text))
                    found[text] = entry
            self.hits += len(found)
            self.misses += len(texts) - len(found)
        return found

    def put(
        self, namespace: str, texts: Sequence[str], vectors: np.ndarray, truncated: np.ndarray
    ) -> None:
        """Add entries, then drop the least recently used ones beyond ``max_bytes``."""
        with self._lock:
            for text, vector, cut in zip(texts, vectors, truncated, strict=True):
                key = (namespace, text)
                if key in self._entries:
                    continue
                # A private read-only copy: callers cannot alter what others will read.
                row = np.array(vector, dtype=np.float32)
                row.flags.writeable = False
                self._entries[key] = (row, bool(cut))
                self.nbytes += self._size(text, row)
            self._evict()

    def _evict(self) -> None:
        while self._entries and self.nbytes > self.max_bytes:
            (_, text), (row, _) = self._entries.popitem(last=False)
            self.nbytes -= self._size(text, row)

    def resize(self, max_bytes: int) -> None:
        """Set the bound, evicting at once if needed."""
        if max_bytes < 0:
            raise ValueError(f"The cache limit must be >= 0 bytes, got {max_bytes}.")
        with self._lock:
            self.max_bytes = max_bytes
            self._evict()

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.nbytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


_PROCESS_CACHE = EmbeddingCache(int(os.environ.get("SKEMBED_CACHE_BYTES", DEFAULT_CACHE_BYTES)))


def set_cache_limit(max_bytes: int) -> None:
    """Bound the memory of the in-process embedding cache.

    Parameters
    ----------
    max_bytes : int
        Bytes of vectors, texts and bookkeeping the cache may hold; ``0``
        disables it. The default, 1 GiB, holds about 600,000 embeddings of
        size 384. The environment variable ``SKEMBED_CACHE_BYTES`` sets the
        value at import.
    """
    _PROCESS_CACHE.resize(max_bytes)


def clear_cache() -> None:
    """Empty the in-process embedding cache."""
    _PROCESS_CACHE.clear()


def cache_info() -> dict[str, int]:
    """Counters of the in-process cache.

    Returns
    -------
    dict
        ``entries``, ``nbytes``, ``max_bytes``, ``hits`` and ``misses``.
    """
    cache = _PROCESS_CACHE
    return {
        "entries": len(cache),
        "nbytes": cache.nbytes,
        "max_bytes": cache.max_bytes,
        "hits": cache.hits,
        "misses": cache.misses,
    }


class DiskEmbeddingStore:
    """A persistent embedding store in one SQLite file, safe across processes.

    Parameters
    ----------
    directory : str or path-like
        Folder of the store; created if needed. The file is
        ``skembed-embeddings.sqlite`` inside it.
    """

    FILENAME = "skembed-embeddings.sqlite"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory) / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (namespace TEXT, text_sha256 BLOB, "
                "truncated INTEGER, vector BLOB, PRIMARY KEY (namespace, text_sha256))"
            )

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=60)
        # WAL lets readers in other processes go on while one process writes.
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def get(self, namespace: str, texts: Sequence[str]) -> dict[str, tuple[np.ndarray, bool]]:
        """Return the stored ``(vector, truncated)`` of those texts that are stored."""
        by_digest = {self._digest(text): text for text in texts}
        found = {}
        digests = list(by_digest)
        with self._connect() as connection:
            # SQLite caps the number of bound parameters; look up in slices.
            for start in range(0, len(digests), 500):
                part = digests[start : start + 500]
                rows = connection.execute(
                    "SELECT text_sha256, truncated, vector FROM embeddings WHERE namespace = ? "
                    f"AND text_sha256 IN ({','.join('?' * len(part))})",
                    [namespace, *part],
                )
                for digest, truncated, vector in rows:
                    found[by_digest[digest]] = (
                        np.frombuffer(vector, dtype=np.float32),
                        bool(truncated),
                    )
        return found

    def put(
        self, namespace: str, texts: Sequence[str], vectors: np.ndarray, truncated: np.ndarray
    ) -> None:
        """Store entries in one transaction: all are written, or none."""
        rows = [
            (namespace, self._digest(text), int(cut), np.asarray(vector, np.float32).tobytes())
            for text, vector, cut in zip(texts, vectors, truncated, strict=True)
        ]
        with self._connect() as connection:
            connection.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", rows)


def namespace_for(encoder: Encoder, **settings: Any) -> str:
    """Hash of everything that determines an embedding besides the text."""
    payload = {
        "model": encoder.fingerprint,
        "device": encoder.device.type,
        "dtype": str(encoder.dtype),
        **settings,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def encode_cached(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    store: DiskEmbeddingStore | None = None,
    **encode_options: Any,
) -> CachedEncoding:
    """Encode texts, each distinct text at most once, through the caches.

    Looks in the in-process cache, then in ``store``; encodes the rest with
    ``encoder`` and records them in both.

    Parameters
    ----------
    encoder : Encoder or EncoderGroup
        The loaded model.
    texts : sequence of str
        The texts, duplicates allowed.
    store : DiskEmbeddingStore, optional
        The persistent store, if any.
    **encode_options
        Keyword arguments of ``Encoder.encode``; those that change an
        embedding (``max_seq_length``, ``prompt``, ``normalize_embeddings``)
        are part of the cache key.

    Returns
    -------
    CachedEncoding
        Rows in the order of ``texts``.
    """
    namespace = namespace_for(
        encoder,
        max_seq_length=encode_options.get("max_seq_length") or encoder.default_max_seq_length,
        prompt=encode_options.get("prompt"),
        normalize=bool(encode_options.get("normalize_embeddings", False)),
    )
    unique = list(dict.fromkeys(texts))
    found = _PROCESS_CACHE.get(namespace, unique)
    missing = [text for text in unique if text not in found]
    if missing and store is not None:
        from_disk = store.get(namespace, missing)
        if from_disk:
            found.update(from_disk)
            disk_texts = list(from_disk)
            _PROCESS_CACHE.put(
                namespace,
                disk_texts,
                np.stack([from_disk[t][0] for t in disk_texts]),
                np.array([from_disk[t][1] for t in disk_texts]),
            )
            missing = [text for text in missing if text not in from_disk]
    if missing:
        result = encoder.encode(missing, **encode_options)
        _PROCESS_CACHE.put(namespace, missing, result.embeddings, result.truncated)
        if store is not None:
            store.put(namespace, missing, result.embeddings, result.truncated)
        for text, vector, cut in zip(missing, result.embeddings, result.truncated, strict=True):
            found[text] = (vector, bool(cut))
    embeddings = np.empty((len(texts), encoder.embedding_dimension), dtype=np.float32)
    truncated = np.zeros(len(texts), dtype=bool)
    for row, text in enumerate(texts):
        embeddings[row], truncated[row] = found[text]
    return CachedEncoding(embeddings, truncated)
