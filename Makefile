# facecomp — set-up, tests and demo on a fresh machine (needs python3 >= 3.10 and make).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: help setup test demo model-placeholder clean

help:
	@echo "make setup   create $(VENV) and install facecomp into it (with test tools)"
	@echo "make demo    run facecomp on samples/group.jpg with the shipped default model"
	@echo "make test    run the test suite (CPU, a few minutes)"

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/facecomp photo samples/group.jpg -o demo-out/group.facecomp.jpg --overwrite --debug
	$(PY) scripts/before_after.py samples/group.jpg demo-out/group.facecomp.jpg demo-out/before_after.jpg
	@echo "demo: see demo-out/group.facecomp.jpg, its .debug.jpg and demo-out/before_after.jpg"

model-placeholder: setup
	$(PY) scripts/make_placeholder.py

clean:
	rm -rf demo-out .pytest_cache
