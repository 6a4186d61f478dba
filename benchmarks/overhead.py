"""The code around the model: skembed's per-text cost outside the transformer's forward pass.

On the first --texts texts of the ``encode_gpu.py`` corpus (STSb sentences and variants),
all-MiniLM-L6-v2 on the CPU, one process:

(a) the raw Rust tokenizer, ``encode_batch`` of the texts (truncation at the model's
    limit, no padding): the floor for anything that tokenizes;
(b) a cold ``SentenceEmbedder.transform`` (empty cache) minus the time spent inside the
    transformer's pass (timed by wrapping the model's ``forward``, or the unpadded BERT
    pass that replaces it on the CPU): tokenizing, batching, padding,
    pooling, normalisation, caching and assembling the output;
(c) ``transform`` with every text cached;
(d) as (b) with the in-process cache off (``set_cache_limit(0)``).

Each figure is the median of --repeats runs. Prints texts/s of each and the ratios
(b)/(a) and (d)/(a) (time per text relative to the tokenizer; 1.0 means the code around the
model costs no more than tokenizing).

    python benchmarks/overhead.py --texts 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from encode_gpu import corpus

from skembed import SentenceEmbedder
from skembed._device import cpu_features
from skembed.cache import clear_cache, set_cache_limit


class ForwardTimer:
    """Wraps the transformer's pass and adds up the seconds spent inside it."""

    def __init__(self, forward) -> None:
        self.seconds = 0.0
        self._forward = forward

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._forward(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def time_transformer(encoder) -> ForwardTimer:
    """Time the pass the encoder runs: its unpadded BERT pass, else the model's forward."""
    transformer = encoder.input_module
    if transformer.packed is not None:
        timer = transformer.packed = ForwardTimer(transformer.packed)
    else:
        timer = encoder.model.forward = ForwardTimer(encoder.model.forward)
    return timer


def around_model(embedder: SentenceEmbedder, timer: ForwardTimer, texts: list[str]) -> float:
    """Seconds of one cold transform outside the transformer's forward."""
    clear_cache()
    timer.seconds = 0.0
    start = time.perf_counter()
    embedder.transform(texts)
    return time.perf_counter() - start - timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    args = parser.parse_args()

    texts = corpus()[: args.texts]
    n = len(texts)
    embedder = SentenceEmbedder(args.model, device="cpu").fit()
    encoder = embedder._encoder
    timer = time_transformer(encoder)
    backend = copy.deepcopy(encoder.tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.enable_truncation(embedder.max_seq_length_)
    embedder.transform(texts[:256])  # warm-up

    def tokenizer_only() -> float:
        start = time.perf_counter()
        backend.encode_batch(texts)
        return time.perf_counter() - start

    def cached() -> float:
        embedder.transform(texts)  # fills the cache
        start = time.perf_counter()
        embedder.transform(texts)
        return time.perf_counter() - start

    runs: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
    for _ in range(args.repeats):
        runs["a"].append(tokenizer_only())
        set_cache_limit(1 << 30)
        runs["b"].append(around_model(embedder, timer, texts))
        runs["c"].append(cached())
        set_cache_limit(0)
        runs["d"].append(around_model(embedder, timer, texts))
    set_cache_limit(1 << 30)
    seconds = {key: statistics.median(values) for key, values in runs.items()}

    print(f"CPU: {cpu_features()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{n} texts, median of {args.repeats} runs")
    labels = {
        "a": "(a) Rust tokenizer encode_batch",
        "b": "(b) cold transform minus forward",
        "c": "(c) transform, all cached",
        "d": "(d) as (b), cache off",
    }
    for key, label in labels.items():
        print(f"{label:36s} {n / seconds[key]:12,.0f} texts/s")
    print(f"(b)/(a) = {seconds['b'] / seconds['a']:.2f}")
    print(f"(d)/(a) = {seconds['d'] / seconds['a']:.2f}")


if __name__ == "__main__":
    main()
