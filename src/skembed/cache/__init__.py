"""Embedding caches: each distinct text is encoded once per model and settings.

Two levels, both keyed by a *namespace* (a hash of the model's file
fingerprint, device type, precision and every setting that changes an embedding:
``max_seq_length``, prompt, normalisation) and the text:

- an in-process LRU cache shared by every estimator, so clones and the fits of
  a grid search reuse embeddings. Its size is bounded in bytes
  (:func:`set_cache_limit`, default 1 GiB, ``0`` turns it off; the environment
  variable ``SKEMBED_CACHE_BYTES`` sets the bound when the cache is first
  used); the least recently used entries are dropped first.
- an optional persistent store (:class:`DiskEmbeddingStore`), a SQLite file
  that several processes and sessions share. Writes are transactions, so an
  interrupted write leaves no partial entry; every row carries a checksum and
  is checked on read, so a damaged row is encoded again, never served.

The package holds three ideas, one module each: the in-process cache
(``_memory``), the store (``_store``) and the encoding through both
(``_encode``).
"""

from ._encode import encode_cached, namespace_for
from ._memory import (
    DEFAULT_CACHE_BYTES,
    CacheHits,
    EmbeddingCache,
    cache_info,
    cache_limit_from_environment,
    clear_cache,
    set_cache_limit,
)
from ._store import DiskEmbeddingStore, open_store

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "CacheHits",
    "DiskEmbeddingStore",
    "EmbeddingCache",
    "cache_info",
    "cache_limit_from_environment",
    "clear_cache",
    "encode_cached",
    "namespace_for",
    "open_store",
    "set_cache_limit",
]
