"""Peak memory of SentenceEmbedder.transform, relative to its output, with all-MiniLM-L6-v2.

Two workloads, each in a fresh subprocess with the model loaded (``fit``) before the
measurement, so its weights are not counted:

- ``huge``: 150 texts of 100,000 CJK characters (only their first 256 tokens are kept);
- ``corpus``: the first 20,000 texts of the ``encode_gpu.py`` corpus (STSb sentences).

The extra peak is the process's high-water mark (VmHWM, reset just before) minus its resident
size just before ``transform``; Linux only (reads /proc/self/status). Each workload is measured
after two warm-ups: ``cold``, one short text (the forward pass's working memory for long inputs
is then part of the figure), and ``model``, one batch of texts as long as the workload's longest
(the model's working memory is then allocated before, and the figure is what ``transform`` adds
to the model). The corpus also runs with the in-process embedding cache off; with it on, the
cache keeps its own copy of the embeddings, which the figure includes.

    python benchmarks/encode_memory.py
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
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = status("VmRSS")
    out = embedder.transform(texts)
    print(json.dumps({"extra": status("VmHWM") - before, "output": out.nbytes, "rows": len(out)}))
    """
)


def measure(workload: str, n: int, cache: str = "on", warm_up: str = "cold") -> dict[str, int]:
    """Run one workload in a fresh interpreter and return its peak-memory figures."""
    from pathlib import Path

    folder = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHILD, workload, folder, str(n), cache, warm_up],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", type=int, default=150, help="texts of 100k CJK characters")
    parser.add_argument("--corpus", type=int, default=20_000, help="texts of the STSb corpus")
    args = parser.parse_args()
    for warm_up in ("cold", "model"):
        huge = measure("huge", args.huge, "on", warm_up)
        print(
            f"huge,   warm-up {warm_up:5s}: {args.huge} texts of 100k CJK characters, "
            f"extra peak {huge['extra'] / 2**20:.0f} MiB"
        )
        for cache in ("on", "off"):
            m = measure("corpus", args.corpus, cache, warm_up)
            print(
                f"corpus, warm-up {warm_up:5s}: {args.corpus} texts, cache {cache:3s}: output "
                f"{m['output'] / 2**20:.1f} MiB, extra peak {m['extra'] / 2**20:.1f} MiB "
                f"= {m['extra'] / m['output']:.2f}x output"
            )


if __name__ == "__main__":
    main()
