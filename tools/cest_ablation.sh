#!/usr/bin/env bash
# CEST's ablation (issue #13, docs/cest.md "Training and results"): CEST and IEST, each with and
# without the reflectance symmetry and the cross-frame consistency terms, trained the same way
# (train/configs/cest_open.yaml without its light-level prior: 400 steps x 4 identity groups of 3
# photos from MoFA's weights; the config itself, with the prior, is runs/cest_open),
# two runs at a time (2 CPU cores, one torch thread each), then scored on the held-out groups.
#   bash tools/cest_ablation.sh            # runs/ablation/<name>/final.pt, runs/ablation/table.md
# The committed network's architecture (train/configs/cest_open_fast.yaml: face window, splat, shared stem):
#   OUT=runs/ablation_fast EXTRA="model.window_size=32 model.unwrap_splat_cells=48 model.shared_stem=true" \
#     bash tools/cest_ablation.sh
# Needs the identity-group corpus named in the config (its first comment says how to write it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/ablation}
read -r -a EXTRA <<< "${EXTRA:-}"  # more overrides for every run
mkdir -p "$OUT"
run() {  # name, overrides...
  local name=$1; shift
  if [ -f "$OUT/$name/final.pt" ]; then echo "$name: done"; return; fi
  OMP_NUM_THREADS=1 $PY -m engine.train --config train/configs/cest_open.yaml run_dir="$OUT/$name" \
    model.losses.light_level=0 "${EXTRA[@]}" "$@" \
    > "$OUT/$name.log" 2>&1
  echo "$name: $(tail -n 1 "$OUT/$name.log" | cut -c1-120)"
}
S0=model.losses.reflectance_symmetry=0
C0=model.losses.clip_consistency=0
IE=model.independent=true
run cest_full & run iest_full "$IE" & wait
run cest_free "$S0" "$C0" & run iest_free "$IE" "$S0" "$C0" & wait
run cest_nosym "$S0" & run iest_nosym "$IE" "$S0" & wait
run cest_noclip "$C0" & run iest_noclip "$IE" "$C0" & wait
if [ ! -f runs/cest_open/final.pt ]; then
  OMP_NUM_THREADS=1 $PY -m engine.train --config train/configs/cest_open.yaml > runs/cest_open.log 2>&1
fi
ckpts=(--checkpoint runs/cest_open/final.pt --checkpoint engine/assets/cest_open_default.pt)
for n in cest_full cest_nosym cest_noclip cest_free iest_full iest_nosym iest_noclip iest_free; do
  ckpts+=(--checkpoint "$OUT/$n/final.pt")
done
OMP_NUM_THREADS=1 $PY -m engine.eval reflectance "${ckpts[@]}" --checkpoint engine/assets/mofa_open_default.pt \
  --n 48 --cache runs/realistic_ids --quiet --report "$OUT/table.json" | tee "$OUT/table.md"
