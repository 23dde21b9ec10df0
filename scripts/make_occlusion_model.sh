#!/usr/bin/env bash
# Reproduce the shipped occlusion model (models/occlusion.safetensors) from UTKFace: facecomp's
# own prepare (the default model's framing, as scripts/make_age_model.sh), then
# scripts/train_occlusion.py with synthetic occluders, then an fp16 copy into models/.
#   UTKFACE=../shared/datasets/utkface WORK=$HOME/facecomp-work scripts/make_occlusion_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FC=${FACECOMP:-.venv/bin/facecomp}
PY=${PYTHON:-.venv/bin/python}
DATA=${UTKFACE:-../shared/datasets/utkface}
WORK=${WORK:-$HOME/facecomp-work}
if [ ! -d "$WORK/all" ]; then
  "$FC" prepare "$DATA" "$WORK/all" --size 128 --template facecomp-tight --max-outside 0.4 \
    --holdout 0.05
fi
"$PY" scripts/train_occlusion.py "$WORK/all" --out "$WORK/run-occlusion" --steps 2000 --threads 1
"$PY" -c "import sys; from facecomp.stages.occlusion import ship_occlusion; ship_occlusion(*sys.argv[1:])" \
  "$WORK/run-occlusion/occlusion.safetensors" models/occlusion.safetensors
echo "occlusion model: models/occlusion.safetensors (preview: $WORK/run-occlusion/preview.png)"
