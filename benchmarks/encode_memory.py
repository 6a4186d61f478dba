"""Peak memory of SentenceEmbedder.transform, relative to its output, with all-MiniLM-L6-v2.

Two workloads, each in a fresh subprocess with the model loaded (``fit``) before the
measurement, so the model is not counted:

- ``huge``: 150 texts of 100,000 CJK characters (only their first 256 tokens are kept);
- ``corpus``: the first 20,000 texts of the ``encode_gpu.py`` corpus (STSb sentences).

The extra peak is the process's high-water mark (VmHWM) minus its resident size just before
``transform``; Linux only (reads /proc/self/status). Both runs use the in-process embedding cache
as a user would (it keeps one copy of the embeddings, included in the figure).

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

    workload, n = sys.argv[1], int(sys.argv[3])
    if workload == "huge":
        texts = [chr(0x4E00 + i) * 100_000 for i in range(n)]
    else:
        from encode_gpu import corpus
        texts = corpus()[:n]
    embedder = SentenceEmbedder(device="cpu").fit()
    embedder.transform(["warm up the kernels and the tokenizer"])
    before = status("VmRSS")
    out = embedder.transform(texts)
    print(json.dumps({"extra": status("VmHWM") - before, "output": out.nbytes, "rows": len(out)}))
    """
)


def measure(workload: str, n: int) -> dict[str, int]:
    """Run one workload in a fresh interpreter and return its peak-memory figures."""
    from pathlib import Path

    folder = str(Path(__file__).resolve().parent)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CHILD, workload, folder, str(n)],
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
    huge = measure("huge", args.huge)
    print(
        f"huge:   {args.huge} texts of 100k CJK characters: extra peak {huge['extra'] / 2**20:.0f} MiB"
    )
    corpus = measure("corpus", args.corpus)
    print(
        f"corpus: {args.corpus} texts: output {corpus['output'] / 2**20:.1f} MiB, extra peak "
        f"{corpus['extra'] / 2**20:.1f} MiB = {corpus['extra'] / corpus['output']:.2f}x output"
    )


if __name__ == "__main__":
    main()
