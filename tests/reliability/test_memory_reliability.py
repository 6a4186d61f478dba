"""Memory stays bounded: huge texts cost their kept tokens, not their length."""

from __future__ import annotations

import random

import numpy as np
import pytest

from skembed import SentenceEmbedder

MB = 10**6


def long_texts(seed: int = 0) -> list[str]:
    """Texts far past 256 tokens: CJK runs, words, runs of spaces, long words, mixed scripts."""
    rng = random.Random(seed)
    pieces = ["的猫", "naïve café", "hello, world!", " " * 50, "x" * 300, "12345", "ﬁ Å", "\n\t"]
    texts = ["".join(rng.choice(pieces) for _ in range(n)) for n in (800, 2000, 6000)]
    texts += ["的" * 20_000, " " * 20_000 + "word " * 3000, "a" * 30_000]
    return texts


@pytest.mark.integration
def test_huge_texts_match_the_reference(real_model):
    # The reference tokenizes whole texts; skembed cuts them first, at a point that keeps
    # their first 256 tokens: the embeddings must not change.
    from sentence_transformers import SentenceTransformer

    texts = long_texts()
    with pytest.warns(UserWarning, match="truncated"):
        ours = SentenceEmbedder(real_model, device="cpu").fit().transform(texts)
    reference = SentenceTransformer(str(real_model), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_huge_texts_use_bounded_memory(load_benchmark):
    # 150 texts of 100,000 CJK characters took about 2.9 GB when tokenized whole.
    measured = load_benchmark("encode_memory").measure("huge", 150, "on", "cold")
    assert measured["rows"] == 150
    assert measured["extra"] < 300 * MB, measured


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("cache", ["on", "off"])
def test_transform_peak_memory_is_within_twice_the_output(load_benchmark, cache):
    # Beyond the model (its weights, loaded before, and its working memory for one batch,
    # which every forward pass allocates anew), transform adds its output, the cache's block
    # and small tokenizer buffers. Measured with glibc's mmap threshold pinned, so that the
    # figure is what skembed allocates, not what glibc happens to retain (encode_memory.py).
    measured = load_benchmark("encode_memory").measure("corpus", 20_000, cache, "model")
    assert measured["rows"] == 20_000
    assert measured["extra"] - measured["batch"] < 2 * measured["output"], measured
