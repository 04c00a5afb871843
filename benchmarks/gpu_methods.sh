#!/usr/bin/env bash
# Training throughput of the CEST and DECA methods on a GPU at their real sizes (224 px,
# ResNet-18; CEST clips of 4 frames with a 128-texel UV U-Net), data from the synthetic
# generator on the fly (loader processes on the box's cores), bf16. Also the first CUDA run of
# both methods' training steps. Writes one log per method and prints each run's last lines.
#
#   bash benchmarks/gpu_methods.sh [OUT_DIR]   # default: $OUT (device tool) or runs/gpu_methods
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu_methods}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
W=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
STEPS=${STEPS:-40}
LIMIT=${LIMIT:-90}
run() {  # run NAME CONFIG OVERRIDES...
  local name=$1 cfg=$2; shift 2
  echo "== $name: $cfg $*"
  timeout "$LIMIT" "$PY" -m engine.train --config "$cfg" device=cuda amp=bf16 max_steps="$STEPS" \
    data.num_workers="$W" run_dir="runs/gpu_$name" progress=off log_every=10 eval_every=100000 \
    ckpt_every=100000 image_every=100000 "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $?"
  grep -E "images_per_s|Error|error" "$OUT/$name.log" | tail -n 3 | cut -c1-400
}
run cest train/configs/cest.yaml batch_size=16 data.image_size=224 model.backbone=resnet18 model.width=1.0 \
  model.uv_size=128 model.unet_width=32 model.light_width=16 model.visibility_size=64
run deca train/configs/deca_coarse.yaml batch_size=64 data.image_size=224 model.backbone=resnet18 model.width=1.0
