"""GPU encoding throughput: sentence-transformers vs skembed, alternating runs in one process.

The corpus: the unique STSb sentences (train + dev + test, 15,457) in 4 variants (the
sentence, then the sentence + " 1", " 2", " 3"), 61,828 texts. The reference runs in float32
at batch sizes 32, 128 and 512, and in float16 (``model.half()``) at batch 512; skembed runs in
float16 with its defaults, its embedding cache off. Prints sentences/s (median of --repeats),
each figure's ratio to the reference's best configuration, and the min cosine between skembed
float16 and reference float32 embeddings.

The device machine cannot download weights and carries at most 64 MiB, so the model travels
packed as float16 safetensors (about 45 MB) and is unpacked to float32 there:

    # here, once: writes benchmarks/.gpu_model (ignored by git)
    python benchmarks/encode_gpu.py pack
    # on the device machine (carry benchmarks/.gpu_model):
    PYTHONPATH=src python benchmarks/encode_gpu.py run --repeats 3

``run --random-weights`` uses a randomly initialised model of the packed config instead
(throughput does not depend on weight values; accuracy figures are then meaningless).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from skembed import SentenceEmbedder
from skembed.cache import set_cache_limit
from skembed.datasets import iter_stsb
from skembed.encoder import resolve_model_folder

PACKED = Path(__file__).resolve().parent / ".gpu_model"
PACKED_WEIGHTS = "model.fp16.safetensors"


def corpus() -> list[str]:
    """The 61,828-text benchmark corpus."""
    # Pandas-free: the device machine's image may not have it.
    sentences: dict[str, None] = {}
    for split in ("train", "dev", "test"):
        for first, second, _ in iter_stsb(split):
            sentences.update(dict.fromkeys((first, second)))
    unique = list(sentences)
    return unique + [f"{s} {variant}" for variant in (1, 2, 3) for s in unique]


def pack(model: str, target: Path) -> None:
    """Copy a model folder with its transformer weights stored in float16."""
    from safetensors.torch import load_file, save_file

    source = resolve_model_folder(model)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    weights = load_file(source / "model.safetensors")
    save_file({k: v.half().contiguous() for k, v in weights.items()}, target / PACKED_WEIGHTS)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"packed {source} -> {target} ({size / 2**20:.1f} MiB)")


def unpack(packed: Path, random_weights: bool) -> Path:
    """A float32 model folder from a packed one (or random weights of the same config)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel

    folder = Path(tempfile.mkdtemp(prefix="skembed-gpu-model-"))
    shutil.copytree(
        packed, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
    )
    if random_weights:
        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)
    else:
        weights = load_file(packed / PACKED_WEIGHTS)
        save_file({k: v.float() for k, v in weights.items()}, folder / "model.safetensors")
    return folder


def run(args: argparse.Namespace) -> None:
    from sentence_transformers import SentenceTransformer

    if not torch.cuda.is_available():
        raise SystemExit("encode_gpu.py run needs a CUDA device.")
    folder = unpack(args.model, args.random_weights)
    texts = corpus()[: args.limit] if args.limit else corpus()
    set_cache_limit(0)  # measure encoding, not the cache
    reference = SentenceTransformer(str(folder), device="cuda")
    reference_half = SentenceTransformer(str(folder), device="cuda").half()
    ours = SentenceEmbedder(folder, device="cuda", dtype="float16").fit()
    contenders = {
        "reference fp32 batch 32": lambda: reference.encode(texts, batch_size=32),
        "reference fp32 batch 128": lambda: reference.encode(texts, batch_size=128),
        "reference fp32 batch 512": lambda: reference.encode(texts, batch_size=512),
        "reference fp16 batch 512": lambda: reference_half.encode(texts, batch_size=512),
        "skembed fp16": lambda: ours.transform(texts),
    }
    outputs, runs = {}, {}
    for fn in contenders.values():  # warm-up: CUDA context, kernels, allocator
        fn()
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            outputs[name] = np.asarray(fn())
            torch.cuda.synchronize()
            runs.setdefault(name, []).append(time.perf_counter() - start)
    speed = {name: len(texts) / statistics.median(times) for name, times in runs.items()}
    best = max(value for name, value in speed.items() if name.startswith("reference"))
    print(f"{torch.cuda.get_device_name()}, {len(texts)} texts, median of {args.repeats} runs")
    for name, value in speed.items():
        print(f"  {name:26s} {value:9.0f} sentences/s   {value / best:5.2f}x best reference")
    a, b = outputs["skembed fp16"], outputs["reference fp32 batch 32"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"min cosine(skembed fp16, reference fp32): {cosine.min():.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="store the model in float16 for the device")
    pack_parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    pack_parser.add_argument("--out", type=Path, default=PACKED)
    run_parser = commands.add_parser("run", help="the benchmark (needs CUDA)")
    run_parser.add_argument("--model", type=Path, default=PACKED)
    run_parser.add_argument("--repeats", type=int, default=3)
    run_parser.add_argument("--limit", type=int, default=0, help="use only the first N texts")
    run_parser.add_argument("--random-weights", action="store_true")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.model, args.out)
    else:
        run(args)


if __name__ == "__main__":
    main()
