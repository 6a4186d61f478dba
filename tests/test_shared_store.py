"""Processes that share a ``memory=`` store share their encodings by themselves (issue 25).

A process claims, in the store, the texts it is about to encode; another process that needs
them waits for their rows instead of encoding them again. A claim whose process died, or
whose lease lapsed, is taken over. The slow tests run ``GridSearchCV(n_jobs=2)`` and count the
encodings of every process, and kill a worker mid-search.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sentences

from skembed import cache
from skembed.cache import DiskEmbeddingStore, encode_cached, namespace_for, set_cache_limit
from skembed.encoder import Encoder, EncodeSettings

pytestmark = pytest.mark.usefixtures("fresh_cache")

TEXTS = [f"a dog runs in the park {i}" for i in range(8)]


@pytest.fixture(scope="module")
def reference(encoder) -> np.ndarray:
    return encoder.encode(TEXTS).embeddings


def _claims(store: DiskEmbeddingStore) -> list[tuple]:
    with sqlite3.connect(store.path) as connection:
        return connection.execute("SELECT owner, host, pid, expires FROM claims").fetchall()


def _set_claims(store: DiskEmbeddingStore, **columns) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with sqlite3.connect(store.path) as connection:
        connection.execute(f"UPDATE claims SET {assignments}", tuple(columns.values()))


def _encoding_pids(store: DiskEmbeddingStore) -> list[int]:
    """Processes that hold claims on texts the store lacks: between claiming and writing."""
    with sqlite3.connect(store.path) as connection:
        return [
            pid
            for (pid,) in connection.execute(
                "SELECT DISTINCT pid FROM claims c WHERE NOT EXISTS (SELECT 1 FROM embeddings e "
                "WHERE e.namespace = c.namespace AND e.text_sha256 = c.text_sha256)"
            )
        ]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_texts_another_owner_is_encoding_are_waited_for_not_encoded(
    encoder, reference, tmp_path, monkeypatch
):
    store = DiskEmbeddingStore(tmp_path)
    namespace = namespace_for(encoder, EncodeSettings())
    theirs = TEXTS[:3]
    # Another live owner (this process, another call) holds the first three texts.
    assert store.claim(namespace, theirs, "other") == ({}, theirs)
    encoding_started = threading.Event()
    seen: list[str] = []
    real_encode = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        seen.extend(texts)
        encoding_started.set()
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)

    def other_owner_writes() -> None:
        # Only once the waiting call has claimed and started encoding its own texts: it cannot
        # have found these rows before.
        encoding_started.wait(timeout=60)
        time.sleep(0.2)
        store.put(namespace, theirs, reference[:3], np.zeros(3, dtype=bool))
        store.release("other")

    writer = threading.Thread(target=other_owner_writes)
    writer.start()
    result = encode_cached(encoder, TEXTS, store=store)
    writer.join()
    assert seen == TEXTS[3:]
    np.testing.assert_allclose(result.embeddings, reference, atol=1e-6)
    assert _claims(store) == []


def test_a_claim_of_a_dead_process_is_taken_over(encoder, reference, tmp_path, encoded):
    store = DiskEmbeddingStore(tmp_path)
    namespace = namespace_for(encoder, EncodeSettings())
    store.claim(namespace, TEXTS[:3], "dead-owner")
    # A lease of an hour: only the process being gone frees the claim.
    _set_claims(store, pid=_dead_pid(), expires=time.time() + 3600)
    results = []
    worker = threading.Thread(
        target=lambda: results.append(encode_cached(encoder, TEXTS, store=store)), daemon=True
    )
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "still waiting for the claim of a process that is gone"
    (result,) = results
    assert sorted(encoded) == sorted(TEXTS)
    np.testing.assert_allclose(result.embeddings, reference, atol=1e-6)
    assert _claims(store) == []
    assert len(store) == len(TEXTS)


def test_a_claim_left_on_a_stored_text_is_dropped_by_the_next_claim(encoder, tmp_path):
    # Its owner wrote the rows and was killed before it dropped its claims (a live lease).
    store = DiskEmbeddingStore(tmp_path)
    namespace = namespace_for(encoder, EncodeSettings())
    store.claim(namespace, TEXTS[:3], "killed-after-writing")
    result = encoder.encode(TEXTS[:3])
    store.put(namespace, TEXTS[:3], result.embeddings, result.truncated)
    found, mine = store.claim(namespace, TEXTS, "next-owner", encoder.embedding_dimension)
    assert sorted(found) == sorted(TEXTS[:3]) and sorted(mine) == sorted(TEXTS[3:])
    assert {owner for owner, *_ in _claims(store)} == {"next-owner"}
    assert len(_claims(store)) == len(TEXTS) - 3


def test_a_lapsed_claim_of_another_host_is_taken_over(encoder, reference, tmp_path, encoded):
    store = DiskEmbeddingStore(tmp_path)
    namespace = namespace_for(encoder, EncodeSettings())
    store.claim(namespace, TEXTS[:3], "elsewhere")
    # A process on another host cannot be seen: its claim holds until the lease lapses.
    _set_claims(store, host="another-host", expires=time.time() + 0.5)
    result = encode_cached(encoder, TEXTS, store=store)
    assert sorted(encoded) == sorted(TEXTS)
    np.testing.assert_allclose(result.embeddings, reference, atol=1e-6)


def test_a_live_claim_is_renewed_while_its_owner_encodes(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(cache._store, "CLAIM_LEASE_SECONDS", 0.4)
    store = DiskEmbeddingStore(tmp_path)
    leases: list[float] = []
    real_encode = Encoder.encode

    def slow(self, texts, *args, **kwargs):
        # Longer than the lease: only renewals keep the claims live.
        for _ in range(6):
            time.sleep(0.2)
            leases.append(max(expires for *_, expires in _claims(store)) - time.time())
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", slow)
    encode_cached(encoder, TEXTS, store=store)
    assert min(leases) > 0, leases
    assert _claims(store) == []


def test_claims_are_dropped_when_encoding_fails(encoder, tmp_path, monkeypatch):
    store = DiskEmbeddingStore(tmp_path)

    def broken(self, texts, *args, **kwargs):
        assert len(_claims(store)) == len(TEXTS)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Encoder, "encode", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        encode_cached(encoder, TEXTS, store=store)
    # Nobody waits for a lease to lapse: the texts are free at once.
    assert _claims(store) == []
    assert len(store) == 0


def test_threads_sharing_a_store_encode_each_text_once(encoder, tmp_path, encoded):
    set_cache_limit(0)  # only the store is shared between the threads
    texts = sentences(300, 3)
    parts = [texts[:200], texts[100:], texts[50:250], texts]
    store = DiskEmbeddingStore(tmp_path)
    results: list = [None] * len(parts)
    barrier = threading.Barrier(len(parts))

    def run(i: int) -> None:
        barrier.wait(timeout=60)
        results[i] = encode_cached(encoder, parts[i], store=store).embeddings

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(encoded) == sorted(texts)
    expected = encoder.encode(texts).embeddings
    row = {text: i for i, text in enumerate(texts)}
    for part, result in zip(parts, results, strict=True):
        np.testing.assert_allclose(result, expected[[row[t] for t in part]], atol=1e-6)


# The search of the slow tests, run in a fresh process with a fresh loky pool. It prints the
# work counts of the parent and of each pool process (all held at one barrier, so each
# answers once).
_SEARCH = """
import json, multiprocessing, sys
import numpy as np, pandas as pd
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from skembed import PairedSimilarity, SentenceEmbedder
from skembed.encoder import work_counts

def counts(barrier):
    barrier.wait(timeout=300)
    return work_counts()

if __name__ == "__main__":
    model, store, n_jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    pairs = pd.read_json(sys.argv[4])
    embedder = SentenceEmbedder(model, device="cpu", memory=store)
    search = GridSearchCV(
        Pipeline([("sim", PairedSimilarity(embedder)), ("clf", LogisticRegression())]),
        {"sim__embedder__similarity_fn_name": ["cosine", "dot", "euclidean", "manhattan"]},
        cv=3,
        n_jobs=n_jobs,
    ).fit(pairs[["a", "b"]], pairs["label"])
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(n_jobs)
        workers = Parallel(n_jobs=n_jobs)(delayed(counts)(barrier) for _ in range(n_jobs))
    print(json.dumps({
        "parent": work_counts(),
        "workers": workers,
        "scores": search.cv_results_["mean_test_score"].tolist(),
    }))
"""


def _pairs_file(tmp_path: Path, n: int) -> tuple[Path, int]:
    import pandas as pd

    a, b = sentences(n, 11, varied=True), sentences(n, 12, varied=True)
    # Some sentences in both columns and some repeated: unique texts < 2 n.
    b[: n // 10] = a[-(n // 10) :]
    pairs = pd.DataFrame({"a": a, "b": b, "label": np.arange(n) % 2})
    path = tmp_path / "pairs.json"
    pairs.to_json(path)
    return path, len(set(a) | set(b))


def _search(tmp_path: Path, model: Path, store: Path, n_jobs: int, pairs: Path, **options):
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(_SEARCH))
    return subprocess.Popen(
        [sys.executable, str(script), str(model), str(store), str(n_jobs), str(pairs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        **options,
    )


@pytest.mark.slow
def test_grid_search_n_jobs_2_encodes_each_text_once_in_all_processes(tiny_model, tmp_path):
    pairs, n_unique = _pairs_file(tmp_path, 600)
    process = _search(tmp_path, tiny_model, tmp_path / "store", 2, pairs)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-4000:]
    counts = json.loads(out.splitlines()[-1])
    assert len(counts["workers"]) == 2
    worker_encoded = [c["texts_encoded"] for c in counts["workers"]]
    # No pre-fill: the workers encode, each text once in all; the parent's refit reads them.
    assert sum(worker_encoded) + counts["parent"]["texts_encoded"] == n_unique, counts
    assert all(c["models_loaded"] == 1 for c in counts["workers"]), counts
    assert counts["parent"]["texts_encoded"] == 0, counts
    # The same scores as one process with no store at all.
    alone = _search(tmp_path, tiny_model, tmp_path / "other-store", 1, pairs)
    out_alone, err_alone = alone.communicate(timeout=600)
    assert alone.returncode == 0, err_alone[-4000:]
    np.testing.assert_allclose(
        counts["scores"], json.loads(out_alone.splitlines()[-1])["scores"], atol=1e-12
    )


def _trusted_rows(store: DiskEmbeddingStore) -> tuple[int, dict[bytes, np.ndarray]]:
    """All rows and those that pass every check, after SQLite's own integrity check."""
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = connection.execute(
            "SELECT namespace, text_sha256, truncated, vector, checksum FROM embeddings"
        ).fetchall()
    trusted = {}
    for namespace, digest, cut, vector, checksum in rows:
        row = cache._store._trusted_vector(namespace, digest, cut, vector, checksum, None)
        if row is not None:
            trusted[digest] = row
    return len(rows), trusted


@pytest.mark.slow
def test_killing_a_worker_mid_search_leaves_the_store_consistent(tiny_model, tmp_path):
    import hashlib

    from skembed import SentenceEmbedder

    pairs, n_unique = _pairs_file(tmp_path, 3000)
    store = DiskEmbeddingStore(tmp_path / "store")
    process = _search(tmp_path, tiny_model, store.directory, 2, pairs)
    victim = None
    try:
        # A worker that holds claims is between claiming and writing: kill it there, once
        # the other one has written rows.
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline and process.poll() is None:
            if store.path.exists():
                try:
                    held = [pid for pid in _encoding_pids(store) if pid != process.pid]
                    stored = len(store)
                except sqlite3.OperationalError:  # no claims table yet, or locked
                    held, stored = [], 0
                if held and stored:
                    victim = held[0]
                    os.kill(victim, signal.SIGKILL)
            time.sleep(0.005)
        assert victim is not None, "no worker was seen holding a claim"
        _, err = process.communicate(timeout=300)
        assert process.returncode != 0 and "TerminatedWorkerError" in err, err[-4000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    n_rows, trusted = _trusted_rows(store)
    # The other worker may have taken the killed one's claims over and stored everything.
    assert 0 < n_rows == len(trusted) <= n_unique
    # Every row served holds the embedding of its text.
    import pandas as pd

    frame = pd.read_json(pairs)
    texts = list(dict.fromkeys([*frame["a"], *frame["b"]]))
    expected = SentenceEmbedder(tiny_model, device="cpu").fit_transform(texts)
    by_digest = {hashlib.sha256(t.encode()).digest(): i for i, t in enumerate(texts)}
    stored = [by_digest[digest] for digest in trusted]
    np.testing.assert_allclose(np.stack(list(trusted.values())), expected[stored], atol=1e-6)
    # The killed worker's claims are taken over at once (its process is gone): the search
    # run again on the store completes, encodes only what is not stored, and frees every claim.
    again = _search(tmp_path, tiny_model, store.directory, 2, pairs)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-4000:]
    counts = json.loads(out.splitlines()[-1])
    encoded = counts["parent"]["texts_encoded"] + sum(c["texts_encoded"] for c in counts["workers"])
    assert encoded == n_unique - len(trusted), counts
    assert _claims(store) == []
    assert len(store) == n_unique
