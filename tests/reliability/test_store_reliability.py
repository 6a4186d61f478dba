"""Reliability of the embedding caches: the persistent store never serves a damaged row,
refuses unusable files with a clear error, survives a store it cannot write, and the
in-process cache counts the memory it really holds (issue 8, findings 2, 10, 13, 14)."""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import tracemalloc
import warnings

import joblib
import numpy as np
import pytest
from sklearn.base import clone

from skembed import SentenceEmbedder, cache, similarity
from skembed.cache import (
    DEFAULT_CACHE_BYTES,
    DiskEmbeddingStore,
    EmbeddingCache,
    cache_info,
    clear_cache,
    encode_cached,
)
from skembed.encoder import Encoder

pytestmark = pytest.mark.usefixtures("fresh_cache")

TEXTS = [f"the cat sits outside {i}" for i in range(6)]


@pytest.fixture(scope="module")
def reference(encoder) -> np.ndarray:
    """The embeddings of TEXTS, encoded without any cache."""
    return encoder.encode(TEXTS).embeddings


def encode(encoder: Encoder, texts: list[str], store: DiskEmbeddingStore | None) -> np.ndarray:
    """Encode through the store only: the in-process cache is emptied first."""
    clear_cache()
    return encode_cached(encoder, texts, store=store).embeddings


def stored_vector(store: DiskEmbeddingStore, text: str) -> bytes:
    digest = hashlib.sha256(text.encode()).digest()
    with sqlite3.connect(store.path) as connection:
        (vector,) = connection.execute(
            "SELECT vector FROM embeddings WHERE text_sha256 = ?", (digest,)
        ).fetchone()
    return vector


def store_warnings(caught: list[warnings.WarningMessage], store: DiskEmbeddingStore) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and str(store.path.name) in str(w.message)
    ]


# --- finding 2: rows are checked on read ----------------------------------------------------


def _wrong_length(vector: bytes) -> bytes:
    return vector[:-4]


def _nan(vector: bytes) -> bytes:
    return np.full(len(vector) // 4, np.nan, dtype=np.float32).tobytes()


def _inf(vector: bytes) -> bytes:
    values = np.frombuffer(vector, dtype=np.float32).copy()
    values[3] = np.inf
    return values.tobytes()


def _flipped_bit(vector: bytes) -> bytes:
    # The top exponent bit of the first value: of the right size and finite (the rows are
    # normalised, so |value| < 1), only the checksum tells.
    return vector[:3] + bytes([vector[3] ^ 0x40]) + vector[4:]


@pytest.mark.parametrize("tamper", [_wrong_length, _nan, _inf, _flipped_bit])
def test_damaged_row_is_encoded_again_and_overwritten(
    encoder, reference, tmp_path, encoded, tamper
):
    store = DiskEmbeddingStore(tmp_path)
    encode(encoder, TEXTS, store)
    damaged = tamper(stored_vector(store, TEXTS[2]))
    with sqlite3.connect(store.path) as connection:
        connection.execute(
            "UPDATE embeddings SET vector = ? WHERE text_sha256 = ?",
            (damaged, hashlib.sha256(TEXTS[2].encode()).digest()),
        )
    encoded.clear()

    out = encode(encoder, TEXTS, store)

    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert encoded == [TEXTS[2]]  # only the damaged row is encoded again
    assert stored_vector(store, TEXTS[2]) == out[2].tobytes()  # and overwritten
    encoded.clear()
    np.testing.assert_array_equal(encode(encoder, TEXTS, store), out)
    assert encoded == []


def test_row_swapped_with_another_rows_vector_is_not_served(encoder, reference, tmp_path):
    store = DiskEmbeddingStore(tmp_path)
    encode(encoder, TEXTS, store)
    digests = [hashlib.sha256(text.encode()).digest() for text in TEXTS[:2]]
    with sqlite3.connect(store.path) as connection:
        connection.execute(
            "UPDATE embeddings SET vector = (SELECT vector FROM embeddings WHERE text_sha256 = ?) "
            "WHERE text_sha256 = ?",
            digests,
        )
    np.testing.assert_allclose(encode(encoder, TEXTS, store), reference, atol=1e-6)


def test_row_of_another_dimension_is_not_served(encoder, reference, tmp_path):
    store = DiskEmbeddingStore(tmp_path)
    namespace = "a namespace"
    store.put(namespace, ["a cat"], np.ones((1, 8), dtype=np.float32), np.array([False]))
    assert store.get(namespace, ["a cat"], dimension=8)
    assert store.get(namespace, ["a cat"], dimension=32) == {}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_are_not_stored(tmp_path, value):
    store = DiskEmbeddingStore(tmp_path)
    vectors = np.ones((3, 4), dtype=np.float32)
    vectors[1, 2] = value
    vectors[2, 0] = value
    store.put("ns", ["fine", "broken", "broken too"], vectors, np.array([False, False, True]))
    assert list(store.get("ns", ["fine", "broken", "broken too"])) == ["fine"]
    assert len(store) == 1


def test_non_finite_embeddings_are_neither_stored_nor_compared(encoder, tmp_path, monkeypatch):
    # A model whose output overflows: its embeddings are returned as they are, but the store
    # keeps none of them and similarity refuses them.
    real_encode = Encoder.encode

    def overflowing(self, texts, *args, **kwargs):
        result = real_encode(self, texts, *args, **kwargs)
        result.embeddings[::2, 0] = np.inf
        return result

    monkeypatch.setattr(Encoder, "encode", overflowing)
    store = DiskEmbeddingStore(tmp_path)
    got = encode_cached(encoder, TEXTS, store=store)
    assert np.isinf(got.embeddings[::2, 0]).all()
    assert len(store) == 3  # only the finite rows
    with pytest.raises(ValueError, match="infinity"):
        similarity(got.embeddings)


def test_lookups_of_more_texts_than_one_query_can_name(tmp_path, monkeypatch):
    # Lookups go in slices of 500 texts, within SQLite's limit on the variables of one
    # statement (999 in older builds; this test sets it for every connection).
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = DiskEmbeddingStore(tmp_path)
    texts = [f"text {i}" for i in range(1234)]
    vectors = np.arange(1234 * 4, dtype=np.float32).reshape(1234, 4)
    flags = np.arange(1234) % 3 == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed statement would only warn
        store.put("ns", texts, vectors, flags)
        found = store.get("ns", [*texts, "not stored"])
        assert sorted(found) == sorted(texts)
        np.testing.assert_array_equal(np.stack([found[t][0] for t in texts]), vectors)
        assert [found[t][1] for t in texts] == flags.tolist()
        # Writing them all again finds every stored row (in every slice): the first writer wins.
        store.put("ns", texts, -vectors, ~flags)
        again = store.get("ns", texts)
    assert len(store) == 1234
    np.testing.assert_array_equal(np.stack([again[t][0] for t in texts]), vectors)


# Written by skembed 0.1, before rows carried a checksum.
_UNCHECKED_LAYOUT = (
    "CREATE TABLE IF NOT EXISTS embeddings (namespace TEXT, text_sha256 BLOB, "
    "truncated INTEGER, vector BLOB, PRIMARY KEY (namespace, text_sha256))"
)


def test_store_of_the_unchecked_layout_is_upgraded_in_place(encoder, reference, tmp_path, encoded):
    store = DiskEmbeddingStore(tmp_path)
    namespace = "old namespace"
    with sqlite3.connect(store.path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(_UNCHECKED_LAYOUT)
        connection.executemany(
            "INSERT INTO embeddings VALUES (?, ?, ?, ?)",
            [
                (namespace, hashlib.sha256(b"kept").digest(), 1, np.ones(4, np.float32).tobytes()),
                (namespace, hashlib.sha256(b"nan").digest(), 0, _nan(bytes(16))),
            ],
        )
    found = store.get(namespace, ["kept", "nan"], dimension=4)
    assert list(found) == ["kept"]
    np.testing.assert_array_equal(found["kept"][0], np.ones(4))
    assert found["kept"][1] is True
    # The upgraded file is an ordinary store from now on.
    out = encode(encoder, TEXTS, store)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    encoded.clear()
    encode(encoder, TEXTS, store)
    assert encoded == []
    assert len(store) == len(TEXTS) + 2


# --- finding 10: unusable stores and memory="" -------------------------------------------------


def test_empty_folder_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="non-empty path"):
        cache.open_store("")
    with pytest.raises(ValueError, match="non-empty path"):
        DiskEmbeddingStore("")
    assert list(tmp_path.iterdir()) == []


def test_empty_memory_is_refused_by_the_estimator(tiny_model, tmp_path, monkeypatch):
    # Needs SentenceEmbedder._store to go through open_store.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="non-empty path"):
        SentenceEmbedder(tiny_model, device="cpu", memory="").fit().transform(["a cat"])
    assert list(tmp_path.iterdir()) == []


def test_memory_of_another_kind_is_refused():
    with pytest.raises(TypeError, match=r"joblib\.Memory or a DiskEmbeddingStore, got 3"):
        cache.open_store(3)


def test_garbage_file_gives_a_clear_error(encoder, tmp_path, encoded):
    store = DiskEmbeddingStore(tmp_path)
    store.path.write_bytes(b"not a database, " * 400)
    with pytest.raises(ValueError, match="cannot be used as an embedding store") as error:
        encode(encoder, TEXTS, store)
    assert str(store.path) in str(error.value)
    assert "Delete the file, or choose another folder" in str(error.value)
    assert not isinstance(error.value, sqlite3.Error)
    assert encoded == []


@pytest.mark.parametrize(
    "schema",
    [
        ["CREATE TABLE embeddings (id INTEGER PRIMARY KEY, payload TEXT)"],
        [_UNCHECKED_LAYOUT, "CREATE TABLE notes (body TEXT)"],
        ["CREATE TABLE customers (name TEXT)"],
    ],
    ids=["embeddings-with-other-columns", "extra-table", "other-table"],
)
def test_foreign_sqlite_file_is_refused_and_left_untouched(encoder, tmp_path, schema):
    store = DiskEmbeddingStore(tmp_path)
    with sqlite3.connect(store.path) as connection:
        for statement in schema:
            connection.execute(statement)
    connection.close()
    before = store.path.read_bytes()
    with pytest.raises(ValueError, match="another application") as error:
        encode(encoder, TEXTS, store)
    assert str(store.path) in str(error.value)
    assert store.path.read_bytes() == before


def test_store_of_a_newer_layout_is_refused(encoder, tmp_path):
    store = DiskEmbeddingStore(tmp_path)
    encode(encoder, TEXTS[:1], store)
    with sqlite3.connect(store.path) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(ValueError, match=r"layout 99.*upgrade skembed"):
        encode(encoder, TEXTS, store)


# --- finding 10: joblib.Memory, clear, size bound --------------------------------------------


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_joblib_memory_clear_removes_the_store(encoder, tmp_path, encoded, as_path):
    memory = joblib.Memory(tmp_path if as_path else str(tmp_path), verbose=0)
    store = cache.open_store(memory)
    encode(encoder, TEXTS, store)
    assert store.path.is_file()
    assert store.path.is_relative_to(memory.store_backend.location)
    encoded.clear()
    encode(encoder, TEXTS, store)
    assert encoded == []

    memory.clear(warn=False)

    assert not store.path.exists()
    encode(encoder, TEXTS, store)
    assert encoded == TEXTS


def test_joblib_memory_clear_empties_the_estimators_store(tiny_model, tmp_path, encoded):
    # Needs SentenceEmbedder._store to go through open_store.
    memory = joblib.Memory(tmp_path, verbose=0)
    embedder = SentenceEmbedder(tiny_model, device="cpu", memory=memory).fit()
    first = embedder.transform(TEXTS)
    memory.clear(warn=False)
    clear_cache()
    np.testing.assert_array_equal(embedder.transform(TEXTS), first)
    assert encoded == TEXTS + TEXTS


def test_joblib_memory_without_location_means_no_store():
    assert cache.open_store(joblib.Memory(None, verbose=0)) is None
    assert cache.open_store(None) is None


def test_store_clear_and_introspection(encoder, tmp_path, encoded):
    store = DiskEmbeddingStore(tmp_path)
    assert len(store) == 0
    encode(encoder, TEXTS, store)
    assert len(store) == len(TEXTS)
    assert store.nbytes >= len(TEXTS) * encoder.embedding_dimension * 4
    store.clear()
    assert len(store) == 0
    encoded.clear()
    encode(encoder, TEXTS, store)
    assert encoded == TEXTS


def test_store_size_is_bounded_oldest_rows_first(tmp_path):
    bound = 64 * 1024
    store = DiskEmbeddingStore(tmp_path, max_bytes=bound)
    dimension = 64
    for batch in range(30):
        texts = [f"text {batch} {i}" for i in range(20)]
        vectors = np.full((20, dimension), batch, dtype=np.float32)
        store.put("ns", texts, vectors, np.zeros(20, dtype=bool))
        assert store.nbytes <= bound
    assert 0 < len(store) < 600
    newest = [f"text 29 {i}" for i in range(20)]
    assert sorted(store.get("ns", newest, dimension)) == sorted(newest)
    assert store.get("ns", ["text 0 0"], dimension) == {}
    # clear() and eviction give pages back: the file does not keep its peak size.
    store.clear()
    with sqlite3.connect(store.path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert store.path.stat().st_size < bound


def test_bounded_store_as_estimator_memory(tiny_model, tmp_path, encoded):
    # Needs SentenceEmbedder._store to go through open_store (and "memory" to accept a store).
    store = DiskEmbeddingStore(tmp_path, max_bytes=1 << 20)
    embedder = SentenceEmbedder(tiny_model, device="cpu", memory=store).fit()
    first = embedder.transform(TEXTS)
    assert len(store) == len(TEXTS)
    twin = clone(embedder)
    assert twin.get_params()["memory"].max_bytes == 1 << 20
    clear_cache()
    np.testing.assert_array_equal(twin.fit().transform(TEXTS), first)
    assert encoded == TEXTS


def test_store_validates_its_arguments_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 0 or None, got -1"):
        DiskEmbeddingStore(tmp_path, max_bytes=-1)
    with pytest.raises(TypeError, match="str or path-like, got 5"):
        DiskEmbeddingStore(5)
    store = pickle.loads(pickle.dumps(DiskEmbeddingStore(tmp_path, max_bytes=1 << 20)))
    assert (store.path, store.max_bytes) == (tmp_path / DiskEmbeddingStore.FILENAME, 1 << 20)
    assert repr(store) == f"DiskEmbeddingStore({str(tmp_path)!r}, max_bytes=1048576)"
    assert not store.path.exists()  # nothing touches the disk before the first use


# --- finding 13: a store that cannot be written ----------------------------------------------


def _read_only_connections(monkeypatch) -> None:
    """Every connection SQLite opens refuses writes, as on a read-only file."""
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        connection.execute("PRAGMA query_only = ON")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)


def _full_disk(monkeypatch) -> None:
    """Every connection SQLite opens may not grow the file, as on a full disk."""
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {pages}")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [(_read_only_connections, "readonly database"), (_full_disk, "database or disk is full")],
    ids=["read-only", "disk-full"],
)
def test_unwritable_store_is_read_warns_once_and_returns_embeddings(
    encoder, tmp_path, encoded, monkeypatch, failure, reason
):
    more = [f"a dog plays in the garden {i}" for i in range(60)]
    reference = encoder.encode(TEXTS + more).embeddings
    store = DiskEmbeddingStore(tmp_path)
    encode(encoder, TEXTS, store)
    failure(monkeypatch)
    encoded.clear()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = encode(encoder, TEXTS + more[:30], store)
        again = encode(encoder, more, store)

    np.testing.assert_allclose(out, reference[:36], atol=1e-6)
    np.testing.assert_allclose(again, reference[6:], atol=1e-6)
    assert encoded == more[:30] + more  # the stored rows were read, nothing new was stored
    (message,) = store_warnings(caught, store)
    assert str(store.path) in message and reason in message


@pytest.mark.parametrize("opens", ["mode=ro", "immutable=1"])
def test_store_that_opens_only_read_only_is_still_read(
    encoder, reference, tmp_path, encoded, monkeypatch, opens
):
    store = DiskEmbeddingStore(tmp_path)
    encode(encoder, TEXTS[:3], store)
    real_connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        # A read-only folder: SQLite opens the file only in the way the test allows.
        if opens not in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    encoded.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = encode(encoder, TEXTS, store)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert encoded == TEXTS[3:]
    (message,) = store_warnings(caught, store)
    assert "unable to open database file" in message


def test_store_that_cannot_be_opened_at_all_warns_and_encodes(
    encoder, reference, tmp_path, encoded, monkeypatch
):
    store = DiskEmbeddingStore(tmp_path)

    def connect(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", connect)
    with pytest.warns(UserWarning, match="cannot be written"):
        out = encode(encoder, TEXTS, store)
    np.testing.assert_allclose(out, reference, atol=1e-6)
    assert encoded == TEXTS


def test_folder_that_cannot_be_created_is_an_error_before_encoding(encoder, tmp_path, encoded):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = DiskEmbeddingStore(blocker / "store")
    with pytest.raises(
        OSError, match=r"Cannot create the folder .* of the embedding store"
    ) as error:
        encode(encoder, TEXTS, store)
    assert str(blocker / "store") in str(error.value)
    assert encoded == []


# --- invariants that held before: first writer wins, concurrent writers stay consistent ------


def test_a_sound_row_is_not_replaced(tmp_path):
    store = DiskEmbeddingStore(tmp_path)
    store.put("ns", ["a"], np.ones((1, 4), dtype=np.float32), np.array([False]))
    store.put("ns", ["a"], np.zeros((1, 4), dtype=np.float32), np.array([True]))
    vector, truncated = store.get("ns", ["a"])["a"]
    np.testing.assert_array_equal(vector, np.ones(4))
    assert not truncated


def test_threads_writing_one_store_keep_it_consistent(tmp_path):
    texts = [f"text {i}" for i in range(200)]
    vectors = np.arange(200 * 8, dtype=np.float32).reshape(200, 8)
    errors = []

    def write(start: int) -> None:
        try:
            store = DiskEmbeddingStore(tmp_path)
            for first in range(start, 200, 40):
                part = slice(first, first + 60)
                store.put("ns", texts[part], vectors[part], np.zeros(len(texts[part]), bool))
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(start,)) for start in (0, 10, 20, 30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found = DiskEmbeddingStore(tmp_path).get("ns", texts)
    assert sorted(found) == sorted(texts)
    np.testing.assert_array_equal(np.stack([found[t][0] for t in texts]), vectors)
    with sqlite3.connect(tmp_path / DiskEmbeddingStore.FILENAME) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- finding 14: SKEMBED_CACHE_BYTES and counting bytes ---------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", DEFAULT_CACHE_BYTES),
        ("  ", DEFAULT_CACHE_BYTES),
        ("0", 0),
        ("1048576", 1048576),
        ("512MiB", 512 * 2**20),
        ("2GB", 2 * 10**9),
        (" 3 kib ", 3 * 1024),
    ],
)
def test_cache_bytes_variable_is_parsed(monkeypatch, value, expected):
    monkeypatch.setenv("SKEMBED_CACHE_BYTES", value)
    monkeypatch.setattr(cache._memory, "_PROCESS_CACHE", None)  # as in a fresh process
    assert cache_info()["max_bytes"] == expected


@pytest.mark.parametrize("value", ["-5", "1e9", "1.5GB", "lots", "10 parsecs", "\u0661\u0660"])
def test_bad_cache_bytes_variable_names_itself(monkeypatch, value):
    monkeypatch.setenv("SKEMBED_CACHE_BYTES", value)
    monkeypatch.setattr(cache._memory, "_PROCESS_CACHE", None)
    with pytest.raises(ValueError) as error:
        cache_info()
    message = str(error.value)
    assert f"SKEMBED_CACHE_BYTES={value!r}" in message
    assert "512MiB" in message  # says what is expected


@pytest.mark.slow
def test_bad_cache_bytes_variable_does_not_break_import():
    script = (
        "import skembed, skembed.cache\nprint('imported', flush=True)\nskembed.cache.cache_info()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "SKEMBED_CACHE_BYTES": "-5"},
        capture_output=True,
        text=True,
    )
    assert run.stdout == "imported\n"
    assert "ValueError: SKEMBED_CACHE_BYTES='-5' is not a size in bytes" in run.stderr


def _held_and_counted(texts: list[str], dimension: int) -> tuple[int, int]:
    """Memory a cache keeps alive for these texts (tracemalloc), and what it reports."""
    cache = EmbeddingCache(1 << 40)
    gc.collect()
    tracemalloc.start()
    try:
        owned = [text[:-1] + text[-1] for text in texts]  # fresh copies, traced
        cache.put("ns", owned, np.ones((len(owned), dimension), np.float32), np.zeros(len(owned)))
        del owned
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return held, cache.nbytes


def test_cache_counts_bytes_of_wide_characters():
    texts = ["".join(chr(0x4E00 + (i * 7 + j) % 20000) for j in range(100_000)) for i in range(150)]
    held, counted = _held_and_counted(texts, 384)
    assert held > 150 * 200_000  # two bytes per character
    assert counted == pytest.approx(held, rel=0.03)


def test_cache_counts_its_bookkeeping_for_short_texts():
    held, counted = _held_and_counted([f"a short text {i}" for i in range(20_000)], 32)
    assert counted == pytest.approx(held, rel=0.1)
