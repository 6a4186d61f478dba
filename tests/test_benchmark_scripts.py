"""The parts of the benchmark scripts that run without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from skembed import SentenceEmbedder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_corpus_is_the_specified_61828_texts(load_benchmark):
    texts = load_benchmark("encode_gpu").corpus()
    assert len(texts) == 61_828 == len(set(texts))
    assert texts[15_457] == texts[0] + " 1"


def test_gpu_model_packing_round_trip(tiny_model, tmp_path, load_benchmark):
    gpu = load_benchmark("encode_gpu")
    packed = tmp_path / "packed"
    subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "encode_gpu.py"),
            "pack",
            "--model",
            str(tiny_model),
            "--out",
            str(packed),
        ],
        check=True,
        capture_output=True,
    )
    assert (packed / gpu.PACKED_WEIGHTS).is_file() and not (packed / "model.safetensors").exists()
    texts = ["a cat", "the dog plays in the garden"]
    original = SentenceEmbedder(tiny_model, device="cpu").fit().transform(texts)
    unpacked = SentenceEmbedder(gpu.unpack(packed, False), device="cpu").fit().transform(texts)
    np.testing.assert_allclose(unpacked, original, atol=1e-2)  # float16 storage rounds weights
    random = SentenceEmbedder(gpu.unpack(packed, True), device="cpu").fit().transform(texts)
    assert random.shape == original.shape
