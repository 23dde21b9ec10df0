#!/usr/bin/env bash
# Reproduce the default young <-> old model from UTKFace with facecomp's own prepare + train.
# Re-running continues where it stopped (prepare skips done files; train resumes exactly).
# Train on a CUDA GPU: the shipped run (11,400 steps of batch 8) took 18.5 min on an H100; a
# 2-core CPU (5.5 s per step) would need ~17 hours.
#   UTKFACE=../shared/datasets/utkface WORK=$HOME/facecomp-work scripts/make_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FC=${FACECOMP:-.venv/bin/facecomp}
DATA=${UTKFACE:-../shared/datasets/utkface}
WORK=${WORK:-$HOME/facecomp-work}
PREP=(--size 128 --template facecomp-tight --max-outside 0.4 --holdout 0.05)
"$FC" prepare "$DATA" "$WORK/young" "${PREP[@]}" --age 18-30
"$FC" prepare "$DATA" "$WORK/old" "${PREP[@]}" --age 55-80
if [ -f "$WORK/run-aging/train_state.pt" ]; then
  "$FC" train --out "$WORK/run-aging" --resume
else
  "$FC" train --config models/aging.train.json --a "$WORK/young" --b "$WORK/old" \
    --out "$WORK/run-aging"
fi
echo "run: $WORK/run-aging"
# Ship: fp16 copies with the model card's description and licence (then: make golden).
.venv/bin/python scripts/ship_model.py "$WORK/run-aging" --name aging
