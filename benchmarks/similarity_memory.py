"""Peak memory of skembed.similarity on large inputs, relative to the size of its output.

Each metric runs in a fresh subprocess on random float32 data of shape (n, 384), compared with
itself; the extra peak memory is the process's high-water mark (VmHWM) minus its resident size
just before the call. Linux only (reads /proc/self/status).

    python benchmarks/similarity_memory.py --n 50000 --metrics cosine euclidean
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from skembed import similarity

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    n, metric = int(sys.argv[1]), sys.argv[2]
    x = np.random.default_rng(0).standard_normal((n, 384), dtype=np.float32)
    similarity(x[:1000], x[:500], metric=metric)  # start the kernels and their thread pool
    before = status("VmRSS")
    start = time.perf_counter()
    out = similarity(x, metric=metric)
    seconds = time.perf_counter() - start
    print(json.dumps({"extra": status("VmHWM") - before, "output": out.nbytes, "seconds": seconds}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--metrics", nargs="+", default=["cosine", "dot", "euclidean"])
    args = parser.parse_args()
    for metric in args.metrics:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(args.n), metric],
            capture_output=True,
            text=True,
            check=True,
        )
        m = json.loads(result.stdout)
        print(
            f"{metric:10s} n={args.n}: output {m['output'] / 2**30:.2f} GiB, extra peak "
            f"{m['extra'] / 2**30:.2f} GiB = {m['extra'] / m['output']:.3f}x output, "
            f"{m['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
