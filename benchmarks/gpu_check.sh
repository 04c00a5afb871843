#!/usr/bin/env bash
# The GPU check of issue #18, one prepared script for a CUDA machine with PyTorch installed and
# no network (it installs nothing): CUDA tests, then the benchmark table, into one folder.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # default: $OUT if set (device tool), else runs/gpu_check
#
# The open head model is a build product (gitignored): bring engine/assets/open_head.npz along
# (the device tool: carry ["engine/assets/open_head.npz"]). MediaPipe (the video step's tracker)
# is not on the device image: wheels in .whl/ (mediapipe 0.10.21 and protobuf 4.25 for the
# device's Python, docs/gpu.md) are installed into /tmp/site for the video step alone. At most
# ~9.5 minutes on an H100/H200; every step has its own time limit, and a step that fails is
# recorded and skipped.
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
step cuda_tests 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py
# 2. Figures (each appends JSON records to records.jsonl); the table is rewritten after each.
table() { "$PY" benchmarks/gpu_table.py "$REC" > "$OUT/table.md" 2>&1; }
PROF=${PROFILE:-0}   # PROFILE=N: also print each benchmark's N most expensive operators
step train_bench 90 "$PY" benchmarks/train_benchmark.py --device cuda --batch 256 --infer-batch 1024 --steps 20 \
  --profile "$PROF" --json "$REC"; table
step train_shipped 60 "$PY" benchmarks/train_benchmark.py --device cuda --backbone resnet10 --width 0.5 --size 128 \
  --batch 256 --infer-batch 1024 --steps 20 --json "$REC"; table
step render_bench 80 "$PY" benchmarks/render_benchmark.py --device cuda --batches 1 256 1024 --iters 10 \
  --profile "$PROF" --json "$REC"; table
step fit_bench 60 "$PY" benchmarks/fit_benchmark.py --device cuda --n 5 --no-reconstruct --profile "$PROF" \
  --json "$REC"; table
if [ -f benchmarks/video_benchmark.py ]; then
  VPATH=$PYTHONPATH
  if ls .whl/*.whl > /dev/null 2>&1 && ! "$PY" -c "import mediapipe" 2> /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      > "$OUT/wheels.log" 2>&1 && VPATH=/tmp/site:$PYTHONPATH
  fi
  step video_bench 110 env PYTHONPATH="$VPATH" "$PY" benchmarks/video_benchmark.py speed --device cuda \
    --methods mofa hybrid --frames 90 --json "$REC"; table
fi
# 3. Optional (COMPILE=1), last: the training step under torch.compile (compilation not timed;
#    on an H200 it had not finished compiling within 90 s).
if [ "${COMPILE:-0}" = 1 ]; then
  step train_compiled 150 "$PY" benchmarks/train_benchmark.py --device cuda --batch 256 --infer-batch 1024 \
    --steps 20 --compile --json "$REC"
fi
table; cat "$OUT/table.md"
# the device tool brings back at most 8 files: the step logs go into one
for f in "$OUT"/*.log; do [ -f "$f" ] && { echo "######## $(basename "$f")"; cat "$f"; rm -f "$f"; }; done > "$OUT/logs.txt"
