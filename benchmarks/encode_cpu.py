"""CPU encoding throughput: sentence-transformers vs skembed (float32, bfloat16, int8).

One process, the same texts (unique STSb train sentences), runs alternating between the
reference and skembed; the skembed embedding cache is off so every run encodes every text.
The reference's ONNX and ONNX-int8 backends join when they can be loaded (they need the
``optimum-onnx`` package); otherwise the script says why. Prints the CPU features,
sentences/s (median of --repeats runs), the ratio to the reference's fastest configuration
and to its float32, and the accuracy checks: max |skembed float32 - reference|, min and
median cosine of each skembed precision to float32 (on the timed texts, and on the STSb test
and dev sentences, which int8's calibration never saw), and the STSb test and dev Spearman
x 100 of each skembed precision.

    python benchmarks/encode_cpu.py --sentences 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

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

    print(f"CPU: {cpu_features()}", flush=True)
    reference = SentenceTransformer(str(folder), device="cpu")
    ours = {
        name: SentenceEmbedder(folder, device="cpu", dtype=name).fit()
        for name in ("float32", "bfloat16", "int8")
    }
    runs: dict[str, list[float]] = {}
    outputs: dict[str, np.ndarray] = {}
    contenders = {
        "reference batch 32": lambda: reference.encode(texts, batch_size=32),
        "reference batch 64": lambda: reference.encode(texts, batch_size=64),
        **{
            f"reference {name}": (lambda m=m: m.encode(texts, batch_size=32))
            for name, m in reference_onnx(folder).items()
        },
        **{f"skembed {name}": (lambda e=e: e.transform(texts)) for name, e in ours.items()},
    }
    for fn in contenders.values():  # warm-up, untimed
        fn()
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            seconds, outputs[name] = timed(fn)
            runs.setdefault(name, []).append(seconds)

    speed = {name: len(texts) / statistics.median(times) for name, times in runs.items()}
    reference_float32 = max(speed["reference batch 32"], speed["reference batch 64"])
    best_reference = max(v for name, v in speed.items() if name.startswith("reference"))
    print(f"CPU: {cpu_features()}")
    print(
        f"{len(texts)} unique STSb train sentences, {torch.get_num_threads()} torch threads, "
        f"median of {args.repeats} runs"
    )
    for name, value in speed.items():
        print(
            f"  {name:20s} {value:8.0f} sentences/s   {value / best_reference:5.2f}x fastest "
            f"reference   {value / reference_float32:5.2f}x reference float32"
        )

    fp32 = outputs["skembed float32"]
    parity = np.abs(fp32 - outputs["reference batch 32"]).max()
    print(f"max |skembed float32 - reference|: {parity:.2e}")
    print_cosines("timed train sentences", {n: outputs[f"skembed {n}"] for n in ours})
    for split in ("test", "dev"):
        pairs = load_stsb(split)
        # int8 is calibrated on the first train sentences, which the timed texts start with:
        # its cosines to float32 are also shown on sentences it never saw.
        unseen = list(dict.fromkeys(pairs["sentence1"].tolist() + pairs["sentence2"].tolist()))
        print_cosines(f"STSb {split} sentences", {n: e.transform(unseen) for n, e in ours.items()})
        for name, embedder in ours.items():
            score = embedder.score(pairs[["sentence1", "sentence2"]], pairs["score"])
            print(f"STSb {split} Spearman x 100, {name}: {100 * score:.2f}")


def print_cosines(texts: str, vectors: dict[str, np.ndarray]) -> None:
    """Min and median cosine of each lower precision's vectors to float32's."""
    fp32 = vectors["float32"]
    for name in ("bfloat16", "int8"):
        other = vectors[name]
        cosine = (
            (fp32 * other).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(other, axis=1)
        )
        print(
            f"cosine({name}, float32), {len(other)} {texts}: min {cosine.min():.6f}, "
            f"median {np.median(cosine):.6f}"
        )


def reference_onnx(folder) -> dict[str, object]:
    """The reference's ONNX and ONNX-int8 models of ``folder``, or {} with the reason printed."""
    import shutil
    import tempfile

    from sentence_transformers import SentenceTransformer

    # The export writes ONNX files beside the model: a copy keeps the installed folder as is.
    copy = Path(tempfile.mkdtemp()) / "model"
    shutil.copytree(folder, copy)
    try:
        model = SentenceTransformer(str(copy), device="cpu", backend="onnx")
    except Exception as error:  # the backend's import and export errors vary by version
        print(f"reference ONNX backends not run: {type(error).__name__}: {error}".split("\n")[0])
        return {}
    models = {"onnx": model}
    try:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        export_dynamic_quantized_onnx_model(model, "avx512_vnni", str(copy))
        models["onnx-int8"] = SentenceTransformer(
            str(copy),
            device="cpu",
            backend="onnx",
            model_kwargs={"file_name": "onnx/model_qint8_avx512_vnni.onnx"},
        )
    except Exception as error:
        print(f"reference ONNX-int8 not run: {type(error).__name__}: {error}".split("\n")[0])
    return models


if __name__ == "__main__":
    main()
