#!/usr/bin/env bash
# The GPU check: everything this project wants measured or tried on a CUDA GPU, in one go.
#
#     benchmarks/gpu_check.sh OUTFILE
#
# Run from anywhere on a machine with a CUDA GPU (one is enough), with the project installed with
# its test extra (`make install-test`, or `pip install -e ".[test]"`; the `bench` extra adds
# lightly to the NT-Xent comparison). It writes every figure and every failure to OUTFILE and
# takes at most GPU_CHECK_BUDGET seconds (default 470, under 8 minutes): each step has a time
# limit, and a step that fails or runs out of time is recorded and the next one runs.
#
# Steps: a folder of JPEG photos (256-512 px, generated); the CUDA-only tests (pytest -m gpu);
# the NT-Xent tests on the GPU; resnet50 pretraining at 224 px with bf16 for GPU_CHECK_STEPS
# steps (default 40; images/s, data wait, peak GPU memory), the same with --accumulate 4, and with
# --precision fp16; the NT-Xent benchmark, fused against chunked (and lightly, when installed) at
# N = 4096 to 65536 pairs, time and peak memory, and fused against chunked at D = 2048.
#
# Without a CUDA GPU it prints one line saying so (also written to OUTFILE) and exits 0; with one
# it exits 1 when a step failed or was skipped.
# PYTHON selects the interpreter (default: the repository's .venv, else python3).
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: benchmarks/gpu_check.sh OUTFILE" >&2
    exit 2
fi
case $1 in
    /*) OUTFILE=$1 ;;
    *) OUTFILE=$PWD/$1 ;;
esac
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 1

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PYTHON cannot import torch; install the project (make install-test) or set PYTHON" >&2
    exit 1
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    line="gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to measure."
    echo "$line"
    echo "$line" >"$OUTFILE"
    exit 0
fi

BUDGET=${GPU_CHECK_BUDGET:-470}
STEPS=${GPU_CHECK_STEPS:-40}
DEADLINE=$((SECONDS + BUDGET))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/simclr_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
FAILED=0

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND for at most LIMIT seconds (less when the
# budget is nearly spent), appends its output to OUTFILE and a line saying how it ended.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    printf '\n## %s\n\n' "$name" >>"$OUTFILE"
    if [ "$left" -lt 20 ]; then
        echo "-> SKIPPED: the ${BUDGET} s budget is spent" | tee -a "$OUTFILE"
        FAILED=$((FAILED + 1))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "gpu_check: $name (at most ${limit} s)"
    local started=$SECONDS status
    timeout --kill-after=15 "$limit" "$@" >"$WORK/step.log" 2>&1
    status=$?
    cat "$WORK/step.log" >>"$OUTFILE"
    local took=$((SECONDS - started)) verdict
    if [ "$status" -eq 0 ]; then
        verdict="-> ok (${took} s)"
    elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        verdict="-> FAILED: stopped at its limit of ${limit} s"
    else
        verdict="-> FAILED (exit $status, ${took} s): $(grep -v '^[[:space:]]*$' "$WORK/step.log" | tail -n 1)"
    fi
    [ "$status" -eq 0 ] || FAILED=$((FAILED + 1))
    echo "$verdict" | tee -a "$OUTFILE"
}

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
    "$PYTHON" -c "
import os, platform, torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = 'not installed'
print(f'Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'triton {triton_version}, {os.cpu_count()} CPU cores; GPU 0: {torch.cuda.get_device_name(0)}, '
      f'bf16 {torch.cuda.is_bf16_supported()}')
"
    echo "budget ${BUDGET} s, pretraining ${STEPS} steps"
} >"$OUTFILE" 2>&1

IMAGES=$WORK/images
PRETRAIN=(--backbone resnet50 --image-size 224 --batch-size 256 --max-steps "$STEPS"
    --log-every 10 --cache off --checkpoint-every 100000)

step "Images" 45 "$PYTHON" benchmarks/gpu_check.py images "$IMAGES" --count 2560
step "CUDA-only tests (pytest -m gpu)" 75 \
    "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests
step "NT-Xent kernels on the GPU (tests/core/loss/test_kernels.py)" 75 \
    "$PYTHON" -m pytest -q -p no:cacheprovider -m "not gpu" tests/core/loss/test_kernels.py
step "Pretraining, resnet50, 224 px, batch 256, bf16 (--cache off: JPEGs decoded every epoch)" 60 \
    "$PYTHON" benchmarks/gpu_check.py pretrain bf16 -- "$IMAGES" --out "$WORK/run_bf16" \
    "${PRETRAIN[@]}" --precision bf16
step "Pretraining, the same with --accumulate 4" 60 \
    "$PYTHON" benchmarks/gpu_check.py pretrain "bf16 accumulate 4" -- "$IMAGES" \
    --out "$WORK/run_accumulate" "${PRETRAIN[@]}" --precision bf16 --accumulate 4
step "Pretraining, the same with --precision fp16" 60 \
    "$PYTHON" benchmarks/gpu_check.py pretrain fp16 -- "$IMAGES" --out "$WORK/run_fp16" \
    "${PRETRAIN[@]}" --precision fp16
step "NT-Xent, D = 128, float32: fused, chunked, lightly (time, peak memory)" 150 \
    "$PYTHON" benchmarks/nt_xent.py --device cuda --rounds 1 --inner 2 \
    --implementations lightly,chunked,fused --gpu-pairs 4096,16384,65536
step "NT-Xent, D = 2048, float32: fused against chunked" 45 \
    "$PYTHON" benchmarks/nt_xent.py --device cuda --rounds 1 --inner 2 --dim 2048 \
    --implementations chunked,fused --gpu-pairs 8192

printf '\n%s step(s) failed or were skipped; %s s in all.\n' "$FAILED" "$SECONDS" | tee -a "$OUTFILE"
echo "gpu_check: figures in $OUTFILE"
[ "$FAILED" -eq 0 ]
