#!/usr/bin/env bash
# Issue 19's GPU checks in one run on a lent GPU machine (docs/performance.md, "On a GPU").
#
# Here, first (package registries only): bash benchmarks/gpu_wheels.sh   # the missing packages, into .whl/
# Then, with the device tool:             run(command="bash benchmarks/gpu.sh", carry=[".whl"], timeout_s=600)
#
# In order of importance, each check within what is left of BUDGET seconds (a device call may run
# 10 minutes): the versions; the protocol against stock diffusers (fp16, 512², 20 steps DPM++ 2M
# Karras; a random SD 1.5 checkpoint built there); the default path and `--speed fast` on the demo
# model against the CPU's fp32 pictures (same seeds: the noise is drawn on the CPU); the speed
# features at 1024²; `--compile`, plain and with CUDA graphs. A failed check is logged and the
# next one runs: one try gives every figure it can. Everything goes to $OUT/gpu.log.
set -u
BUDGET=${BUDGET:-540}
OUT_DIR=${OUT:-/tmp/emaki-gpu}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu.log"
cd "$(dirname "$0")/.."

section() { echo; echo "== $1 ($((BUDGET - SECONDS)) s left)"; }
# Runs the command with at most $1 seconds, and never past the budget.
bounded() {
    local most=$1; shift
    local left=$((BUDGET - SECONDS))
    if ((left < 20)); then echo "skipped: the budget is spent"; return 0; fi
    timeout $((most < left ? most : left)) "$@" || echo "exit $? (124: out of time)"
}

{
    section "setup"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "no wheels: run benchmarks/gpu_wheels.sh here first and carry .whl"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 EMAKI_HOME=/tmp/emaki-home
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
    nproc

    section "the protocol: emaki vs stock diffusers, fp16, 512², 20 steps"
    bounded 240 python3 benchmarks/generate.py --device cuda --sizes 512 --steps 20 --precisions fp16 \
        --vs-diffusers exact fast

    section "the demo model: the GPU's default path and --speed fast against the CPU's fp32 pictures"
    bounded 150 python3 benchmarks/speed_quality.py --n 30 --steps 20 --threads 8 --device cuda --precision auto \
        --reference-device cpu --reference-precision fp32 --variants default precision=fp32 fast

    section "speed features at 1024², fp16"
    bounded 150 python3 benchmarks/generate.py --device cuda --sizes 1024 --steps 20 --precisions fp16 \
        --features exact ngms-all gate cache2 tome fast

    section "--compile, plain and with CUDA graphs, 512² (s/step: the first step compiles)"
    bounded 300 python3 benchmarks/generate.py --device cuda --sizes 512 --steps 20 --precisions fp16 \
        --features exact compile compile-graphs
    section "done"
} 2>&1 | tee "$LOG"
