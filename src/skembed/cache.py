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
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, replace
from numbers import Integral
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from tqdm.auto import tqdm

from .encoder import Encoder, EncodeSettings

__all__ = [
    "CacheHits",
    "DiskEmbeddingStore",
    "EmbeddingCache",
    "cache_info",
    "cache_limit_from_environment",
    "clear_cache",
    "encode_cached",
    "open_store",
    "set_cache_limit",
]

DEFAULT_CACHE_BYTES = 1 << 30
_CACHE_BYTES_VARIABLE = "SKEMBED_CACHE_BYTES"
# Memory per entry beyond the vector data and the text (index slot, slot integer, the block's
# list of texts), measured with tracemalloc on CPython 3.11: 60-80 bytes.
_ENTRY_OVERHEAD = 72


@dataclass(frozen=True)
class CachedEncoding:
    """Embeddings in input order and, per row, whether its text was truncated."""

    embeddings: np.ndarray
    truncated: np.ndarray


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


def _process_cache() -> EmbeddingCache:
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
    _process_cache().resize(max_bytes)


def clear_cache() -> None:
    """Empty the in-process embedding cache."""
    _process_cache().clear()


def cache_info() -> dict[str, int]:
    """Counters of the in-process cache.

    Returns
    -------
    dict
        ``entries``, ``nbytes`` (memory held: vectors, texts and bookkeeping),
        ``max_bytes``, ``hits`` and ``misses`` (input texts found and not found
        in the cache, repeats counted each time).
    """
    cache = _process_cache()
    return {
        "entries": len(cache),
        "nbytes": cache.nbytes,
        "max_bytes": cache.max_bytes,
        "hits": cache.hits,
        "misses": cache.misses,
    }


# PRAGMA application_id marks a file as a skembed store ("skem"); PRAGMA user_version is the
# layout of its rows.
_APPLICATION_ID = 0x736B656D
_LAYOUT_VERSION = 1
_TABLE = (
    "CREATE TABLE embeddings (namespace TEXT NOT NULL, text_sha256 BLOB NOT NULL, "
    "truncated INTEGER NOT NULL, vector BLOB NOT NULL, checksum BLOB NOT NULL, "
    "PRIMARY KEY (namespace, text_sha256))"
)
# The layout skembed 0.1 wrote, without checksums: a store in it is upgraded in place.
_UNCHECKED_TABLE = (
    "CREATE TABLE embeddings (namespace TEXT, text_sha256 BLOB, "
    "truncated INTEGER, vector BLOB, PRIMARY KEY (namespace, text_sha256))"
)
# SQLite caps the number of bound parameters of one statement; look up in slices.
_LOOKUP_SLICE = 500
# Claims: a process about to encode texts that the store lacks records them here, so that
# the others wait for its rows instead of encoding the same texts (GridSearchCV(n_jobs>1)
# workers). Created at first claim; a store without it is read and written as before.
_CLAIMS_TABLE = (
    "CREATE TABLE IF NOT EXISTS claims (namespace TEXT NOT NULL, text_sha256 BLOB NOT NULL, "
    "owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, expires REAL NOT NULL, "
    "PRIMARY KEY (namespace, text_sha256))"
)
# A claim lapses this many seconds after its owner last renewed it; owners renew it every
# quarter of that from a background thread while they encode, so only a process that died or
# stopped (or a clock jump) lets a claim lapse.
CLAIM_LEASE_SECONDS = 30.0
_HOST = socket.gethostname()
_WARNED_STORES: set[str] = set()
_WARNED_LOCK = threading.Lock()


@functools.cache
def _empty_store_bytes() -> int:
    """Bytes in use in a store with no row: its tables and indexes, as this SQLite lays them out.

    The claims table counts: a store that processes share holds it from the first claim on.
    """
    with closing(sqlite3.connect(":memory:")) as connection:
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute(_TABLE)
        connection.execute(_CLAIMS_TABLE)
        return DiskEmbeddingStore._used_bytes(connection)


def _checksum(namespace: str, digest: bytes, truncated: int, vector: bytes) -> bytes:
    """Tie a row's vector to its key and flag, so that damage anywhere in the row shows."""
    check = hashlib.blake2b(namespace.encode(), digest_size=8)
    check.update(b"\0" + digest + (b"\1" if truncated else b"\0"))
    check.update(vector)
    return check.digest()


def _trusted_vector(
    namespace: str,
    digest: bytes,
    truncated: Any,
    vector: Any,
    checksum: Any,
    dimension: int | None,
) -> np.ndarray | None:
    """The vector of a stored row, or None when the row cannot be trusted."""
    if not isinstance(vector, bytes) or not vector or len(vector) % 4:
        return None
    if dimension is not None and len(vector) != 4 * dimension:
        return None
    if truncated not in (0, 1) or checksum != _checksum(namespace, digest, truncated, vector):
        return None
    array = np.frombuffer(vector, dtype=np.float32)
    return array if np.isfinite(array).all() else None


def _claimant_alive(host: str, pid: int) -> bool:
    """Whether the process holding a claim may still be running.

    Only a process of this host can be seen gone (or a zombie, killed and not
    yet reaped); elsewhere, and on Windows (where signal 0 would end the
    process), the claim's lease alone tells.
    """
    if host != _HOST or sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The state follows the parenthesised command name, which may hold spaces.
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock first, so what is read inside is what gets replaced.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.rollback()
        raise
    connection.execute("COMMIT")


class DiskEmbeddingStore:
    """A persistent embedding store in one SQLite file, safe across processes.

    Every row carries a checksum of its key, flag and vector. A row that
    fails it, has the wrong size for the model, or holds a non-finite value
    is never served: it is encoded again and overwritten. The checksum
    catches damage, not forgery: it has no secret, so whoever can write the
    file can write rows that pass it. The store is as trusted as its folder;
    share it only with those you would let choose your embeddings.

    Nothing is read or written at construction: the folder and file are
    created at first use. A store that cannot be written (a read-only file or
    folder, a full disk) warns once per file and process and is still read;
    the embeddings are returned all the same. A folder that cannot be created
    is an ``OSError`` at first use, before anything is encoded.

    Parameters
    ----------
    directory : str or path-like
        Folder of the store; created at first use. The file is
        ``skembed-embeddings.sqlite`` inside it.
    max_bytes : int, optional
        Bound on the bytes the rows take in the file. After a write that
        passes it, the oldest written rows are deleted until it holds again.
        ``None`` (the default) keeps every row. A bound below what an empty
        store takes (a few pages of SQLite, 24 KiB here) could keep no row and
        is refused.

    Attributes
    ----------
    path : Path
        The SQLite file.

    Examples
    --------
    >>> from skembed import SentenceEmbedder
    >>> from skembed.cache import DiskEmbeddingStore
    >>> store = DiskEmbeddingStore("embeddings", max_bytes=2**30)  # doctest: +SKIP
    >>> SentenceEmbedder(memory=store).fit_transform(["A cat."])  # doctest: +SKIP
    """

    FILENAME = "skembed-embeddings.sqlite"

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"The folder of an embedding store must be a str or path-like, got {directory!r}."
            )
        folder = os.fspath(directory)
        if not isinstance(folder, str) or not folder:
            raise ValueError(
                f"The folder of an embedding store must be a non-empty path, got {directory!r}; "
                "give a folder, or memory=None to keep embeddings in memory only."
            )
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, Integral) or max_bytes < 0
        ):
            raise ValueError(f"max_bytes must be an integer >= 0 or None, got {max_bytes!r}.")
        if max_bytes is not None and max_bytes < _empty_store_bytes():
            raise ValueError(
                f"max_bytes={max_bytes} is below the {_empty_store_bytes():,} bytes an empty "
                "store takes, so no embedding could ever be kept; give at least that, or "
                "max_bytes=None for no bound."
            )
        self.directory = Path(folder)
        self.path = self.directory / self.FILENAME
        self.max_bytes = None if max_bytes is None else int(max_bytes)

    def __repr__(self) -> str:
        bound = "" if self.max_bytes is None else f", max_bytes={self.max_bytes}"
        return f"{type(self).__name__}({str(self.directory)!r}{bound})"

    def _unusable(self, reason: str) -> ValueError:
        return ValueError(
            f"{str(self.path)!r} cannot be used as an embedding store: {reason}. Delete the "
            "file, or choose another folder for the store (memory=)."
        )

    def _layout(self, connection: sqlite3.Connection) -> str:
        """``"current"``, ``"empty"`` or ``"unchecked"`` (skembed 0.1); other files refused."""
        # One read transaction: another process may set the file up between two statements.
        snapshot = not connection.in_transaction
        if snapshot:
            connection.execute("BEGIN")
        try:
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = dict(
                connection.execute(
                    "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite%'"
                )
            )
        finally:
            if snapshot:
                connection.execute("COMMIT")
        if application_id == _APPLICATION_ID:
            if version == _LAYOUT_VERSION:
                return "current"
            raise self._unusable(
                f"its layout {version} is not the layout {_LAYOUT_VERSION} this version of "
                "skembed reads (upgrade skembed to read a newer store)"
            )
        if application_id == 0 and version == 0:
            if not tables:
                return "empty"
            if tables == {"embeddings": _UNCHECKED_TABLE}:
                return "unchecked"
        raise self._unusable(
            f"it is an SQLite database of another application (application id {application_id}, "
            f"tables {sorted(tables)})"
        )

    def _open(self) -> sqlite3.Connection:
        """A read-write connection to the store, created or upgraded if needed."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OSError(
                f"Cannot create the folder {str(self.directory)!r} of the embedding store: "
                f"{error.strerror or error}. Give a folder that exists or can be created, or "
                "memory=None to keep embeddings in memory only."
            ) from error
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            # Identify the file before anything writes to it: a foreign file is left untouched.
            layout = self._layout(connection)
            if layout == "empty":
                # Only takes effect before the first table: lets clear() and eviction shrink it.
                connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            if layout != "current":
                with _transaction(connection):
                    self._set_up(connection)
            # WAL lets readers in other processes go on while one process writes.
            connection.execute("PRAGMA journal_mode=WAL")
        except BaseException:
            connection.close()
            raise
        return connection

    def _set_up(self, connection: sqlite3.Connection) -> None:
        # Read again under the write lock: another process may have set the file up meanwhile.
        layout = self._layout(connection)
        if layout == "empty":
            connection.execute(_TABLE)
        elif layout == "unchecked":
            connection.create_function("skembed_checksum", 4, _checksum, deterministic=True)
            connection.execute("ALTER TABLE embeddings ADD COLUMN checksum BLOB")
            connection.execute(
                "UPDATE embeddings SET checksum = "
                "skembed_checksum(namespace, text_sha256, truncated, vector)"
            )
        if layout != "current":
            connection.execute(f"PRAGMA application_id={_APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version={_LAYOUT_VERSION}")

    def _open_for_reading(self) -> sqlite3.Connection | None:
        """A connection that reads the store, or None when it holds nothing to read.

        A store that cannot be opened for writing is opened read-only; failing
        that (a read-only folder without SQLite's shared-memory file), as
        immutable. Raises the first ``sqlite3.OperationalError`` if all fail.
        """
        try:
            return self._open()
        except sqlite3.OperationalError as error:
            failure = error
        uri = self.path.resolve().as_uri()
        for query in ("?mode=ro", "?immutable=1"):
            try:
                connection = sqlite3.connect(uri + query, uri=True, timeout=60)
            except sqlite3.OperationalError:
                continue
            try:
                if self._layout(connection) == "current":
                    return connection
            except sqlite3.OperationalError:
                connection.close()
                continue
            except BaseException:
                connection.close()
                raise
            # A new or old-layout file that cannot be upgraded holds no trusted rows.
            connection.close()
            return None
        raise failure

    @contextmanager
    def _errors(self) -> Iterator[None]:
        # A damaged file shows as a DatabaseError; OperationalError is about access, not content.
        try:
            yield
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as error:
            raise self._unusable(f"it is not a readable SQLite database ({error})") from error

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """A connection that reads the store (closed on exit), or None when nothing is stored."""
        with self._errors():
            connection = self._open_for_reading()
            if connection is None:
                yield None
                return
            with closing(connection):
                yield connection

    def _warn_once(self, error: Exception) -> None:
        key = os.path.abspath(self.path)
        with _WARNED_LOCK:
            if key in _WARNED_STORES:
                return
            _WARNED_STORES.add(key)
        warnings.warn(
            f"The embedding store {key!r} cannot be written ({error}): embeddings are computed "
            "and returned, but not stored. This warning is shown once per store and process.",
            UserWarning,
            stacklevel=4,
        )

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def _rows(
        self,
        connection: sqlite3.Connection,
        namespace: str,
        digests: list[bytes],
        select: str = "text_sha256, truncated, vector, checksum FROM embeddings",
    ) -> Iterator[tuple[Any, ...]]:
        for start in range(0, len(digests), _LOOKUP_SLICE):
            part = digests[start : start + _LOOKUP_SLICE]
            yield from connection.execute(
                f"SELECT {select} "
                f"WHERE namespace = ? AND text_sha256 IN ({','.join('?' * len(part))})",
                [namespace, *part],
            )

    def get(
        self, namespace: str, texts: Sequence[str], dimension: int | None = None
    ) -> dict[str, tuple[np.ndarray, bool]]:
        """Return the stored ``(vector, truncated)`` of those texts that are stored and sound.

        Parameters
        ----------
        namespace : str
            The model and settings the vectors belong to.
        texts : sequence of str
            The texts to look up.
        dimension : int, optional
            The embedding size; a row of another size is not served.

        Returns
        -------
        dict
            Text to ``(vector, truncated)`` for every text with a trusted row.
        """
        by_digest = {self._digest(text): text for text in texts}
        found = {}
        try:
            with self._reading() as connection:
                if connection is None:
                    return found
                for digest, truncated, vector, checksum in self._rows(
                    connection, namespace, list(by_digest)
                ):
                    row = _trusted_vector(namespace, digest, truncated, vector, checksum, dimension)
                    if row is not None:
                        found[by_digest[digest]] = (row, bool(truncated))
        except sqlite3.OperationalError as error:
            self._warn_once(error)
        return found

    def put(
        self, namespace: str, texts: Sequence[str], vectors: np.ndarray, truncated: np.ndarray
    ) -> None:
        """Store entries in one transaction: all are written, or none.

        A text that already has a trusted row keeps it (the first writer
        wins); a missing or damaged row is written. Vectors with non-finite
        values are not stored. A store that cannot be written warns once per
        file and process and stores nothing.

        Parameters
        ----------
        namespace : str
            The model and settings the vectors belong to.
        texts : sequence of str
            One text per row of ``vectors``.
        vectors : ndarray of shape (n_texts, dimension)
            The embeddings, stored as float32.
        truncated : sequence of bool
            Per text, whether it was cut to the model's length.
        """
        matrix = np.asarray(vectors, dtype=np.float32)
        finite = np.isfinite(matrix).all(axis=1)
        rows = {}
        for text, vector, cut, keep in zip(texts, matrix, truncated, finite, strict=True):
            if keep:
                digest, blob, flag = self._digest(text), vector.tobytes(), int(cut)
                rows[digest] = (
                    namespace,
                    digest,
                    flag,
                    blob,
                    _checksum(namespace, digest, flag, blob),
                )
        if not rows:
            return
        dimension = matrix.shape[1]
        try:
            with self._errors(), closing(self._open()) as connection:
                with _transaction(connection):
                    for digest, cut, vector, checksum in self._rows(
                        connection, namespace, list(rows)
                    ):
                        if (
                            _trusted_vector(namespace, digest, cut, vector, checksum, dimension)
                            is not None
                        ):
                            del rows[digest]
                    connection.executemany(
                        "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows.values()
                    )
                    evicted = self._evict(connection)
                if evicted:
                    self._vacuum(connection)
        except (sqlite3.OperationalError, OSError) as error:
            self._warn_once(error)

    def claim(
        self, namespace: str, texts: Sequence[str], owner: str, dimension: int | None = None
    ) -> tuple[dict[str, tuple[np.ndarray, bool]], list[str]] | None:
        """Claim, for ``owner`` to encode, the texts nobody has stored or is encoding.

        One write transaction reads the texts' rows and claims and records the
        new claims, so two live owners never hold the same text at once. A
        claim held by another owner is honoured while it is live: renewed
        within :data:`CLAIM_LEASE_SECONDS` and, on this host, its process
        still running.

        Parameters
        ----------
        namespace : str
            The model and settings the vectors belong to.
        texts : sequence of str
            Distinct texts the caller needs.
        owner : str
            Who claims: unique per call of the caller, so that threads of one
            process tell their claims apart.
        dimension : int, optional
            The embedding size; a row of another size counts as missing.

        Returns
        -------
        tuple of (dict, list of str) or None
            The trusted rows stored now (``text -> (vector, truncated)``) and
            the texts claimed for ``owner``; any other text is claimed by a
            live owner. ``None`` when the store cannot be written: nothing is
            claimed (warned once per store and process).
        """
        by_digest = {self._digest(text): text for text in texts}
        found: dict[str, tuple[np.ndarray, bool]] = {}
        now = time.time()
        try:
            with self._errors(), closing(self._open()) as connection:
                with _transaction(connection):
                    connection.execute(_CLAIMS_TABLE)
                    for digest, cut, vector, checksum in self._rows(
                        connection, namespace, list(by_digest)
                    ):
                        row = _trusted_vector(namespace, digest, cut, vector, checksum, dimension)
                        if row is not None:
                            found[by_digest.pop(digest)] = (row, bool(cut))
                    held = {
                        digest
                        for digest, holder, host, pid, expires in self._rows(
                            connection,
                            namespace,
                            list(by_digest),
                            "text_sha256, owner, host, pid, expires FROM claims",
                        )
                        if holder != owner and expires > now and _claimant_alive(host, pid)
                    }
                    free = [digest for digest in by_digest if digest not in held]
                    lease = (owner, _HOST, os.getpid(), now + CLAIM_LEASE_SECONDS)
                    connection.executemany(
                        "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?)",
                        [(namespace, digest, *lease) for digest in free],
                    )
        except (sqlite3.OperationalError, OSError) as error:
            self._warn_once(error)
            return None
        return found, [by_digest[digest] for digest in free]

    def renew(self, owner: str) -> None:
        """Extend every claim of ``owner`` by :data:`CLAIM_LEASE_SECONDS` from now."""
        self._write_claims(
            "UPDATE claims SET expires = ? WHERE owner = ?",
            (time.time() + CLAIM_LEASE_SECONDS, owner),
        )

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner``, and every claim that has lapsed."""
        self._write_claims(
            "DELETE FROM claims WHERE owner = ? OR expires <= ?", (owner, time.time())
        )

    def _write_claims(self, statement: str, parameters: tuple[Any, ...]) -> None:
        # A failure here costs others time only: a claim left behind lapses by itself.
        try:
            with self._errors(), closing(self._open()) as connection:
                with _transaction(connection):
                    connection.execute(_CLAIMS_TABLE)
                    connection.execute(statement, parameters)
        except (sqlite3.OperationalError, OSError) as error:
            self._warn_once(error)

    @staticmethod
    def _used_bytes(connection: sqlite3.Connection) -> int:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * connection.execute("PRAGMA page_size").fetchone()[0]

    def _evict(self, connection: sqlite3.Connection) -> bool:
        """Delete the oldest rows until the bound holds; return whether any were deleted."""
        if self.max_bytes is None:
            return False
        evicted = False
        while (used := self._used_bytes(connection)) > self.max_bytes:
            count = connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
            if not count:
                break
            # Rows are about the same size: delete the share of them that is over the bound.
            excess = max(1, math.ceil(count * (used - self.max_bytes) / used))
            connection.execute(
                "DELETE FROM embeddings WHERE rowid IN "
                "(SELECT rowid FROM embeddings ORDER BY rowid LIMIT ?)",
                (excess,),
            )
            evicted = True
        return evicted

    @staticmethod
    def _vacuum(connection: sqlite3.Connection) -> None:
        # executescript runs the pragma to the end; execute would free a single page.
        connection.executescript("PRAGMA incremental_vacuum;")

    def clear(self) -> None:
        """Delete every row and give the space back to the file system.

        Raises
        ------
        OSError
            If the store cannot be written.
        """
        if not self.path.exists():
            return  # nothing to clear; the folder is not created for it
        try:
            with self._errors(), closing(self._open()) as connection:
                with _transaction(connection):
                    connection.execute("DELETE FROM embeddings")
                self._vacuum(connection)
        except sqlite3.OperationalError as error:
            raise OSError(
                f"Cannot clear the embedding store {str(self.path)!r}: {error}."
            ) from error

    def _measure(self, measure: Callable[[sqlite3.Connection], int]) -> int:
        if not self.path.exists():
            return 0  # nothing stored; a question about the store does not create it
        try:
            with self._reading() as connection:
                return 0 if connection is None else measure(connection)
        except sqlite3.OperationalError as error:
            raise OSError(
                f"Cannot read the embedding store {str(self.path)!r}: {error}."
            ) from error

    def __len__(self) -> int:
        """The number of rows stored."""
        return self._measure(
            lambda connection: connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the file in use by rows and their index, the quantity ``max_bytes`` bounds."""
        return self._measure(self._used_bytes)


def open_store(memory: Any) -> DiskEmbeddingStore | None:
    """The persistent store an estimator's ``memory`` parameter names.

    Parameters
    ----------
    memory : None, str, path-like, joblib.Memory or DiskEmbeddingStore
        - ``None``: no persistent store.
        - A folder: a store in that folder (``""`` is refused).
        - A ``joblib.Memory``: a store in the folder ``skembed-embeddings``
          inside the Memory's own cache folder (``<location>/joblib`` for a
          str location), so that ``memory.clear()`` deletes it with the rest
          of that cache. A Memory without a location caches nothing: no
          store.
        - A :class:`DiskEmbeddingStore`: used as is; build one to bound the
          store's size (``max_bytes``).

    Returns
    -------
    DiskEmbeddingStore or None
        The store; nothing is read or written before its first use.

    Raises
    ------
    ValueError
        For an empty folder name or a joblib.Memory whose backend is not the
        local file system.
    TypeError
        For any other kind of value.
    """
    if memory is None or isinstance(memory, DiskEmbeddingStore):
        return memory
    if isinstance(memory, joblib.Memory):
        if memory.store_backend is None:
            return None
        if memory.backend != "local":
            raise ValueError(
                f"memory={memory!r} uses the joblib store backend {memory.backend!r}; the "
                "embedding store needs a local folder: give a joblib.Memory with the 'local' "
                "backend, a folder, or a DiskEmbeddingStore."
            )
        return DiskEmbeddingStore(Path(memory.store_backend.location) / "skembed-embeddings")
    if isinstance(memory, (str, os.PathLike)):
        return DiskEmbeddingStore(memory)
    raise TypeError(
        "memory must be None, a folder (str or path-like), a joblib.Memory or a "
        f"DiskEmbeddingStore, got {memory!r}."
    )


def namespace_for(encoder: Encoder, settings: EncodeSettings) -> str:
    """Hash of everything that determines an embedding besides the text.

    The model's content (fingerprint), where and in which precision it runs,
    and every field of ``settings``: an option added to
    :class:`~skembed.encoder.EncodeSettings` enters the key by itself.
    """
    if settings.max_seq_length is None:
        # The default and the same limit given explicitly give the same embeddings.
        settings = replace(settings, max_seq_length=encoder.default_max_seq_length)
    payload = {
        "model": encoder.fingerprint,
        "device": encoder.device.type,
        "dtype": str(encoder.dtype),
        "settings": asdict(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def encode_cached(
    encoder: Encoder,
    texts: Sequence[str],
    settings: EncodeSettings | None = None,
    *,
    store: DiskEmbeddingStore | None = None,
    show_progress_bar: bool = False,
    **run_options: Any,
) -> CachedEncoding:
    """Encode texts, each distinct text at most once, through the caches.

    Looks in the in-process cache, then in ``store``; encodes the rest with
    ``encoder`` and records them in both. With the in-process cache off
    (limit 0) it is not consulted at all.

    Parameters
    ----------
    encoder : Encoder or EncoderGroup
        The loaded model.
    texts : sequence of str
        The texts, duplicates allowed.
    settings : EncodeSettings, optional
        Options that change an embedding; all of them are part of the cache key.
    store : DiskEmbeddingStore, optional
        The persistent store, if any.
    show_progress_bar : bool, default=False
        Show a tqdm bar on stderr that counts the input texts, those found in a
        cache and repeats included, so that it ends at ``len(texts)``.
    **run_options
        ``batch_size`` and ``max_batch_tokens`` of :meth:`Encoder.encode`:
        how the work runs, not what it computes.

    Returns
    -------
    CachedEncoding
        Rows in the order of ``texts``.
    """
    settings = settings or EncodeSettings()
    namespace = namespace_for(encoder, settings)
    texts = texts if isinstance(texts, list) else list(texts)
    cache = _process_cache()
    caching = cache.max_bytes > 0
    # One dictionary lookup per input text; repeats are only merged among the texts the
    # in-process cache does not hold, so a fully cached call does no per-text work beyond it.
    hits = cache.lookup(namespace, texts) if caching else None
    todo = None if hits is None else np.flatnonzero(~hits.found)
    if todo is not None and len(todo) == len(texts):
        todo = None  # nothing found: as with the cache off
    with tqdm(total=len(texts), desc="Encoding", unit="text", disable=not show_progress_bar) as bar:
        if todo is not None and not len(todo):
            bar.update(len(texts))
            return _from_cache(hits, len(texts), encoder.embedding_dimension)
        todo_texts = texts if todo is None else [texts[i] for i in todo]
        bar.update(len(texts) - len(todo_texts))  # those the in-process cache holds
        found = _encode_unique(
            encoder,
            namespace,
            todo_texts,
            settings,
            store=store,
            cache=cache if caching else None,
            bar=bar if show_progress_bar else None,
            run_options=run_options,
        )
    if todo is None:
        return found
    result = _from_cache(hits, len(texts), encoder.embedding_dimension)
    result.embeddings[todo], result.truncated[todo] = found.embeddings, found.truncated
    return result


def _from_cache(hits: CacheHits, n: int, dimension: int) -> CachedEncoding:
    """A new output of ``n`` rows holding the rows ``hits`` found (the others unset)."""
    embeddings = np.empty((n, dimension), dtype=np.float32)
    truncated = np.zeros(n, dtype=bool)
    hits.gather(embeddings, truncated)
    return CachedEncoding(embeddings, truncated)


def _encode_unique(
    encoder: Encoder,
    namespace: str,
    texts: list[str],
    settings: EncodeSettings,
    *,
    store: DiskEmbeddingStore | None,
    cache: EmbeddingCache | None,
    bar: Any,
    run_options: dict[str, Any],
) -> CachedEncoding:
    """Embeddings of ``texts`` (repeats allowed) from ``store`` or the encoder.

    Each distinct text is encoded at most once; what is encoded or read from the
    store goes into ``cache``. The result is the caller's own (writable) arrays.
    """
    unique = list(dict.fromkeys(texts))
    inverse = None
    if len(unique) != len(texts):
        position = {text: i for i, text in enumerate(unique)}
        inverse = np.fromiter(map(position.__getitem__, texts), dtype=np.int64, count=len(texts))
    # Positions in `unique` of the texts still to find, and those texts.
    pending = np.arange(len(unique))
    missing = unique
    disk = None
    if missing and store is not None:
        from_disk = store.get(namespace, missing, encoder.embedding_dimension)
        if from_disk:
            on_disk = np.fromiter(map(from_disk.__contains__, missing), bool, len(missing))
            disk_texts = [missing[i] for i in np.flatnonzero(on_disk)]
            disk = (
                pending[on_disk],
                np.stack([from_disk[text][0] for text in disk_texts]),
                np.array([from_disk[text][1] for text in disk_texts]),
            )
            if cache is not None:
                cache.put(namespace, disk_texts, disk[1], disk[2])
            pending, missing = pending[~on_disk], [missing[i] for i in np.flatnonzero(~on_disk)]
    progress = None
    if bar is not None:
        # Each unique text stands for all its repeats in the input.
        repeats = (
            np.ones(len(unique), dtype=np.int64)
            if inverse is None
            else np.bincount(inverse, minlength=len(unique))
        )
        bar.update(len(texts) - int(repeats[pending].sum()))

        def progress(rows: np.ndarray) -> None:
            bar.update(int(repeats[pending[rows]].sum()))

    result = None
    if missing and store is not None:
        result = _encode_shared(
            encoder, namespace, missing, settings, store, progress=progress, run_options=run_options
        )
    elif missing:
        result = encoder.encode(missing, settings, progress=progress, **run_options)
    if result is not None and cache is not None:
        cache.put(namespace, missing, result.embeddings, result.truncated)
    if result is not None and len(missing) == len(unique):
        # Nothing came from the store: the encoder's output is already in order. If the cache
        # kept it as its block (it made it read-only), the caller gets its own copy, made by
        # the gather of repeats when there is one.
        embeddings, truncated = result.embeddings, result.truncated
        if inverse is None and not embeddings.flags.writeable:
            embeddings, truncated = embeddings.copy(), truncated.copy()
    else:
        embeddings = np.empty((len(unique), encoder.embedding_dimension), dtype=np.float32)
        truncated = np.zeros(len(unique), dtype=bool)
        encoded = None if result is None else (pending, result.embeddings, result.truncated)
        for part in (disk, encoded):
            if part is not None:
                rows, vectors, cuts = part
                embeddings[rows], truncated[rows] = vectors, cuts
    if inverse is not None:
        embeddings, truncated = embeddings[inverse], truncated[inverse]
    return CachedEncoding(embeddings, truncated)


# How long a process waiting for texts that another one is encoding sleeps between two looks
# at the store: short at first (a few texts), longer for a long wait.
_FIRST_POLL_SECONDS = 0.02
_LAST_POLL_SECONDS = 0.5


def _encode_shared(
    encoder: Encoder,
    namespace: str,
    texts: list[str],
    settings: EncodeSettings,
    store: DiskEmbeddingStore,
    *,
    progress: Callable[[np.ndarray], None] | None,
    run_options: dict[str, Any],
) -> CachedEncoding:
    """Embeddings of distinct ``texts`` that ``store`` lacks, shared with other processes.

    Claims the texts nobody has stored or is encoding, encodes them and writes
    them to the store, then waits for the texts that live claims of other
    processes cover, reading them from the store as they arrive. A claim whose
    process died (seen on this host) or stopped renewing it (on any host) is
    taken over and its texts encoded here.

    The guarantee: while every process that claims a text lives, renews its
    claim and can write the store, each text is encoded by one process in
    all. A text is encoded once more for each claimant that dies or stalls
    past the lease before its rows are written, and for each time its row is
    evicted (``max_bytes``) before a waiting process reads it. A store that
    cannot be written coordinates nothing: every process encodes what it needs.
    """
    embeddings = np.empty((len(texts), encoder.embedding_dimension), dtype=np.float32)
    truncated = np.zeros(len(texts), dtype=bool)
    position = {text: i for i, text in enumerate(texts)}
    # Unique per call: threads of one process wait for each other's claims like processes do.
    owner = f"{_HOST}:{os.getpid()}:{secrets.token_hex(8)}"
    waiting, pause = texts, _FIRST_POLL_SECONDS
    while True:
        claimed = store.claim(namespace, waiting, owner, encoder.embedding_dimension)
        found, mine = ({}, waiting) if claimed is None else claimed
        if found:
            rows = np.fromiter(map(position.__getitem__, found), dtype=np.int64, count=len(found))
            embeddings[rows] = np.stack([vector for vector, _ in found.values()])
            truncated[rows] = [cut for _, cut in found.values()]
            if progress is not None:
                progress(rows)
        if mine:
            rows = np.fromiter(map(position.__getitem__, mine), dtype=np.int64, count=len(mine))
            with _lease(store, owner, claimed is not None):
                result = encoder.encode(
                    mine, settings, progress=_rows_progress(progress, rows), **run_options
                )
                store.put(namespace, mine, result.embeddings, result.truncated)
            embeddings[rows], truncated[rows] = result.embeddings, result.truncated
        if len(found) + len(mine) == len(waiting):
            return CachedEncoding(embeddings, truncated)
        done = set(found).union(mine)
        waiting = [text for text in waiting if text not in done]
        time.sleep(pause)
        pause = min(2 * pause, _LAST_POLL_SECONDS)


def _rows_progress(
    progress: Callable[[np.ndarray], None] | None, rows: np.ndarray
) -> Callable[[np.ndarray], None] | None:
    """``progress`` of positions in a subset, told as the subset's ``rows`` of the whole."""
    if progress is None:
        return None
    return lambda done: progress(rows[done])


@contextmanager
def _lease(store: DiskEmbeddingStore, owner: str, claimed: bool) -> Iterator[None]:
    """Keep ``owner``'s claims live while the body runs; drop them after it, however it ends.

    Dropped after the rows are written, so a waiting process finds either the
    claim or the row; dropped on an error too, so that others take the texts
    over at once instead of after the lease.
    """
    if not claimed:
        yield
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(CLAIM_LEASE_SECONDS / 4):
            store.renew(owner)

    thread = threading.Thread(target=renew, name="skembed-claim-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        store.release(owner)
