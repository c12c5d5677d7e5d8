# README command 1: `make install`  — README command 2: `make test`
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --constraint constraints.txt

.PHONY: install test pinned bench-cpu quality clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) setuptools wheel
	$(PIP) torch torchvision
	# basicsr's setup.py imports torch: build it against the torch above, not a fresh one.
	$(PIP) --no-build-isolation basicsr
	$(PIP) --no-build-isolation -e '.[test,ray]'
	touch $@

test: install
	$(PY) -m pytest

# Regenerate tests/pinned/*.npz (each preset's fixed-seed output) on purpose; see the README's development section.
pinned: install
	$(PY) tests/pinned_outputs.py --write

# A CelebA-Test-style quality table on your aligned HQ faces: make quality HQ=DIR [METHODS="difface dr2"].
quality: install
	FACERESTORE=$(VENV)/bin/facerestore bash benchmarks/quality.sh "$(HQ)" $(METHODS)

# The CPU benchmarks behind the README's performance table (benchmarks/results/cpu-<date>/).
bench-cpu: install
	PYTHON=$(PY) bash benchmarks/cpu.sh

clean:
	rm -rf $(VENV) build *.egg-info
