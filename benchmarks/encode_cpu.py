"""CPU encoding throughput: sentence-transformers vs skembed (float32 and bfloat16).

One process, the same texts (unique STSb train sentences), runs alternating between the
reference and skembed; the skembed embedding cache is off so every run encodes every text.
Prints sentences/s (median of --repeats runs), the ratio to the reference's best batch size,
and the accuracy checks: max |skembed float32 - reference|, min cosine of bfloat16 to
float32, and the STSb test Spearman x 100 of each skembed precision.

    python benchmarks/encode_cpu.py --sentences 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from skembed import SentenceEmbedder
from skembed._device import cpu_features
from skembed.cache import set_cache_limit
from skembed.datasets import load_stsb
from skembed.encoder import resolve_model_folder


def timed(fn) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    train = load_stsb("train")
    texts = list(dict.fromkeys(train["sentence1"].tolist() + train["sentence2"].tolist()))
    texts = texts[: args.sentences]
    folder = resolve_model_folder(args.model)
    set_cache_limit(0)  # measure encoding, not the cache

    reference = SentenceTransformer(str(folder), device="cpu")
    ours = {
        "float32": SentenceEmbedder(folder, device="cpu", dtype="float32").fit(),
        "bfloat16": SentenceEmbedder(folder, device="cpu", dtype="bfloat16").fit(),
    }
    runs: dict[str, list[float]] = {}
    outputs: dict[str, np.ndarray] = {}
    contenders = {
        "reference batch 32": lambda: reference.encode(texts, batch_size=32),
        "reference batch 64": lambda: reference.encode(texts, batch_size=64),
        **{f"skembed {name}": (lambda e=e: e.transform(texts)) for name, e in ours.items()},
    }
    for fn in contenders.values():  # warm-up, untimed
        fn()
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            seconds, outputs[name] = timed(fn)
            runs.setdefault(name, []).append(seconds)

    speed = {name: len(texts) / statistics.median(times) for name, times in runs.items()}
    best_reference = max(speed["reference batch 32"], speed["reference batch 64"])
    print(f"CPU: {cpu_features()}")
    print(
        f"{len(texts)} unique STSb train sentences, {torch.get_num_threads()} torch threads, "
        f"median of {args.repeats} runs"
    )
    for name, value in speed.items():
        print(
            f"  {name:20s} {value:8.0f} sentences/s   {value / best_reference:5.2f}x best reference"
        )

    fp32, bf16 = outputs["skembed float32"], outputs["skembed bfloat16"]
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    parity = np.abs(fp32 - outputs["reference batch 32"]).max()
    print(f"max |skembed float32 - reference|: {parity:.2e}")
    print(f"min cosine(bfloat16, float32): {cosine.min():.6f}")
    test = load_stsb("test")
    for name, embedder in ours.items():
        score = embedder.score(test[["sentence1", "sentence2"]], test["score"])
        print(f"STSb test Spearman x 100, {name}: {100 * score:.2f}")


if __name__ == "__main__":
    main()
