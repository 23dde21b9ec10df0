# facecomp — set-up, tests and demo on a fresh machine (needs python3 >= 3.10 and make).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help setup test demo bench model age-model occlusion-model golden clean

help:
	@echo "make setup   create $(VENV) and install facecomp into it (with test tools)"
	@echo "make demo    run facecomp on samples/group.jpg with the shipped default model"
	@echo "make test    run the test suite (CPU, a few minutes)"
	@echo "make bench   benchmark every stage into bench/results.json (~10 min on 2 CPU cores)"
	@echo "make model   prepare UTKFace and train the age model (long; re-run to resume)"
	@echo "make age-model  prepare UTKFace and train the age estimator (~30 min on 2 CPU cores)"
	@echo "make occlusion-model  train the occlusion model on UTKFace crops (~25 min on 1 core)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,eval]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/facecomp photo samples/group.jpg -o demo-out/group.facecomp.jpg --overwrite --debug
	$(PY) scripts/before_after.py samples/group.jpg demo-out/group.facecomp.jpg demo-out/before_after.jpg
	@echo "demo: see demo-out/group.facecomp.jpg, its .debug.jpg and demo-out/before_after.jpg"

# Speed of every stage, as ratios measured within one run; see bench/README.md.
bench: setup
	$(PY) bench/bench.py --out bench/results.json

# Train the default young <-> old model from UTKFace (hours on a CPU; re-run to resume).
model: setup
	scripts/make_model.sh

# Train the age estimator that evaluate, calibrate and --age use, from UTKFace (all ages).
age-model: setup
	scripts/make_age_model.sh

# Train the occlusion model that keeps hands, glasses frames, masks ... over faces (UTKFace).
occlusion-model: setup
	scripts/make_occlusion_model.sh

# Regenerate tests/golden after an intended change of the shipped weights or processing.
golden: setup
	$(PY) scripts/make_golden.py

clean:
	rm -rf demo-out .pytest_cache
