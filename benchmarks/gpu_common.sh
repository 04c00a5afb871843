# Shared by the GPU training scripts (benchmarks/gpu_train.sh, benchmarks/gpu_detail.sh); sourced.

# gpu_setup DEFAULT_OUT [OUT_DIR]: into the repository root; OUT = OUT_DIR, else $OUT (the device
# tool's), else DEFAULT_OUT, created; PY (the Python, $PYTHON or python3), CORES; the repository
# on PYTHONPATH and Python's output unbuffered.
gpu_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
  OUT=${2:-${OUT:-$1}}
  mkdir -p "$OUT"
  PY=${PYTHON:-python3}
  export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  CORES=$(nproc)
}

# export_run RUN NAME LOG: the run's final.pt (else its newest checkpoint: a run stopped by its
# time limit) exported in fp16 as $OUT/NAME, and its metrics.jsonl and config.yaml copied to $OUT.
export_run() {
  local run=$1 name=$2 log=$3 ckpt
  ckpt="$run/final.pt"
  [ -f "$ckpt" ] || ckpt=$(ls -1 "$run"/checkpoints/ckpt_*.pt 2> /dev/null | tail -n 1)
  if [ -n "$ckpt" ]; then
    "$PY" -m engine.train export "$ckpt" "$OUT/$name" --half >> "$log" 2>&1 && echo "exported $ckpt" | tee -a "$log"
  fi
  cp "$run/metrics.jsonl" "$run/config.yaml" "$OUT/" 2> /dev/null
}
