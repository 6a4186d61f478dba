"""The parts of the benchmark scripts that run without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_long_text_benchmark_runs_quickly(tiny_model):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "long_text.py"),
            *("--docs", "3", "--repeats", "1", "--min-tokens", "60", "--max-tokens", "90"),
            *("--model", str(tiny_model)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for name in ("skembed truncate", "skembed chunk", "skembed window texts", "reference"):
        assert f"\n{name} " in result.stdout, result.stdout
    assert "chunk time / skembed window texts time: " in result.stdout


@pytest.mark.slow
def test_gpu_benchmark_runs_every_part_in_one_call_on_the_cpu(tiny_model, tmp_path):
    # The device machine gives minutes: the script must not fail halfway there.
    script = str(BENCHMARKS / "encode_gpu.py")
    packed = tmp_path / "packed"
    subprocess.run(
        [sys.executable, script, "pack", "--model", str(tiny_model), "--out", str(packed)],
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [
            *(sys.executable, script, "run", "--model", str(packed), "--device", "cpu"),
            *("--limit", "60", "--long", "6", "--repeats", "1", "--random-weights"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for part in (
        "Short texts (60)",
        "max |skembed fp32 - reference fp32|",
        "tokenizer alone: encode_batch",
        "model alone",
        "forward + pooling",
        "sum of stages",
        "Long texts (6,",
        "skembed defaults, padded pass",
    ):
        assert part in result.stdout, part


@pytest.mark.slow
def test_grid_search_benchmark_counts_the_encodings_of_every_process(tiny_model):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "grid_search_cache.py"),
            "--repeats",
            "1",
            "--n-jobs",
            "2",
            "--model",
            str(tiny_model),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # 1,443 unique sentences, each encoded once by one process or another, with n_jobs=1 and 2.
    assert "unique sentences: 1443" in result.stdout
    for n_jobs in (1, 2):
        assert (
            f"n_jobs={n_jobs}: median " in result.stdout
            and result.stdout.split(f"n_jobs={n_jobs}: median ")[1].splitlines()[0].endswith(
                "encodings per unique sentence 1.000"
            )
        ), result.stdout


def test_fine_tune_benchmark_runs_both_sides_in_quick_mode(tiny_model):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "fine_tune.py"),
            "--model",
            str(tiny_model),
            "--max-train",
            "32",
            "--max-test",
            "40",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for side in ("frozen: test Spearman", "skembed:   Spearman", "reference: Spearman"):
        assert side in result.stdout, result.stdout
    assert "time ratio skembed/reference" in result.stdout
