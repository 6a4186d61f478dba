"""The in-process embedding cache: blocks of rows, least recently used out, bounded in bytes."""

from __future__ import annotations

import itertools
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "CacheHits",
    "EmbeddingCache",
    "cache_info",
    "cache_limit_from_environment",
    "clear_cache",
    "process_cache",
    "set_cache_limit",
]

DEFAULT_CACHE_BYTES = 1 << 30
_CACHE_BYTES_VARIABLE = "SKEMBED_CACHE_BYTES"
# Memory per entry beyond the vector data and the text (index slot, slot integer, the block's
# list of texts), measured with tracemalloc on CPython 3.11: 60-80 bytes.
_ENTRY_OVERHEAD = 72


@dataclass
class _Block:
    """Embeddings encoded together, kept as they came from the encoder."""

    namespace: str
    texts: list[str]
    embeddings: np.ndarray
    truncated: np.ndarray
    nbytes: int


# A cache slot packs the block number and the row inside the block into one integer.
_ROW_BITS = 32
_ROW_MASK = (1 << _ROW_BITS) - 1
# Below this mean length of runs of consecutive rows, a gather beats one slice copy per run.
_MIN_RUN = 32


class CacheHits:
    """The rows an :class:`EmbeddingCache` holds for a list of texts.

    Holds the blocks it points into, so eviction by another thread cannot take
    rows from under it.
    """

    def __init__(self, slots: np.ndarray, blocks: dict[int, _Block]) -> None:
        self.slots = slots
        self.found = slots >= 0
        self._blocks = blocks

    def gather(self, embeddings: np.ndarray, truncated: np.ndarray) -> None:
        """Write the found rows into ``embeddings`` and ``truncated`` (same order as the texts)."""
        targets = np.flatnonzero(self.found)
        slots = self.slots[targets]
        for block_id, block in self._blocks.items():
            if len(self._blocks) == 1:
                rows, where = slots & _ROW_MASK, targets
            else:
                mine = (slots >> _ROW_BITS) == block_id
                rows, where = slots[mine] & _ROW_MASK, targets[mine]
            _copy_rows(block.embeddings, rows, embeddings, where)
            truncated[where] = block.truncated[rows]


def _copy_rows(source: np.ndarray, rows: np.ndarray, target: np.ndarray, where: np.ndarray) -> None:
    """``target[where] = source[rows]``, by slices where both advance row by row.

    Texts looked up again in the order they were encoded (the usual case) map to
    long runs of consecutive rows: a slice copy moves them at memory speed, while a
    gather pays for each row.
    """
    breaks = np.flatnonzero((np.diff(rows) != 1) | (np.diff(where) != 1)) + 1
    if len(breaks) * _MIN_RUN > len(rows):
        target[where] = source[rows]
        return
    bounds = [0, *breaks.tolist(), len(rows)]
    for start, end in itertools.pairwise(bounds):
        first, at = int(rows[start]), int(where[start])
        target[at : at + end - start] = source[first : first + end - start]


class EmbeddingCache:
    """A thread-safe LRU cache of text embeddings, bounded in bytes.

    Embeddings are kept in the blocks the encoder returned, with an index from
    text to (block, row): a lookup costs one dictionary access per text, the
    output is gathered with numpy indexing, and eviction drops the least
    recently used block whole.

    Parameters
    ----------
    max_bytes : int
        Upper bound on the memory held (vectors, texts and per-entry overhead).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._index: dict[str, dict[str, int]] = {}
        self._blocks: OrderedDict[int, _Block] = OrderedDict()
        self._next_block = 0
        self._lock = threading.Lock()
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, namespace: str, texts: Sequence[str]) -> CacheHits:
        """Find the cached rows of ``texts``; their blocks become the most recently used."""
        with self._lock:
            index = self._index.get(namespace)
            if not index:
                self.misses += len(texts)
                return CacheHits(np.full(len(texts), -1, dtype=np.int64), {})
            slots = np.fromiter(
                map(index.get, texts, itertools.repeat(-1)), dtype=np.int64, count=len(texts)
            )
            block_ids = slots[slots >= 0] >> _ROW_BITS
            if len(block_ids) and block_ids.min() == block_ids.max():
                used = [int(block_ids[0])]  # the usual case, found without sorting
            else:
                used = np.unique(block_ids).tolist()
            blocks = {}
            for block_id in used:
                self._blocks.move_to_end(block_id)
                blocks[block_id] = self._blocks[block_id]
            found = int((slots >= 0).sum())
            self.hits += found
            self.misses += len(texts) - found
        return CacheHits(slots, blocks)

    def put(
        self, namespace: str, texts: Sequence[str], vectors: np.ndarray, truncated: np.ndarray
    ) -> None:
        """Keep ``vectors`` as one block, then drop least recently used blocks beyond the bound.

        The cache takes the arrays over without copying them when they are
        already float32 / bool and C-contiguous (as the encoder's output is),
        and makes them read-only, so that nobody can alter what others will
        read: a caller that needs to write to them afterwards must pass copies.
        A block larger than the whole bound is not kept (nor made read-only).
        """
        texts = list(texts)
        if not texts or len(texts) >= 1 << _ROW_BITS:
            return
        nbytes = (
            len(texts) * (vectors.shape[1] * 4 + 1 + _ENTRY_OVERHEAD)
            # getsizeof, not len: a text of CJK characters holds 2 or 4 bytes per character.
            + sum(map(sys.getsizeof, texts))
        )
        if nbytes > self.max_bytes:
            return
        embeddings = np.ascontiguousarray(vectors, dtype=np.float32)
        embeddings.flags.writeable = False
        flags = np.ascontiguousarray(truncated, dtype=bool)
        flags.flags.writeable = False
        with self._lock:
            block_id = self._next_block
            self._next_block += 1
            base = block_id << _ROW_BITS
            self._blocks[block_id] = _Block(namespace, texts, embeddings, flags, nbytes)
            slots = range(base, base + len(texts))
            self._index.setdefault(namespace, {}).update(zip(texts, slots, strict=True))
            self.nbytes += nbytes
            self._evict()

    def _evict(self) -> None:
        while self._blocks and self.nbytes > self.max_bytes:
            block_id, block = self._blocks.popitem(last=False)
            self.nbytes -= block.nbytes
            index = self._index[block.namespace]
            base = block_id << _ROW_BITS
            for row, text in enumerate(block.texts):
                # A later block may hold the same text: only this block's entries go.
                if index.get(text) == base + row:
                    del index[text]
            if not index:
                del self._index[block.namespace]

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
            self._index.clear()
            self._blocks.clear()
            self.nbytes = self.hits = self.misses = 0

    def __len__(self) -> int:
        return sum(len(index) for index in self._index.values())


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*")


def cache_limit_from_environment() -> int:
    """The in-process cache bound that ``SKEMBED_CACHE_BYTES`` asks for.

    The value is a whole number of bytes, optionally followed by a unit:
    ``B``, ``kB``, ``MB``, ``GB``, ``TB`` (powers of 1000) or ``KiB``,
    ``MiB``, ``GiB``, ``TiB`` (powers of 1024), in any letter case, e.g.
    ``1073741824``, ``512MiB`` or ``2GB``. ``0`` turns the cache off; unset
    or empty means the default, 1 GiB.

    Returns
    -------
    int
        The bound in bytes.

    Raises
    ------
    ValueError
        If the variable holds anything else (a negative or fractional number,
        an unknown unit); the message names the variable and its value.
    """
    value = os.environ.get(_CACHE_BYTES_VARIABLE, "")
    if not value.strip():
        return DEFAULT_CACHE_BYTES
    match = _SIZE.fullmatch(value)
    unit = _BYTE_UNITS.get(match[2].lower()) if match else None
    if unit is None:
        raise ValueError(
            f"{_CACHE_BYTES_VARIABLE}={value!r} is not a size in bytes: expected a whole number "
            "of bytes >= 0, optionally with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), "
            "such as 1073741824, 512MiB or 2GB; unset or empty means the default, 1GiB."
        )
    return int(match[1]) * unit


_PROCESS_CACHE: EmbeddingCache | None = None
_PROCESS_CACHE_LOCK = threading.Lock()


def process_cache() -> EmbeddingCache:
    # Created at first use, not at import: a bad SKEMBED_CACHE_BYTES must not break `import`.
    global _PROCESS_CACHE
    with _PROCESS_CACHE_LOCK:
        if _PROCESS_CACHE is None:
            _PROCESS_CACHE = EmbeddingCache(cache_limit_from_environment())
        return _PROCESS_CACHE


def set_cache_limit(max_bytes: int) -> None:
    """Bound the memory of the in-process embedding cache.

    Parameters
    ----------
    max_bytes : int
        Bytes of vectors, texts and bookkeeping the cache may hold; ``0``
        disables it. The default, 1 GiB, holds about 550,000 embeddings of
        size 384 of short texts. The environment variable
        ``SKEMBED_CACHE_BYTES`` (see :func:`cache_limit_from_environment`)
        sets the value when the cache is first used.
    """
    process_cache().resize(max_bytes)


def clear_cache() -> None:
    """Empty the in-process embedding cache."""
    process_cache().clear()


def cache_info() -> dict[str, int]:
    """Counters of the in-process cache.

    Returns
    -------
    dict
        ``entries``, ``nbytes`` (memory held: vectors, texts and bookkeeping),
        ``max_bytes``, ``hits`` and ``misses`` (input texts found and not found
        in the cache, repeats counted each time).
    """
    cache = process_cache()
    return {
        "entries": len(cache),
        "nbytes": cache.nbytes,
        "max_bytes": cache.max_bytes,
        "hits": cache.hits,
        "misses": cache.misses,
    }
