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
from skembed._device import cpu_features, resolve_dtype
from skembed.cache import set_cache_limit
from skembed.datasets import iter_stsb
from skembed.encoder import Encoder, EncodeSettings, load_encoder, resolve_model_folder
from skembed.encoder._batching import pad_batch, plan_batches

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


def long_texts(n: int, tokenizer, tokens: int = 256) -> list[str]:
    """``n`` texts of at most ``tokens`` tokens: STSb sentences joined while they fit."""
    sentences = corpus()[:15_457]
    sizes = [len(tokenizer.tokenize(s)) for s in sentences]
    texts, start = [], 0
    for _ in range(n):
        parts, count = [], 2  # [CLS] and [SEP]
        # Words split at a join can add a token or two: leave that much room.
        while count + sizes[start % len(sentences)] + 2 <= tokens:
            parts.append(sentences[start % len(sentences)])
            count += sizes[start % len(sentences)] + 1
            start += 1
        texts.append(" ".join(parts))
    return texts


class Timer:
    """Medians of repeated, device-synchronised runs of named contenders, interleaved."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device, self.repeats = device, repeats

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def once(self, fn) -> tuple[float, object]:
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out

    def medians(self, contenders: dict) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        for fn in contenders.values():  # warm-up: CUDA context, kernels, allocator
            fn()
        runs, outputs = {}, {}
        for _ in range(self.repeats):
            for name, fn in contenders.items():
                seconds, out = self.once(fn)
                runs.setdefault(name, []).append(seconds)
                outputs[name] = out
        return {name: statistics.median(times) for name, times in runs.items()}, outputs


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cosine.min())


def report(title: str, n: int, seconds: dict[str, float], baseline: str) -> dict[str, float]:
    """Print texts/s per contender with its ratio to ``baseline``; return the rates."""
    speed = {name: n / value for name, value in seconds.items()}
    print(f"\n{title}")
    for name, value in speed.items():
        print(f"  {name:34s} {value:10.0f} texts/s   {value / speed[baseline]:5.2f}x {baseline}")
    return speed


def stages(encoder: Encoder, texts: list[str], timer: Timer) -> dict[str, float]:
    """Seconds of each stage of skembed's encode, each run alone: where the time goes."""
    run = encoder._run_for(EncodeSettings())
    first = run.input_module
    backend = first.backend(run.max_length)
    seconds, encodings = timer.once(
        lambda: backend.encode_batch_fast(texts, add_special_tokens=first.add_special_tokens)
    )
    out = {"tokenize (Rust, all cores)": seconds}
    lengths = np.array([len(e.ids) for e in encodings])
    plans = plan_batches(lengths, encoder.default_batch_size, encoder.default_batch_tokens, True)

    def pad() -> list[dict[str, torch.Tensor]]:
        return [
            {
                k: torch.from_numpy(v)
                for k, v in pad_batch(
                    [encodings[i] for i in rows],
                    pad_id=first.tokenizer.pad_token_id or 0,
                    left=first.tokenizer.padding_side == "left",
                    with_token_types=first.token_types,
                    lengths=lengths[rows],
                ).items()
            }
            for rows in plans
        ]

    out["pad (numpy, one thread)"], batches = timer.once(pad)
    if encoder.device.type == "cuda":
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    out["copy to device"], on_device = timer.once(
        lambda: [
            {k: v.to(encoder.device, non_blocking=True) for k, v in b.items()} for b in batches
        ]
    )

    def forward() -> list[torch.Tensor]:
        with torch.inference_mode():
            return [encoder._forward(b, run) for b in on_device]

    out["forward + pooling"], embeddings = timer.once(forward)

    def assemble() -> np.ndarray:
        result = np.empty((len(texts), encoder.embedding_dimension), dtype=np.float32)
        result[np.concatenate(plans)] = torch.cat(embeddings).cpu().numpy()
        return result

    out["copy back + assemble"], _ = timer.once(assemble)
    return out


def run(args: argparse.Namespace) -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("encode_gpu.py run needs a CUDA device (or --device cpu, a dry run).")
    folder = unpack(args.model, args.random_weights)
    texts = corpus()[: args.limit] if args.limit else corpus()
    set_cache_limit(0)  # measure encoding, not the cache
    # float16 on a GPU; on the CPU (a dry run of this script) bfloat16 stands in for it.
    half, half_name = (
        ("float16", "fp16") if device.type == "cuda" else ("bfloat16", "bf16 (fp16 on CUDA)")
    )
    timer = Timer(device, args.repeats)
    name = torch.cuda.get_device_name() if device.type == "cuda" else cpu_features()
    print(f"{name}; torch {torch.__version__}; {len(texts)} short texts; medians of {args.repeats}")

    reference = SentenceTransformer(str(folder), device=str(device))
    reference_half = SentenceTransformer(str(folder), device=str(device)).to(getattr(torch, half))
    ours = SentenceEmbedder(folder, device=str(device)).fit()  # defaults: float16 on CUDA
    ours32 = SentenceEmbedder(folder, device=str(device), dtype="float32").fit()
    ours16 = SentenceEmbedder(folder, device=str(device), dtype="bfloat16").fit()
    seconds, outputs = timer.medians(
        {
            "reference fp32 batch 32": lambda: reference.encode(texts, batch_size=32),
            "reference fp32 batch 128": lambda: reference.encode(texts, batch_size=128),
            "reference fp32 batch 512": lambda: reference.encode(texts, batch_size=512),
            f"reference {half_name} batch 512": lambda: reference_half.encode(
                texts, batch_size=512
            ),
            "skembed defaults": lambda: ours.transform(texts),
            "skembed fp32": lambda: ours32.transform(texts),
            "skembed bf16": lambda: ours16.transform(texts),
        }
    )
    best = max((n for n in seconds if n.startswith("reference")), key=lambda n: -seconds[n])
    speed = report(
        f"Short texts ({len(texts)}): vs the reference's best", len(texts), seconds, best
    )
    exact = outputs["reference fp32 batch 32"]
    fp32_gap = np.abs(outputs["skembed fp32"] - exact).max()
    print(f"  max |skembed fp32 - reference fp32|: {fp32_gap:.2e}")
    for name in ("skembed defaults", "skembed bf16"):
        print(f"  min cosine({name}, reference fp32): {min_cosine(outputs[name], exact):.6f}")

    # What the host can feed and what the model can take, on the same texts.
    # The estimator's own encoder: the process-wide one for this folder, device and dtype.
    encoder = load_encoder(
        resolve_model_folder(folder), device, dtype=resolve_dtype("auto", device)
    )
    tokenizer = encoder.tokenizer
    backend = encoder.input_module.backend(256)
    model = AutoModel.from_pretrained(folder, dtype=getattr(torch, half)).to(device).eval()
    ids = sorted(backend.encode_batch_fast(texts), key=lambda e: len(e.ids))

    def model_alone() -> None:
        with torch.inference_mode():
            for start in range(0, len(ids), 4096):
                part = ids[start : start + 4096]
                batch = pad_batch(part, 0, False, True)
                inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
                hidden = model(**inputs).last_hidden_state
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                (hidden * mask).sum(1) / mask.sum(1)

    seconds, _ = timer.medians(
        {
            "tokenizer alone: encode_batch": lambda: backend.encode_batch(texts),
            "tokenizer alone: __call__ padded": lambda: tokenizer(texts, padding=True),
            f"model alone ({half}, pre-tokenized)": model_alone,
        }
    )
    seconds["skembed defaults"] = len(texts) / speed["skembed defaults"]
    report(
        "Host and model alone: vs the tokenizer alone",
        len(texts),
        seconds,
        "tokenizer alone: encode_batch",
    )

    print("\nWhere skembed's time goes (each stage alone, seconds for all the short texts)")
    parts = stages(encoder, texts, timer)
    for stage, value in parts.items():
        print(f"  {stage:34s} {value:8.3f} s")
    total, end_to_end = sum(parts.values()), len(texts) / speed["skembed defaults"]
    print(f"  {'sum of stages':34s} {total:8.3f} s; end to end {end_to_end:.3f} s")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        ours.transform(texts)
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"\nPeak GPU memory, skembed defaults on the short texts: {peak:.2f} GiB")

    long = long_texts(args.long, tokenizer)
    transformer = encoder.input_module
    unpadded = transformer.packed

    def padded_pass() -> np.ndarray:
        transformer.packed = None  # the model's own (padded) forward, as before issue 23
        try:
            return ours.transform(long)
        finally:
            transformer.packed = unpadded

    seconds, outputs = timer.medians(
        {
            f"reference {half_name} batch 128": lambda: reference_half.encode(long, batch_size=128),
            "reference fp32 batch 128": lambda: reference.encode(long, batch_size=128),
            "skembed defaults, padded pass": padded_pass,
            "skembed defaults": lambda: ours.transform(long),
        }
    )
    mean_tokens = np.mean([len(e.ids) for e in backend.encode_batch_fast(long)])
    report(
        f"Long texts ({len(long)}, {mean_tokens:.0f} tokens on average): vs the reference's half",
        len(long),
        seconds,
        f"reference {half_name} batch 128",
    )
    print(
        f"  min cosine(skembed defaults, reference fp32): "
        f"{min_cosine(outputs['skembed defaults'], outputs['reference fp32 batch 128']):.6f}"
    )


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
    run_parser.add_argument("--long", type=int, default=3000, help="texts of ~256 tokens")
    run_parser.add_argument(
        "--device", default="cuda", help="cuda; cpu runs every part on a small --limit (a dry run)"
    )
    run_parser.add_argument("--random-weights", action="store_true")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.model, args.out)
    else:
        run(args)


if __name__ == "__main__":
    main()
