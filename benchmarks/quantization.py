"""STSb Spearman and storage per embedding for each truncation and quantization precision.

The quantizer is calibrated on the embeddings of the STSb dev sentences, then the STSb test
pairs are scored: float32 and scalar codes by cosine, packed bits by Hamming distance. Prints
a Markdown table (Spearman x 100, bytes per embedding) and the CPU's features.

    python benchmarks/quantization.py --dims 384 256 128 64
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from skembed import EmbeddingQuantizer, PairedSimilarity, SentenceEmbedder
from skembed.datasets import load_stsb

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]
# Flags that change how fast the similarity math runs; the STSb figures do not depend on them.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "popcnt")


def cpu_description() -> str:
    """The CPU model and the listed flags it has (Linux), else the platform's processor name."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return platform.processor() or platform.machine()
    text = info.read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), ""
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    return f"{model}, {os.cpu_count()} cores, " + " ".join(f for f in CPU_FLAGS if f in flags)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    args = parser.parse_args()

    dev, test = load_stsb("dev"), load_stsb("test")
    columns = ["sentence1", "sentence2"]
    print(f"CPU: {cpu_description()}")
    print(f"STSb test ({len(test)} pairs), calibration: STSb dev ({len(dev)} pairs), {args.model}")
    print()
    print("| dimensions | precision | Spearman x 100 | bytes per embedding |")
    print("|---|---|---|---|")
    for dim in args.dims:
        for precision in PRECISIONS:
            model = PairedSimilarity(
                SentenceEmbedder(args.model, device="cpu", truncate_dim=dim),
                EmbeddingQuantizer(precision, metric="cosine"),
            ).fit(dev[columns])
            spearman = 100 * model.score(test[columns], test["score"])
            stored = model.quantizer_.n_features_out_ * (4 if precision == "float32" else 1)
            print(f"| {dim} | {precision} | {spearman:.2f} | {stored} |")


if __name__ == "__main__":
    main()
