#!/usr/bin/env bash
# Reproduce the shipped age estimator (models/age-estimator.safetensors) from UTKFace with
# facecomp's own prepare + train-age, then re-measure the default model's age calibration.
# The crops use the generators' framing and holdout split (same --size/--template/--holdout as
# scripts/make_model.sh), so faces held out from the generators are held out here too.
#   UTKFACE=../shared/datasets/utkface WORK=$HOME/facecomp-work scripts/make_age_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FC=${FACECOMP:-.venv/bin/facecomp}
PY=${PYTHON:-.venv/bin/python}
DATA=${UTKFACE:-../shared/datasets/utkface}
WORK=${WORK:-$HOME/facecomp-work}
"$FC" prepare "$DATA" "$WORK/all" --size 128 --template facecomp-tight --max-outside 0.4 \
  --holdout 0.05
"$FC" train-age "$WORK/all" --out "$WORK/run-age"
# Ship: fp16 weights with the metadata (held-out MAE per band, licence, training config).
"$PY" -c "import sys; from facecomp.stages.age import ship_estimator; ship_estimator(*sys.argv[1:])" \
  "$WORK/run-age/age-estimator.safetensors" models/age-estimator.safetensors
# The default model's domains, as folders of the same crops (hard links, by age in the name).
"$PY" scripts/split_by_age.py "$WORK/all" "$WORK/young" 18-30
"$PY" scripts/split_by_age.py "$WORK/all" "$WORK/old" 55-80
"$FC" calibrate --model aging --a "$WORK/young" --b "$WORK/old"
echo "estimator: models/age-estimator.safetensors (then: make golden)"
