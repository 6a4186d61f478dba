"""The persistent embedding store: a SQLite file shared by processes and sessions."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from numbers import Integral
from pathlib import Path
from typing import Any

import joblib
import numpy as np

__all__ = ["DiskEmbeddingStore", "open_store"]


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

    Only a process of this host can be seen gone; elsewhere the claim's lease
    alone tells.
    """
    return host != _HOST or process_running(pid)


def process_running(pid: int) -> bool:
    """Whether process ``pid`` of this host may still be running.

    ``False`` only for a process seen gone, or a zombie (killed and not yet
    reaped). On Windows, where signal 0 would end the process, always ``True``.
    """
    if sys.platform == "win32":
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
                    stored = []
                    for digest, cut, vector, checksum in self._rows(
                        connection, namespace, list(by_digest)
                    ):
                        row = _trusted_vector(namespace, digest, cut, vector, checksum, dimension)
                        if row is not None:
                            found[by_digest.pop(digest)] = (row, bool(cut))
                            stored.append(digest)
                    # A claim on a stored text is moot: one left by a process killed between
                    # writing its rows and dropping its claims goes now, not when it lapses.
                    connection.executemany(
                        "DELETE FROM claims WHERE namespace = ? AND text_sha256 = ?",
                        [(namespace, digest) for digest in stored],
                    )
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
