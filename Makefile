# The README's commands. `make run` and `make test` each set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Torch is installed pinned, before anything that depends on it, so no resolver pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
export GPTFF_MODEL_DIR ?= $(abspath ../shared/models)

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	mkdir -p out
	$(VENV)/bin/gptff relax examples/NaCl_rattled.cif --fmax 0.02 --output out/NaCl_relaxed.cif
	$(VENV)/bin/gptff predict out/NaCl_relaxed.cif

test: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/neighbour_lists.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
