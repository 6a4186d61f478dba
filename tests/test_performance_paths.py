"""Precision, batching, chunking, OOM retry, several devices, and similarity at scale."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import METRICS, sentences

import skembed.encoder._encoder as encoder_module
from skembed import SentenceEmbedder, semantic_search, similarity
from skembed._device import resolve_devices, resolve_dtype
from skembed.cache import clear_cache
from skembed.encoder import Encoder, EncoderGroup, load_encoder
from skembed.encoder._batching import plan_batches

pytestmark = pytest.mark.usefixtures("fresh_cache")

CPU = torch.device("cpu")


# --- precision -------------------------------------------------------------------------------


def test_resolve_dtype():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype(torch.float16, CPU) == torch.float16
    with pytest.raises(ValueError, match="float64"):
        resolve_dtype("float64", CPU)


def test_bfloat16_is_close_to_float32_and_recorded(tiny_model):
    texts = sentences(20, varied=True)
    fp32 = SentenceEmbedder(tiny_model, device="cpu").fit()
    bf16 = SentenceEmbedder(tiny_model, device="cpu", dtype="bfloat16").fit()
    assert (fp32.dtype_, bf16.dtype_) == ("float32", "bfloat16")
    assert fp32._encoder is not bf16._encoder  # one model per precision
    a, b = fp32.transform(texts), bf16.transform(texts)
    assert b.dtype == np.float32
    assert not np.array_equal(a, b)  # really another precision, not a cache hit
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999  # as documented (measured: 0.99998 on this model)


def test_saving_a_half_precision_embedder_keeps_float32_weights(tiny_model, tmp_path):
    texts = sentences(5, varied=True)
    SentenceEmbedder(tiny_model, device="cpu", dtype="bfloat16").fit().save(tmp_path / "saved")
    reloaded = SentenceEmbedder(tmp_path / "saved", device="cpu").fit().transform(texts)
    original = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    np.testing.assert_allclose(reloaded, original, atol=1e-6)


def test_invalid_dtype_parameter(tiny_model):
    with pytest.raises(ValueError, match="dtype"):
        SentenceEmbedder(tiny_model, dtype="int4").fit()


# --- batching and chunking -------------------------------------------------------------------


def test_plan_batches_bounds_rows_and_tokens():
    lengths = np.array([5, 50, 3, 200, 7, 7, 9, 1, 120, 2])
    batches = plan_batches(lengths, max_rows=3, max_tokens=100)
    covered = np.concatenate(batches)
    assert sorted(covered.tolist()) == list(range(len(lengths)))
    assert [int(lengths[b].max()) for b in batches] == sorted(
        (int(lengths[b].max()) for b in batches), reverse=True
    )
    for rows in batches:
        assert len(rows) <= 3
        # A text longer than the budget rides alone; every other batch fits the budget.
        assert len(rows) == 1 or len(rows) * lengths[rows].max() <= 100


@pytest.mark.parametrize(("batch_size", "max_batch_tokens"), [(1, None), (5, None), (None, 40)])
def test_batch_bounds_do_not_change_results(tiny_model, batch_size, max_batch_tokens):
    texts = sentences(30, varied=True)
    encoder = load_encoder(tiny_model, CPU)
    expected = encoder.encode(texts).embeddings
    got = encoder.encode(texts, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    np.testing.assert_allclose(got.embeddings, expected, atol=1e-6)


def test_chunked_tokenization_keeps_order_and_truncation_flags(tiny_model, monkeypatch):
    texts = [*sentences(23, varied=True), "the cat " * 40]
    encoder = load_encoder(tiny_model, CPU)
    expected = encoder.encode(texts)
    monkeypatch.setattr(encoder_module, "_CHUNK_TEXTS", 4)
    chunked = encoder.encode(texts)
    np.testing.assert_allclose(chunked.embeddings, expected.embeddings, atol=1e-6)
    np.testing.assert_array_equal(chunked.truncated, expected.truncated)
    assert chunked.truncated[-1] and chunked.n_truncated == expected.n_truncated


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_chunks_are_tokenized_ahead_of_the_model(tiny_model, monkeypatch, depth):
    texts = [*sentences(37, varied=True), "the cat " * 40]
    encoder = load_encoder(tiny_model, CPU)
    expected = encoder.encode(texts)
    monkeypatch.setattr(encoder_module, "_CHUNK_TEXTS", 4)
    monkeypatch.setattr(Encoder, "prefetch", property(lambda self: depth))
    events = []

    class Recording(encoder_module.ThreadPoolExecutor):
        def submit(self, fn, start, *args):
            assert self._max_workers == depth
            events.append(("tokenize", start))
            return super().submit(fn, start, *args)

    run_chunk = Encoder._run_chunk

    def recording_run(self, prepared, *args):
        events.append(("run", prepared.start))
        return run_chunk(self, prepared, *args)

    monkeypatch.setattr(encoder_module, "ThreadPoolExecutor", Recording)
    monkeypatch.setattr(Encoder, "_run_chunk", recording_run)
    chunked = encoder.encode(texts)
    np.testing.assert_allclose(chunked.embeddings, expected.embeddings, atol=1e-6)
    np.testing.assert_array_equal(chunked.truncated, expected.truncated)
    chunks = len(encoder_module._chunk_bounds(len(texts), 4))
    runs = [i for i, (kind, _) in enumerate(events) if kind == "run"]
    assert len(runs) == chunks
    for index, position in enumerate(runs):
        # When chunk `index` runs, the `depth` chunks after it are being tokenized.
        handed_out = sum(kind == "tokenize" for kind, _ in events[:position])
        assert handed_out == min(chunks, index + 1 + depth)


def test_chunks_start_small_and_grow_to_the_cap():
    bounds = encoder_module._chunk_bounds(20_000, 16_384)
    assert bounds[0] == (0, 1024)
    assert [stop - start for start, stop in bounds] == [1024, 2048, 4096, 8192, 4640]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert encoder_module._chunk_bounds(0, 8) == []
    assert encoder_module._chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]


# --- out of memory ---------------------------------------------------------------------------


def test_oom_halves_the_batch_and_keeps_results(tiny_model, monkeypatch):
    texts = sentences(40, varied=True)
    encoder = load_encoder(tiny_model, CPU)
    expected = encoder.encode(texts, batch_size=16).embeddings
    real_forward = Encoder._forward
    seen = []

    def forward_with_small_memory(self, tensors, run):
        rows = len(tensors["input_ids"])
        seen.append(rows)
        if rows > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, tensors, run)

    monkeypatch.setattr(Encoder, "_forward", forward_with_small_memory)
    got = encoder.encode(texts, batch_size=16).embeddings
    assert max(seen) == 16 and any(rows <= 3 for rows in seen)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_oom_on_a_single_text_is_raised(tiny_model, monkeypatch):
    def always_oom(self, tensors, run):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(Encoder, "_forward", always_oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        load_encoder(tiny_model, CPU).encode(sentences(4, varied=True))


# --- several devices -------------------------------------------------------------------------


def test_device_list_spreads_work_and_matches_one_device(tiny_model):
    texts = sentences(25, varied=True)
    single = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    clear_cache()
    spread = SentenceEmbedder(tiny_model, device=["cpu", "cpu"]).fit()
    assert spread.device_ == ["cpu", "cpu"]
    assert isinstance(spread._encoder, EncoderGroup)
    np.testing.assert_allclose(spread.transform(texts), single, atol=1e-6)


def test_resolve_devices():
    assert resolve_devices(None) == [resolve_devices(None)[0]]
    assert resolve_devices(["cpu", torch.device("cpu")]) == [CPU, CPU]
    with pytest.raises(ValueError, match="empty"):
        resolve_devices([])


def test_resolve_devices_all_without_cuda(monkeypatch):
    # Whatever this machine has: "all" with no visible GPU names the problem.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(
        ValueError, match=r"^device='all' means every CUDA GPU, but none is visible here\.$"
    ):
        resolve_devices("all")


def test_device_list_merges_truncation_flags_of_every_device(tiny_model, monkeypatch):
    long_text = "the cat sits outside " * 20  # beyond max_seq_length=24
    texts = sentences(9)  # five words and a number: none is truncated
    for row in (1, 4, 8):
        texts[row] = f"{long_text} {row}"
    spread = SentenceEmbedder(tiny_model, device=["cpu", "cpu"]).fit()
    shares = []
    real_encode = Encoder.encode

    def spy(self, texts, *args, **kwargs):
        result = real_encode(self, texts, *args, **kwargs)
        shares.append((len(texts), result.n_truncated))
        return result

    monkeypatch.setattr(Encoder, "encode", spy)
    with pytest.warns(UserWarning, match=r"3 of 9 texts .* max_seq_length=24") as record:
        got = spread.transform(texts)
    assert len([w for w in record if "max_seq_length" in str(w.message)]) == 1
    # Both devices encoded a share and each truncated some of the long texts.
    assert len(shares) == 2 and sum(n for n, _ in shares) == 9, shares
    assert sum(t for _, t in shares) == 3 and all(t for _, t in shares), shares
    group = spread._encoder.encode(texts)
    np.testing.assert_array_equal(np.flatnonzero(group.truncated), [1, 4, 8])
    single = load_encoder(tiny_model, CPU).encode(texts)
    np.testing.assert_array_equal(group.truncated, single.truncated)
    np.testing.assert_allclose(got, single.embeddings, atol=1e-6)


# --- similarity at scale ---------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_semantic_search_matches_full_matrix(metric):
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(23, 16)).astype(np.float32)
    corpus = rng.normal(size=(500, 16)).astype(np.float32)
    scores, indices = semantic_search(queries, corpus, top_k=7, metric=metric, max_block_bytes=512)
    full = similarity(queries, corpus, metric)
    expected = np.argsort(-full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    t_scores, t_indices = semantic_search(torch.from_numpy(queries), corpus, top_k=7, metric=metric)
    assert isinstance(t_scores, torch.Tensor) and torch.equal(t_indices, torch.from_numpy(expected))


@pytest.mark.parametrize("metric", METRICS)
def test_semantic_search_one_dimensional_query_is_one_query(metric):
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(40, 8)).astype(np.float32)
    query = rng.normal(size=8).astype(np.float32)
    scores, indices = semantic_search(query, corpus, top_k=5, metric=metric)
    expected_scores, expected_indices = semantic_search(query[None, :], corpus, 5, metric)
    assert scores.shape == indices.shape == (1, 5)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)
    full = similarity(query, corpus, metric)[0]
    np.testing.assert_array_equal(indices[0], np.argsort(-full, kind="stable")[:5])
    # A 1-D query against a 1-D corpus: one query, one corpus row.
    one_score, one_index = semantic_search(query, corpus[3], top_k=1, metric=metric)
    assert one_index.tolist() == [[0]]
    np.testing.assert_allclose(one_score, [[full[3]]], rtol=1e-6)


def test_semantic_search_validates_arguments():
    corpus = np.ones((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="top_k=6"):
        semantic_search(corpus, corpus, top_k=6)
    with pytest.raises(ValueError, match="max_block_bytes"):
        semantic_search(corpus, corpus, top_k=3, max_block_bytes=8)
    with pytest.raises(ValueError, match="dimensions differ"):
        semantic_search(np.ones((1, 4)), corpus)


def test_semantic_search_on_200k_corpus_stays_within_block_budget(monkeypatch):
    import skembed._similarity as module

    largest = []
    real_kernel = module._matrix_kernel

    def spy(x, y, name, out):
        block = real_kernel(x, y, name, out)
        largest.append(block.numel() * block.element_size())
        return block

    monkeypatch.setattr(module, "_matrix_kernel", spy)
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((200_000, 384), dtype=np.float32)
    queries = corpus[[5, 150_000, 199_999]] + 0.01
    budget = 1 << 20  # 1 MiB: the 200k corpus takes several blocks
    _scores, indices = semantic_search(queries, corpus, top_k=3, max_block_bytes=budget)
    assert max(largest) <= budget and len(largest) > 1
    np.testing.assert_array_equal(indices[:, 0], [5, 150_000, 199_999])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "manhattan"])
def test_similarity_peak_memory_is_close_to_the_output(metric, load_benchmark):
    # Outputs of a few hundred MB: large enough that the allocator's fixed costs (a thread's
    # malloc arena is 64 MiB) stay well under the bound, as they do at 50k x 50k (1.02x).
    n = 9000 if metric == "manhattan" else 12000
    result = subprocess.run(
        [sys.executable, "-c", load_benchmark("similarity_memory").CHILD, str(n), metric],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    measured = json.loads(result.stdout)
    assert measured["extra"] < 1.5 * measured["output"], measured


def test_a_gpu_tokenizes_two_chunks_ahead_and_the_cpu_one():
    from types import SimpleNamespace

    ahead = Encoder.prefetch.fget
    assert ahead(SimpleNamespace(device=torch.device("cuda"))) == 2
    assert ahead(SimpleNamespace(device=CPU)) == 1
