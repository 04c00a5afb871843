#!/usr/bin/env bash
# The GPU check of issue #18, one prepared script for a CUDA machine with PyTorch installed and
# no network (it installs nothing): CUDA tests, then the benchmark table, into one folder.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # default: $OUT if set (device tool), else runs/gpu_check
#
# The open head model is a build product (gitignored): bring engine/assets/open_head.npz along
# (the device tool: carry ["engine/assets/open_head.npz"]). About 6 minutes on an H100/H200;
# every step has its own time limit, and a step that fails is recorded and skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
REC="$OUT/records.jsonl"
: > "$REC"
step() {  # step NAME SECONDS CMD...: run with a time limit, log to OUT/NAME.log, note failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 3 "$OUT/$name.log" | sed 's/^/   /' | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || echo "   !! $name exited with $rc" | tee -a "$OUT/summary.txt"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; "$PY" -c \
  "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__, \
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ ! -f engine/assets/open_head.npz ]; then
  echo "engine/assets/open_head.npz is missing: build it here with python -m engine.head.build.open_head, or carry it" \
    | tee -a "$OUT/summary.txt"
fi
# 1. CUDA tests: renderer fwd/bwd CUDA vs CPU, fit on CUDA vs CPU, bf16 and fp16+GradScaler steps,
#    a checkpoint saved on CUDA resumed on the CPU, the learned network's codes.
step cuda_tests 240 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
# 2. Figures (each appends JSON records to records.jsonl).
step train_bench 120 "$PY" benchmarks/train_benchmark.py --device cuda --batch 256 --infer-batch 1024 --steps 20 --json "$REC"
step render_bench 120 "$PY" benchmarks/render_benchmark.py --device cuda --batches 1 256 1024 --iters 10 --json "$REC"
step fit_bench 90 "$PY" benchmarks/fit_benchmark.py --device cuda --n 5 --no-reconstruct --json "$REC"
if [ -f benchmarks/video_benchmark.py ]; then
  step video_bench 120 "$PY" benchmarks/video_benchmark.py speed --device cuda --methods mofa hybrid --frames 90 --json "$REC"
fi
"$PY" benchmarks/gpu_table.py "$REC" | tee "$OUT/table.md"
