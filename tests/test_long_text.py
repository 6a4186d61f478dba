"""Long texts: windows (long_text="chunk") against the reference, what was cut, window search."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import sentences
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from skembed import PairedSimilarity, SentenceEmbedder, TruncationWarning, semantic_search

pytestmark = pytest.mark.usefixtures("fresh_cache")

PROMPT = "query: "


def reference_windows(tokenizer, text, prompt, window, overlap):
    """The windows of ``text`` as token ids, cut here from the tokenizer's own output.

    Returns the windows and the text's tokens each holds, and the prompt length (the
    [CLS] and prompt tokens) that the reference's pooling leaves out.
    """
    ids = tokenizer(prompt + text, truncation=False, verbose=False)["input_ids"]
    head = len(tokenizer(prompt)["input_ids"]) - 1 if prompt else 1  # [CLS] + prompt
    if len(ids) <= window:
        return [ids], [len(ids) - head - 1], head
    room = window - head - 1
    body, out, tokens = ids[head:-1], [], []
    for start in range(0, len(body), room - overlap):
        span = body[start : start + room]
        out.append(ids[:head] + span + ids[-1:])
        tokens.append(len(span))
        if start + room >= len(body):
            break
    return out, tokens, head


def reference_embeddings(model, windows, prompt_length):
    """The reference's forward pass on each window, given as token ids."""
    rows = []
    with torch.no_grad():
        for ids in windows:
            features = {
                "input_ids": torch.tensor([ids]),
                "attention_mask": torch.ones(1, len(ids), dtype=torch.int64),
                "token_type_ids": torch.zeros(1, len(ids), dtype=torch.int64),
                "prompt_length": prompt_length,
            }
            rows.append(model.forward(features)["sentence_embedding"][0].numpy())
    return np.array(rows)


def long_texts(n, seed=0):
    """Texts of 3 to 90 words of the tiny vocabulary (most longer than a 24-token window)."""
    rng = np.random.default_rng(seed)
    words = "the cat dog sits plays garden man woman tv guitar new".split()
    return [" ".join(rng.choice(words, rng.integers(3, 90))) for _ in range(n)]


@pytest.fixture(scope="module")
def prompt_model(make_tiny_model):
    """A tiny model whose pooling leaves the prompt out, as some models' do."""
    return make_tiny_model(legacy_pooling_config=False, include_prompt=False, normalize=True)


def check_against_reference(folder, texts, prompt, window, overlap):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu")
    tokenizer = reference.tokenizer
    embedder = SentenceEmbedder(
        folder,
        device="cpu",
        prompt=prompt,
        long_text="chunk",
        chunk_tokens=window,
        chunk_overlap=overlap,
    ).fit()
    got = embedder.transform(texts)
    windows_got, text_index = embedder.transform_chunks(texts)
    position = 0
    for i, text in enumerate(texts):
        windows, tokens, head = reference_windows(tokenizer, text, prompt or "", window, overlap)
        rows = reference_embeddings(reference, windows, head if prompt else 0)
        expected = (rows * np.array(tokens, dtype=np.float64)[:, None]).sum(0) / sum(tokens)
        np.testing.assert_allclose(got[i], expected, atol=1e-5, err_msg=f"text {i}")
        mine = windows_got[text_index == i]
        np.testing.assert_allclose(mine, rows, atol=1e-5, err_msg=f"windows of text {i}")
        position += len(windows)
    assert position == len(windows_got)


@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize("overlap", [0, 5])
def test_chunk_mean_is_the_token_weighted_mean_of_the_reference_windows(
    prompt_model, prompt, overlap
):
    texts = long_texts(12)
    assert max(len(t.split()) for t in texts) > 3 * 24  # several windows each
    check_against_reference(prompt_model, texts, prompt, 24, overlap)


@pytest.mark.integration
@pytest.mark.parametrize("prompt", [None, PROMPT])
@pytest.mark.parametrize("overlap", [0, 32])
def test_chunk_mean_matches_the_reference_on_the_real_model(real_model, prompt, overlap):
    from skembed.datasets import load_stsb

    frame = load_stsb("test")
    sentences_ = list(frame["sentence1"][:400])
    texts = [" ".join(sentences_[i : i + 50]) for i in range(0, 400, 50)]  # ~600-900 tokens
    texts.append("A short one.")
    check_against_reference(real_model, texts, prompt, 256, overlap)


@pytest.mark.parametrize("pooling", ["mean", "max", "first"])
@pytest.mark.parametrize("options", [{}, {"prompt": PROMPT, "normalize_embeddings": True}])
def test_a_text_that_fits_gets_the_same_embedding_under_truncate_and_chunk(
    prompt_model, pooling, options
):
    # 1 to 29 words: most fit in 24 tokens, some do not; and some fill the window exactly.
    texts = sentences(40, varied=True) + [" ".join(["cat"] * n) for n in range(18, 24)]
    params = dict(device="cpu", **options)
    truncate = SentenceEmbedder(prompt_model, **params).fit()
    chunk = SentenceEmbedder(prompt_model, long_text="chunk", chunk_pooling=pooling, **params)
    counts = truncate.count_tokens(texts)
    fits = counts <= 24
    assert fits.sum() >= 10 and (~fits).sum() >= 5 and (counts == 24).any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        expected = truncate.transform(texts)
    got = chunk.fit().transform(texts)
    np.testing.assert_array_equal(got[fits], expected[fits])
    assert not np.allclose(got[~fits], expected[~fits]) or pooling == "first"


def test_first_and_max_combine_the_windows(tiny_model):
    texts = long_texts(6, seed=1)
    first = SentenceEmbedder(tiny_model, device="cpu", long_text="chunk", chunk_pooling="first")
    most = clone(first).set_params(chunk_pooling="max").fit()
    windows, text_index = most.transform_chunks(texts)
    starts = np.searchsorted(text_index, np.arange(len(texts)))
    np.testing.assert_array_equal(first.fit().transform(texts), windows[starts])
    np.testing.assert_allclose(
        most.transform(texts), np.maximum.reduceat(windows, starts, axis=0), rtol=0, atol=0
    )
    with pytest.warns(TruncationWarning):
        truncated = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    np.testing.assert_array_equal(first.transform(texts), truncated)


def test_windows_of_all_texts_share_batches(tiny_model, monkeypatch):
    from skembed.encoder import Encoder

    batches = []
    real = Encoder._forward

    def spy(self, tensors, run):
        batches.append(tensors["input_ids"].shape[0])
        return real(self, tensors, run)

    monkeypatch.setattr(Encoder, "_forward", spy)
    texts = long_texts(30, seed=2)
    embedder = SentenceEmbedder(
        tiny_model, device="cpu", long_text="chunk", max_batch_tokens=100_000
    ).fit()
    embedder.transform(texts)
    n_windows = len(embedder.transform_chunks(texts)[1])
    assert n_windows > 2 * len(texts)
    assert batches[0] == n_windows  # one batch holds every window of every text


def test_the_policy_is_part_of_the_cache_key(tiny_model, encoded):
    texts = long_texts(5, seed=3)
    base = SentenceEmbedder(tiny_model, device="cpu")
    with pytest.warns(TruncationWarning):
        base.fit().transform(texts)
    assert len(encoded) == 5
    variants = [
        {"long_text": "chunk"},
        {"long_text": "chunk", "chunk_overlap": 4},
        {"long_text": "chunk", "chunk_tokens": 16},
        {"long_text": "chunk", "chunk_pooling": "max"},
    ]
    results = []
    for params in variants:
        results.append(clone(base).set_params(**params).fit().transform(texts))
        results.append(clone(base).set_params(**params).fit().transform(texts))  # from the cache
    assert len(encoded) == 5 + 5 * len(variants)
    for a, b in zip(results[::2], results[1::2], strict=True):
        np.testing.assert_array_equal(a, b)
    # Chunk parameters mean nothing when truncating: the truncated rows are reused.
    with pytest.warns(TruncationWarning):
        clone(base).set_params(chunk_overlap=3).fit().transform(texts)
    assert len(encoded) == 5 + 5 * len(variants)


def test_grid_search_and_paired_similarity_take_the_policy(tiny_model):
    texts = long_texts(12, seed=4)
    pairs = list(zip(texts[:6], texts[6:], strict=True))
    gold = np.linspace(0, 5, 6)
    search = GridSearchCV(
        SentenceEmbedder(tiny_model, device="cpu"),
        {"long_text": ["truncate", "chunk"], "chunk_pooling": ["mean", "max"]},
        cv=[(np.arange(6), np.arange(6))],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        search.fit(pairs, gold)
    assert len(search.cv_results_["params"]) == 4
    paired = PairedSimilarity(SentenceEmbedder(tiny_model, device="cpu", long_text="chunk"))
    assert paired.get_params()["embedder__long_text"] == "chunk"
    scores = paired.fit(pairs).transform(pairs)
    chunked = SentenceEmbedder(tiny_model, device="cpu", long_text="chunk").fit()
    np.testing.assert_allclose(scores[:, 0], chunked.similarity_pairwise(pairs), atol=1e-6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"long_text": "split"}, "long_text"),
        ({"chunk_pooling": "median"}, "chunk_pooling"),
        ({"chunk_overlap": -1}, "chunk_overlap"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
        ({"chunk_tokens": 25}, "exceeds max_seq_length=24"),
        ({"long_text": "chunk", "chunk_overlap": 22}, "no room for chunk_overlap=22"),
        ({"long_text": "chunk", "chunk_tokens": 6, "prompt": "a b c d"}, "no room"),
    ],
)
def test_bad_long_text_parameters_are_refused_at_fit(tiny_model, params, message):
    with pytest.raises(ValueError, match=message):
        SentenceEmbedder(tiny_model, device="cpu", **params).fit()


def test_missing_texts_in_chunks(tiny_model):
    texts = [long_texts(1)[0], None, "the cat"]
    zero = SentenceEmbedder(tiny_model, device="cpu", long_text="chunk", missing="zero").fit()
    windows, text_index = zero.transform_chunks(texts)
    assert (windows[text_index == 1] == 0).all() and (text_index == 1).sum() == 1
    assert (zero.transform(texts)[1] == 0).all()
    assert zero.count_tokens(texts)[1] == 0


def test_truncate_dim_and_normalize_apply_to_windows(tiny_model):
    texts = long_texts(4, seed=5)
    embedder = SentenceEmbedder(
        tiny_model, device="cpu", long_text="chunk", truncate_dim=8, normalize_embeddings=True
    ).fit()
    windows, _ = embedder.transform_chunks(texts)
    assert windows.shape[1] == 8
    np.testing.assert_allclose(np.linalg.norm(windows, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embedder.transform(texts), axis=1), 1, atol=1e-6)


# --- what was cut -------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [None, PROMPT])
def test_truncation_report_names_the_rows_the_reference_truncates(tiny_model, prompt):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(tiny_model), device="cpu")
    # Around the limit: 20 to 27 tokens with the special tokens.
    texts = [" ".join(["cat"] * n) for n in range(18, 26)] + sentences(30, varied=True)
    if prompt:
        reference.prompts = {"q": prompt}
    features = reference.tokenize([(prompt or "") + t for t in texts])
    kept = features["attention_mask"].sum(dim=1).numpy()
    whole = [len(reference.tokenizer((prompt or "") + t)["input_ids"]) for t in texts]
    cut_by_reference = np.flatnonzero(kept < np.array(whole))
    assert 5 <= len(cut_by_reference) < len(texts)

    embedder = SentenceEmbedder(tiny_model, device="cpu", prompt=prompt).fit()
    counts = embedder.count_tokens(texts)
    np.testing.assert_array_equal(counts, whole)
    np.testing.assert_array_equal(
        np.flatnonzero(counts > embedder.max_seq_length_), cut_by_reference
    )
    with pytest.warns(TruncationWarning) as caught:
        embedder.transform(texts)
    assert caught[0].message.positions == cut_by_reference.tolist()
    # Chunked, nothing is cut: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        clone(embedder).set_params(long_text="chunk").fit().transform(texts)


# --- search over long documents -------------------------------------------------------------


def test_semantic_search_by_document_returns_the_best_window_per_document(tiny_model):
    documents = long_texts(8, seed=6)
    embedder = SentenceEmbedder(tiny_model, device="cpu", long_text="chunk").fit()
    windows, text_index = embedder.transform_chunks(documents)
    queries = embedder.transform(["the cat sits", "a man plays guitar"])
    scores, found = semantic_search(queries, windows, top_k=3, groups=text_index)
    full = np.asarray(embedder.similarity(queries, windows))
    best = np.stack([full[:, text_index == d].max(axis=1) for d in range(len(documents))], 1)
    np.testing.assert_array_equal(found, np.argsort(-best, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(scores, np.sort(best, axis=1)[:, ::-1][:, :3], atol=1e-6)
    # Blocks of a few windows give the same answer.
    small = semantic_search(queries, windows, top_k=3, groups=text_index, max_block_bytes=64)
    np.testing.assert_array_equal(small[1], found)
    with pytest.raises(ValueError, match="between 1 and the 8"):
        semantic_search(queries, windows, top_k=9, groups=text_index)
    with pytest.raises(ValueError, match="one integer per corpus row"):
        semantic_search(queries, windows, groups=text_index[:-1])


# --- streaming encode -------------------------------------------------------------------------


@pytest.mark.parametrize("source_suffix", [".txt", ".tsv", ".csv", ".parquet"])
@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_encode_streams_blocks_with_the_same_output(
    capsys, monkeypatch, tiny_model, tmp_path, source_suffix, suffix
):
    import pandas as pd

    from skembed import cli

    texts = sentences(11, varied=True)
    keys = [f"k{i}" for i in range(len(texts))]
    source = tmp_path / f"in{source_suffix}"
    column = [] if source_suffix == ".txt" else ["--column", "body"]
    if source_suffix == ".txt":
        source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif source_suffix == ".tsv":
        source.write_text(
            "key\tbody\n" + "".join(f"{k}\t{t}\n" for k, t in zip(keys, texts, strict=True))
        )
    else:
        frame = pd.DataFrame({"key": keys, "body": texts})
        if source_suffix == ".csv":
            frame.to_csv(source, index=False)
        else:
            frame.to_parquet(source)
    ids = [] if source_suffix == ".txt" or suffix == ".npy" else ["--id-column", "key"]
    out = tmp_path / f"out{suffix}"
    monkeypatch.setattr(cli, "_BLOCK_ROWS", 3)  # four blocks, the last one short
    argv = [str(source), "-o", str(out), "--model", str(tiny_model), "--device", "cpu"]
    with pytest.warns(TruncationWarning):
        assert cli.main(["encode", *argv, *column, *ids]) == 0
    err = capsys.readouterr().err
    assert f"wrote 11 x 32 embeddings to {out} (11 texts encoded)" in err
    with pytest.warns(TruncationWarning):  # some of the texts are long
        expected = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    if suffix == ".npy":
        np.testing.assert_array_equal(np.load(out), expected)
        return
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert table.iloc[:, 0].tolist() == (list(range(11)) if not ids else keys)
    np.testing.assert_allclose(table.iloc[:, 1:].to_numpy(np.float32), expected, atol=1e-6)


def test_encode_names_a_missing_text_in_a_later_block(capsys, monkeypatch, tiny_model, tmp_path):
    from skembed import cli

    monkeypatch.setattr(cli, "_BLOCK_ROWS", 2)
    source = tmp_path / "in.tsv"
    source.write_text("body\na\nb\nc\n\ne\n\n", encoding="utf-8")
    argv = ["encode", str(source), "-o", str(tmp_path / "o.npy"), "--column", "body"]
    assert cli.main([*argv, "--model", str(tiny_model)]) == 1
    err = capsys.readouterr().err
    assert "2 missing text(s)" in err and "row 3 (line 5), row 5 (line 7)" in err
    source.write_text("body\na\nb\nc\td\n", encoding="utf-8")
    assert cli.main([*argv, "--model", str(tiny_model)]) == 1
    assert "line 4 has 2 tab-separated fields" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_encode_chunks_long_texts(capsys, tiny_model, tmp_path):
    from skembed import cli

    texts = long_texts(5, seed=7)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    argv = [str(tmp_path / "in.txt"), "-o", str(out), "--model", str(tiny_model)]
    options = ["--long-text", "chunk", "--chunk-overlap", "4", "--chunk-pooling", "max"]
    assert cli.main(["encode", *argv, *options, "--device", "cpu"]) == 0
    expected = SentenceEmbedder(
        tiny_model, device="cpu", long_text="chunk", chunk_overlap=4, chunk_pooling="max"
    ).fit()
    np.testing.assert_array_equal(np.load(out), expected.transform(texts))


def test_encode_names_truncated_rows_by_their_row_in_the_file(monkeypatch, tiny_model, tmp_path):
    from skembed import cli

    monkeypatch.setattr(cli, "_BLOCK_ROWS", 4)
    texts = ["a cat"] * 9 + [" ".join(["cat"] * 40)] + ["a dog", " ".join(["dog"] * 30)]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    argv = [str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy"), "--model", str(tiny_model)]
    with pytest.warns(TruncationWarning) as caught:
        assert cli.main(["encode", *argv]) == 0
    assert [w.message.positions for w in caught] == [[9, 11]]
    assert "2 of 12 texts" in str(caught[0].message) and "rows 9, 11; all in" in str(
        caught[0].message
    )
    monkeypatch.setattr(cli, "_KEPT_POSITIONS", 1)  # the count goes on; the positions stop
    with pytest.warns(TruncationWarning) as caught:
        assert cli.main(["encode", *argv, "--overwrite"]) == 0
    assert [w.message.positions for w in caught] == [[9]]
    assert "2 of 12 texts" in str(caught[0].message) and "the first 1 in" in str(caught[0].message)


def _encode_process(tiny_model, source, out, *extra):
    """``skembed encode`` in a child process on the tiny model: the command line."""
    import sys

    return [
        sys.executable, "-m", "skembed", "encode", str(source), "-o", str(out),
        "--model", str(tiny_model), "--device", "cpu", "--quiet", *map(str, extra),
    ]  # fmt: skip


def _numbered_lines(path, n):
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{i} cat\n" for i in range(n))


@pytest.mark.slow
def test_encode_memory_does_not_grow_with_the_input(tiny_model, tmp_path):
    import json
    import os
    import subprocess
    import sys

    # Each size in a process of its own, whose largest child is the command.
    measure = (
        "import resource, subprocess, sys, json; "
        "subprocess.run(json.loads(sys.argv[1]), check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    peaks = {}
    for n in (100_000, 1_000_000):
        source = tmp_path / f"{n}.txt"
        _numbered_lines(source, n)
        command = _encode_process(tiny_model, source, tmp_path / f"{n}.npy")
        done = subprocess.run(
            [sys.executable, "-c", measure, json.dumps(command)],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        peaks[n] = int(done.stdout.split()[-1])
        assert np.load(tmp_path / f"{n}.npy", mmap_mode="r").shape == (n, 32)
    print(f"peak RSS (KiB): {peaks}")
    assert peaks[1_000_000] <= 1.2 * peaks[100_000], peaks


@pytest.mark.slow
def test_encode_killed_midway_resumes_encoding_only_the_rest(tiny_model, tmp_path):
    import os
    import re
    import signal
    import subprocess
    import time

    from skembed.cache import DiskEmbeddingStore

    n = 150_000
    source, memory = tmp_path / "in.txt", tmp_path / "memory"
    _numbered_lines(source, n)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out.npy"
    command = _encode_process(tiny_model, source, out, "--memory", memory)
    child = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    store = DiskEmbeddingStore(memory)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and child.poll() is None:
        if memory.exists() and len(store) >= 3 * 8192:
            break
        time.sleep(0.2)
    assert child.poll() is None, "the command ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    stored = len(store)
    assert 0 < stored < n and not out.exists()

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    encoded = int(re.search(r"\((\d+) texts encoded", resumed.stderr).group(1))
    assert encoded == n - stored, resumed.stderr
    # A partial file of the killed run is not left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "memory", "out.npy"]

    whole = tmp_path / "whole.npy"
    subprocess.run(_encode_process(tiny_model, source, whole), env=env, check=True)
    np.testing.assert_array_equal(np.load(out), np.load(whole))


def test_several_devices_give_the_same_windows_in_input_order(tiny_model):
    texts = long_texts(9, seed=8)
    one = SentenceEmbedder(tiny_model, device="cpu", long_text="chunk", chunk_overlap=3).fit()
    spread = clone(one).set_params(device=["cpu", "cpu"]).fit()
    for got, expected in zip(
        spread.transform_chunks(texts), one.transform_chunks(texts), strict=True
    ):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(spread.count_tokens(texts), one.count_tokens(texts))
    np.testing.assert_array_equal(spread.transform(texts), one.transform(texts))
