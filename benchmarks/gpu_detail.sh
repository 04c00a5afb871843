#!/usr/bin/env bash
# A longer DECA detail run on a GPU box (issue #14; it made v3, train/configs/deca_detail_v3.yaml,
# whose values are the defaults below): the committed detail network
# (engine/assets/deca_open_default.pt) trained further with deca_detail_v3.yaml's data and
# terms, on the GPU, the realistic faces (pairs of views of one person, with wrinkles) rendered
# on the fly by loader processes on the box's cores (the stage is bound by that rendering).
#
#   bash benchmarks/gpu_detail.sh [OUT_DIR]    # default: $OUT if set (device tool), else runs/gpu_detail
#
# Knobs (environment): SEED (data.seed, 5555: faces v1 and v2 never saw), STEPS (max_steps, 2000), BATCH (pairs per step, 12), LR (4e-4),
# WORKERS (loader processes, default: cores - 2), LIMIT (s, the training's time limit, 520),
# DEVICE (cuda), AMP (bf16), INIT (the start, the committed network). A run stopped by LIMIT
# exports its newest checkpoint (one every CKPT steps, 100). OUT gets the exported network
# (deca_gpu.pt, fp16), metrics.jsonl, the run's config and the log.
# With the device tool: run(command="bash benchmarks/gpu_detail.sh", carry=["engine/assets/open_head.npz"]).
# A run stopped by LIMIT resumes exactly: the same engine.train command with the same run_dir
# (the machine still warm; docs/deca.md "v3" shows the two calls).
set -uo pipefail
source "$(dirname "$0")/gpu_common.sh"
gpu_setup runs/gpu_detail "$@"
RUN=${RUN:-runs/gpu_detail_run}
LOG="$OUT/train_log.txt"
rm -rf "$RUN"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2> /dev/null
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; echo "cores $CORES"; } | tee "$LOG"
t0=$(date +%s)
timeout "${LIMIT:-520}" "$PY" -m engine.train --config train/configs/deca_detail_v3.yaml \
  device="${DEVICE:-cuda}" amp="${AMP:-bf16}" batch_size="${BATCH:-12}" max_steps="${STEPS:-2000}" \
  data.num_workers="${WORKERS:-$((CORES > 2 ? CORES - 2 : 1))}" run_dir="$RUN" \
  init_from="${INIT:-engine/assets/deca_open_default.pt}" optim.lr="${LR:-4.0e-4}" optim.warmup_steps=20 \
  data.seed="${SEED:-5555}" data.n_samples=40000 \
  eval_every=100000 ckpt_every="${CKPT:-100}" log_every=50 progress=off >> "$LOG" 2>&1
echo "training exited with $? after $(($(date +%s) - t0)) s" | tee -a "$LOG"
export_run "$RUN" deca_gpu.pt "$LOG"
grep -E "images_per_s" "$RUN/metrics.jsonl" 2> /dev/null | tail -n 1 | cut -c1-300
tail -n 3 "$LOG"
