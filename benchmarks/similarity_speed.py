"""Similarity speed: sentence-transformers' util functions vs skembed, side by side.

Random float32 embeddings of dimension 384 (as all-MiniLM-L6-v2's), X against Y of the
same size, for each metric and size. Both sides get the same torch tensors and are called in
turn, --repeats times each after a warm-up. Prints the median times, skembed's speed as a
multiple of the reference's (the median over the repeats of the ratio of two calls made side
by side; above 1: skembed is faster), and the largest difference between the two results,
absolute and relative to the score's magnitude (at least 1).

    python benchmarks/similarity_speed.py --sizes 1000 3000 --repeats 21
    python benchmarks/similarity_speed.py --sizes 10000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from skembed import similarity
from skembed._device import cpu_features

REFERENCE = {
    "cosine": "cos_sim",
    "dot": "dot_score",
    "euclidean": "euclidean_sim",
    "manhattan": "manhattan_sim",
}


def paired_times(reference_fn, args: tuple, metric: str, repeats: int) -> tuple[list, list]:
    """Seconds of ``repeats`` calls of each side, the two sides called in turn.

    Calling them in turn (rather than one side's runs, then the other's) makes drifts in
    machine load hit both sides alike; each side is called once first to warm up.
    """
    reference_fn(*args)
    ours(*args, metric)
    ref_times, our_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        reference_fn(*args)
        ref_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        ours(*args, metric)
        our_times.append(time.perf_counter() - start)
    return ref_times, our_times


def ours(x: torch.Tensor, y: torch.Tensor, metric: str) -> torch.Tensor:
    return similarity(x, y, metric=metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--metrics", nargs="+", default=list(REFERENCE))
    args = parser.parse_args()

    from sentence_transformers import util

    print(f"CPU: {cpu_features()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'metric':10s} {'rows':>6s} {'reference s':>12s} {'skembed s':>10s} "
        f"{'speed vs ref':>12s} {'max |diff|':>10s} {'max rel':>9s}"
    )
    generator = torch.Generator().manual_seed(0)
    for n in args.sizes:
        x = torch.randn(n, args.dim, generator=generator)
        y = torch.randn(n, args.dim, generator=generator)
        for metric in args.metrics:
            reference_fn = getattr(util, REFERENCE[metric])
            ref_times, our_times = paired_times(reference_fn, (x, y), metric, args.repeats)
            ref_s, our_s = statistics.median(ref_times), statistics.median(our_times)
            # The median of the ratios of calls made side by side: robust to load that
            # changes between calls, unlike the ratio of the two medians.
            speed = statistics.median(r / o for r, o in zip(ref_times, our_times, strict=True))
            reference, mine = reference_fn(x, y), similarity(x, y, metric=metric)
            diff = (reference - mine).abs()
            # Relative to the score's size (at least 1): L1 distances of 384 values are
            # around 400, where one float32 step is 3e-5.
            relative = (diff / reference.abs().clamp_min(1.0)).max().item()
            print(
                f"{metric:10s} {n:6d} {ref_s:12.4f} {our_s:10.4f} "
                f"{speed:11.2f}x {diff.max().item():10.1e} {relative:9.1e}"
            )


if __name__ == "__main__":
    main()
