"""Dataframes, ColumnTransformer, PairedSimilarity, the embedding cache, missing texts."""

from __future__ import annotations

import pickle
import sqlite3
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import METRICS, sentences
from sklearn.base import clone
from sklearn.compose import ColumnTransformer, make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skembed import PairedSimilarity, SentenceEmbedder
from skembed.cache import (
    DiskEmbeddingStore,
    cache_info,
    clear_cache,
    open_store,
    set_cache_limit,
)
from skembed.encoder import Encoder

pytestmark = pytest.mark.usefixtures("fresh_cache")


@pytest.fixture
def count_encoded(monkeypatch):
    """Count the texts that reach the model (cache misses)."""
    counter = {"texts": 0, "calls": 0}
    real_encode = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        counter["texts"] += len(texts)
        counter["calls"] += 1
        return real_encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", spy)
    return counter


# --- dataframes -------------------------------------------------------------------------


def test_pandas_output_keeps_series_index_and_names_columns(tiny_model):
    series = pd.Series(sentences(20), index=range(100, 120), name="text")
    out = SentenceEmbedder(tiny_model, device="cpu").set_output(transform="pandas")
    frame = out.fit_transform(series)
    assert frame.shape == (20, 32)
    assert list(frame.index) == list(range(100, 120))
    assert frame.columns[0] == "text_0" and frame.columns[-1] == "text_31"


def test_pandas_output_from_frame_and_unnamed_input(tiny_model):
    frame = pd.DataFrame({"review": sentences(5)}, index=list("abcde"))
    embedder = SentenceEmbedder(tiny_model, device="cpu").set_output(transform="pandas")
    out = embedder.fit_transform(frame)
    assert list(out.index) == list("abcde") and out.columns[0] == "review_0"
    unnamed = embedder.fit_transform(sentences(3))
    assert unnamed.columns[0] == "sentenceembedder0"
    assert not hasattr(embedder, "feature_names_in_")


def test_polars_output(tiny_model):
    pl = pytest.importorskip("polars")
    embedder = SentenceEmbedder(tiny_model, device="cpu").set_output(transform="polars")
    out = embedder.fit_transform(pl.DataFrame({"text": sentences(4)}))
    assert isinstance(out, pl.DataFrame) and out.shape == (4, 32)
    assert out.columns[0] == "text_0"


@pytest.mark.parametrize("column", ["text", ["text"]])
def test_column_transformer_on_pandas(tiny_model, column):
    frame = pd.DataFrame({"text": sentences(6), "x": np.arange(6.0)})
    transformer = ColumnTransformer(
        [("emb", SentenceEmbedder(tiny_model, device="cpu"), column), ("num", "passthrough", ["x"])]
    )
    out = transformer.fit_transform(frame)
    assert out.shape == (6, 33)
    np.testing.assert_array_equal(out[:, -1], frame["x"])
    names = transformer.get_feature_names_out()
    assert names[0] == "emb__text_0" and names[-1] == "num__x"


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_column_transformer_on_polars_input(tiny_model, output):
    pl = pytest.importorskip("polars")
    texts = sentences(6)
    frame = pl.DataFrame({"text": texts, "x": np.arange(6.0)})
    transformer = make_column_transformer(
        (SentenceEmbedder(tiny_model, device="cpu"), "text"), ("passthrough", ["x"])
    ).set_output(transform=output)
    out = transformer.fit_transform(frame)
    assert isinstance(out, pd.DataFrame if output == "pandas" else pl.DataFrame)
    assert out.shape == (6, 33)
    names = ["sentenceembedder__text_0", "sentenceembedder__text_31", "passthrough__x"]
    assert [out.columns[0], out.columns[31], out.columns[-1]] == names
    values = out.to_numpy()
    expected = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    np.testing.assert_allclose(values[:, :32], expected, atol=1e-6)
    np.testing.assert_array_equal(values[:, 32], np.arange(6.0))


# --- PairedSimilarity ------------------------------------------------------------------------


def test_pair_similarity_transform_and_names(tiny_model):
    embedder = SentenceEmbedder(tiny_model, device="cpu", similarity_fn_name="manhattan")
    pairs = pd.DataFrame({"a": sentences(5), "b": sentences(5, seed=1)})
    sim = PairedSimilarity(embedder).fit(pairs)
    out = sim.transform(pairs)
    assert out.shape == (5, 1) and out.dtype == np.float32
    a, b = sim.embedder_.transform(pairs["a"]), sim.embedder_.transform(pairs["b"])
    np.testing.assert_allclose(out[:, 0], -np.abs(a - b).sum(axis=1), rtol=1e-5)
    assert list(sim.get_feature_names_out()) == ["similarity"]
    assert embedder.__dict__.get("n_features_out_") is None  # the parameter is not fitted
    framed = sim.set_output(transform="pandas").transform(pairs)
    assert list(framed.columns) == ["similarity"]


def test_pair_similarity_refuses_single_texts(tiny_model):
    with pytest.raises(ValueError, match="text pairs"):
        PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu")).fit(sentences(3))


def test_pair_similarity_default_embedder_is_all_minilm():
    sim = PairedSimilarity().fit([("a", "b")])
    assert sim.embedder_.n_features_out_ == 384


def paraphrase_data(n: int = 60):
    first = sentences(n)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, n)
    # Positives repeat the sentence with one extra word; negatives pair unrelated sentences.
    second = [
        f"{s} new" if label else other
        for s, label, other in zip(first, labels, sentences(n, seed=2), strict=True)
    ]
    return pd.DataFrame({"s1": first, "s2": second}), labels


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_grid_search_over_nested_metric(tiny_model, n_jobs):
    pairs, labels = paraphrase_data()
    search = GridSearchCV(
        Pipeline(
            [
                ("sim", PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu"))),
                ("clf", LogisticRegression()),
            ]
        ),
        {"sim__embedder__similarity_fn_name": METRICS},
        cv=3,
        n_jobs=n_jobs,
    ).fit(pairs, labels)
    assert [p["sim__embedder__similarity_fn_name"] for p in search.cv_results_["params"]] == METRICS
    assert search.best_score_ > 0.6


def test_grid_search_encodes_each_text_once(tiny_model, count_encoded):
    pairs, labels = paraphrase_data()
    unique = set(pairs["s1"]) | set(pairs["s2"])
    GridSearchCV(
        Pipeline(
            [
                ("sim", PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu"))),
                ("clf", LogisticRegression()),
            ]
        ),
        {"sim__embedder__similarity_fn_name": METRICS},
        cv=3,
    ).fit(pairs, labels)
    assert count_encoded["texts"] == len(unique)


def test_small_pickles_for_parallel_workers(tiny_model):
    pipeline = Pipeline([("sim", PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu")))])
    pipeline.fit([("a cat", "a dog")])
    # The fitted embedder inside travels as parameters and a fingerprint, not weights.
    assert len(pickle.dumps(pipeline)) < 20_000


# --- the embedding cache -------------------------------------------------------------------


def test_duplicates_in_a_call_are_encoded_once(tiny_model, count_encoded):
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    out = embedder.transform(["a cat", "a dog", "a cat", "a cat"])
    assert count_encoded["texts"] == 2
    np.testing.assert_array_equal(out[0], out[2])


def test_cache_survives_clone_and_is_keyed_by_settings(tiny_model, count_encoded):
    texts = sentences(8)
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    first = embedder.transform(texts)
    again = clone(embedder).fit().transform(texts)
    assert count_encoded["texts"] == 8
    np.testing.assert_array_equal(first, again)
    # Every setting that changes an embedding gets entries of its own.
    for params in ({"max_seq_length": 6}, {"prompt": "query: "}, {"normalize_embeddings": True}):
        count_encoded["texts"] = 0
        other = clone(embedder).set_params(**params).fit().transform(texts)
        assert count_encoded["texts"] == 8, params
        assert not np.array_equal(other, first), params


def test_cached_result_equals_fresh_result(tiny_model):
    texts = sentences(10)
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    cached = embedder.transform(texts)
    clear_cache()
    np.testing.assert_array_equal(embedder.transform(texts), cached)
    cached[0, 0] = 123.0  # callers own their arrays: the cache keeps its own copy
    assert embedder.transform(texts)[0, 0] != 123.0


def test_cached_rows_from_many_blocks_in_any_order_equal_fresh_ones(tiny_model, count_encoded):
    # Long runs of consecutive rows are copied as slices, scattered rows gathered: every mix
    # of blocks, orders, repeats and new texts must give the rows a fresh encoding gives.
    texts = sentences(300)
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    for start in range(0, 200, 50):  # four blocks of 50
        embedder.transform(texts[start : start + 50])
    rng = np.random.default_rng(0)
    scattered = [texts[i] for i in rng.permutation(200)]
    runs = texts[120:200] + texts[0:70] + texts[150:160] + texts[5:6] + texts[70:120]
    mixed = runs[:60] + texts[200:300] + scattered[:40] + texts[200:210] + runs[60:]
    count_encoded["texts"] = 0
    cached = [embedder.transform(order) for order in (scattered, runs, mixed)]
    assert count_encoded["texts"] == 100  # only the new texts of `mixed`, each once
    # Fresh encodings batch the texts differently, which moves the last float bits only.
    clear_cache()
    for order, result in zip((scattered, runs, mixed), cached, strict=True):
        np.testing.assert_allclose(result, embedder.transform(order), rtol=0, atol=1e-6)
        clear_cache()


def test_cache_memory_is_bounded_and_evicts_least_recently_used_blocks(tiny_model, count_encoded):
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    texts = sentences(50)
    embedder.transform(texts[:5])  # one block of five embeddings
    block = cache_info()["nbytes"]
    set_cache_limit(3 * block + block // 2)  # room for three such blocks
    for start in range(0, 50, 5):
        embedder.transform(texts[start : start + 5])
    info = cache_info()
    assert 10 <= info["entries"] <= 15 and info["nbytes"] <= info["max_bytes"]
    count_encoded["texts"] = 0
    embedder.transform(texts[45:])  # the last block is still cached...
    assert count_encoded["texts"] == 0
    embedder.transform(texts[:5])  # ...the first was evicted
    assert count_encoded["texts"] == 5
    set_cache_limit(block // 2)  # a block larger than the whole bound is not kept
    assert cache_info()["entries"] == 0
    embedder.transform(texts[:5])
    assert cache_info()["entries"] == 0
    set_cache_limit(0)
    count_encoded["texts"] = 0
    embedder.transform(["a cat"])
    embedder.transform(["a cat"])
    assert count_encoded["texts"] == 2  # a zero limit turns the cache off


def test_negative_cache_limit_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        set_cache_limit(-1)


def test_persistent_store_across_processes(tiny_model, tmp_path, count_encoded):
    texts = sentences(6)
    script = textwrap.dedent(
        f"""
        from skembed import SentenceEmbedder
        SentenceEmbedder({str(tiny_model)!r}, device="cpu", memory={str(tmp_path)!r}).fit() \\
            .transform({texts!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    embedder = SentenceEmbedder(tiny_model, device="cpu", memory=str(tmp_path)).fit()
    from_disk = embedder.transform(texts)
    assert count_encoded["texts"] == 0
    clear_cache()
    fresh = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    np.testing.assert_allclose(from_disk, fresh, atol=1e-6)


def test_joblib_memory_is_accepted(tiny_model, tmp_path, count_encoded):
    memory = joblib.Memory(tmp_path, verbose=0)
    SentenceEmbedder(tiny_model, device="cpu", memory=memory).fit().transform(["a cat"])
    clear_cache()
    SentenceEmbedder(tiny_model, device="cpu", memory=memory).fit().transform(["a cat"])
    assert count_encoded["texts"] == 1
    # The store lives inside the Memory's own cache folder, so Memory.clear() removes it.
    assert open_store(memory).path.is_file()


def test_interrupted_write_leaves_no_entry(tmp_path):
    store = DiskEmbeddingStore(tmp_path)
    vectors = np.ones((3, 4), dtype=np.float32)

    class Exploding:
        """A truncated-flag sequence that fails after the first rows are prepared."""

        def __iter__(self):
            yield False
            yield False
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put("ns", ["a", "b", "c"], vectors, Exploding())
    assert store.get("ns", ["a", "b", "c"]) == {}
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store.put("ns", ["a"], vectors[:1], np.array([True]))
    vector, truncated = store.get("ns", ["a"])["a"]
    np.testing.assert_array_equal(vector, vectors[0])
    assert truncated


# --- missing texts ---------------------------------------------------------------------------


def test_missing_policy(tiny_model):
    texts = pd.Series(["a cat", None, "a dog", np.nan])
    with pytest.raises(ValueError, match="position 1"):
        SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    empty = SentenceEmbedder(tiny_model, device="cpu", missing="empty").fit(texts)
    out = empty.transform(texts)
    np.testing.assert_array_equal(out[1], empty.transform([""])[0])
    zero = SentenceEmbedder(tiny_model, device="cpu", missing="zero").fit(texts).transform(texts)
    assert not zero[1].any() and not zero[3].any()
    np.testing.assert_array_equal(zero[[0, 2]], out[[0, 2]])


def test_missing_policy_in_pairs(tiny_model):
    pairs = pd.DataFrame({"a": ["a cat", None], "b": ["a dog", "a man"]})
    sim = PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu", missing="zero")).fit(pairs)
    assert sim.transform(pairs)[1, 0] == 0.0  # cosine with a zero vector
    with pytest.raises(ValueError, match=r"first column.*position 1"):
        PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu")).fit(pairs)


@pytest.mark.parametrize(
    "texts",
    [
        sentences(6, seed=5),  # all new: the cache keeps the encoder's own block
        sentences(6, seed=5) + sentences(2, seed=5),  # repeats: the output is a gather
    ],
)
def test_writing_to_the_output_never_changes_what_the_cache_serves(tiny_model, texts):
    embedder = SentenceEmbedder(tiny_model, device="cpu").fit()
    first = embedder.transform(texts)
    expected = first.copy()
    assert first.flags.writeable
    first[:] = 7.0  # the caller owns its output
    np.testing.assert_array_equal(embedder.transform(texts), expected)
    # A cached and a new text together: the gathered output is the caller's too.
    mixed = embedder.transform([texts[0], "a text not seen before"])
    mixed[:] = 7.0
    np.testing.assert_array_equal(embedder.transform(texts[:1]), expected[:1])
