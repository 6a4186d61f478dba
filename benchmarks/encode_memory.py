"""Peak memory of SentenceEmbedder.transform, relative to its output, with all-MiniLM-L6-v2.

Two workloads, each in a fresh subprocess with the model loaded (``fit``) before the
measurement, so its weights are not counted:

- ``huge``: 150 texts of 100,000 CJK characters (only their first 256 tokens are kept);
- ``corpus``: the first 20,000 texts of the ``encode_gpu.py`` corpus (STSb sentences).

The extra peak is the process's high-water mark (VmHWM, reset just before) minus its resident
size just before ``transform``; Linux only (reads /proc/self/status). ``batch`` is the extra
peak of a transform of 256 of the workload's longest texts (new ones, so not cached; at
least one full batch): the model's own working memory, which every forward pass allocates
anew. Each workload is measured
after two warm-ups: ``cold``, one short text (the forward pass's working memory for long inputs
is then part of the figure), and ``model``, one batch of texts as long as the workload's longest
(the model's working memory is then allocated before, and the figure is what ``transform`` adds
to the model). The corpus also runs with the in-process embedding cache off; with it on, the
cache keeps its own copy of the embeddings, which the figure includes.

    python benchmarks/encode_memory.py [--allocator default]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, sys.argv[2])
    from skembed import SentenceEmbedder

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    workload, n, cache, warm_up = sys.argv[1], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    if cache == "off":
        from skembed.cache import set_cache_limit
        set_cache_limit(0)
    if workload == "huge":
        texts = [chr(0x4E00 + i) * 100_000 for i in range(n)]
    else:
        from encode_gpu import corpus
        texts = corpus()[:n]
    embedder = SentenceEmbedder(device="cpu").fit()
    if warm_up == "cold":
        embedder.transform(["warm up the kernels and the tokenizer"])
    else:
        # Texts as long as the longest of the workload, but not the same texts.
        embedder.transform([t[:-1] + "#" for t in sorted(texts, key=len)[-64:]])

    def extra_peak(run):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        before = status("VmRSS")
        result = run()
        return status("VmHWM") - before, result

    # The model's working memory: one batch of the longest texts, not seen before. The
    # allocator hands large buffers back after each forward pass, so a warm-up does not
    # keep them: every later forward pass allocates them again.
    # 256 texts: at least one full batch, also where batches are bounded by tokens alone.
    longest = sorted(texts, key=len)[-256:]
    batch, _ = extra_peak(lambda: embedder.transform([t[:-1] + "%" for t in longest]))
    extra, out = extra_peak(lambda: embedder.transform(texts))
    print(json.dumps({"extra": extra, "batch": batch, "output": out.nbytes, "rows": len(out)}))
    """
)


# glibc's default mmap threshold. Set explicitly, it stops glibc from raising the threshold
# each time a large block is freed; with the moving threshold, the forward passes' freed
# buffers are kept in the heap and the same run peaks anywhere from 1x to 3x higher from one
# try to the next (measured: 96 to 271 MB of extra peak for the corpus workload).
FIXED_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(
    workload: str, n: int, cache: str = "on", warm_up: str = "cold", allocator: str = "fixed"
) -> dict[str, int]:
    """Run one workload in a fresh interpreter and return its peak-memory figures.

    ``allocator="fixed"`` runs the child with glibc's mmap threshold pinned at its default
    (``FIXED_ALLOCATOR``): the figures are then what skembed allocates, the same from run to
    run. ``"default"`` leaves glibc as it is: the figures then include what glibc retains.
    """
    import os
    from pathlib import Path

    folder = str(Path(__file__).resolve().parent)
    env = {**os.environ, **(FIXED_ALLOCATOR if allocator == "fixed" else {})}
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHILD, workload, folder, str(n), cache, warm_up],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        env=env,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", type=int, default=150, help="texts of 100k CJK characters")
    parser.add_argument("--corpus", type=int, default=20_000, help="texts of the STSb corpus")
    parser.add_argument(
        "--allocator",
        choices=["fixed", "default"],
        default="fixed",
        help="glibc mmap threshold pinned (repeatable figures) or left to move (default: fixed)",
    )
    args = parser.parse_args()
    print(f"allocator: {args.allocator}")
    for warm_up in ("cold", "model"):
        huge = measure("huge", args.huge, "on", warm_up, args.allocator)
        print(
            f"huge,   warm-up {warm_up:5s}: {args.huge} texts of 100k CJK characters, "
            f"extra peak {huge['extra'] / 2**20:.0f} MiB"
        )
        for cache in ("on", "off"):
            m = measure("corpus", args.corpus, cache, warm_up, args.allocator)
            print(
                f"corpus, warm-up {warm_up:5s}: {args.corpus} texts, cache {cache:3s}: output "
                f"{m['output'] / 2**20:.1f} MiB, extra peak {m['extra'] / 2**20:.1f} MiB "
                f"= {m['extra'] / m['output']:.2f}x output (one batch alone: "
                f"{m['batch'] / 2**20:.1f} MiB; extra minus batch "
                f"{(m['extra'] - m['batch']) / m['output']:.2f}x output)"
            )


if __name__ == "__main__":
    main()
