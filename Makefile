# The README's commands. `make run` and `make test` each set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Torch is installed pinned, before anything that depends on it, so no resolver pulls CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
# Every other package at the version the tests passed with (see `make lock`).
LOCK := constraints.txt
export GPTFF_MODEL_DIR ?= $(abspath ../shared/models)

.PHONY: setup gpaw run test lint bench lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint $(LOCK) --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	PIP_CONSTRAINT=$(abspath $(LOCK)) $(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# GPAW, the in-process DFT labeller (the `labels` extra). Its C extension is built serial (no
# MPI, ScaLAPACK or FFTW) against libxc and OpenBLAS, as tools/gpaw_siteconfig.py says: GPAW reads
# that file through GPAW_CONFIG, and without it picks MPI whenever an `mpicc` exists and fails.
# The libraries' headers come from apt-get when they are missing (needs root; elsewhere install
# libxc and OpenBLAS development files yourself). The PAW setups come from gpaw-data.
GPAW_LIBS := libxc-dev libopenblas-dev

gpaw: $(VENV)/.gpaw-installed

$(VENV)/.gpaw-installed: $(VENV)/.installed tools/gpaw_siteconfig.py
	@if command -v dpkg-query >/dev/null && [ "$$(dpkg-query -W -f='$${Status}\n' $(GPAW_LIBS) \
	    2>/dev/null | grep -c 'install ok installed')" = "$(words $(GPAW_LIBS))" ]; then \
	  echo "make gpaw: $(GPAW_LIBS) installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(GPAW_LIBS); \
	else echo "make gpaw: cannot apt-get $(GPAW_LIBS) here; the build needs libxc and OpenBLAS headers"; fi
	GPAW_CONFIG=$(abspath tools/gpaw_siteconfig.py) PIP_CONSTRAINT=$(abspath $(LOCK)) \
	  $(PY) -m pip install --quiet -e ".[labels]"
	$(PY) -c "import gpaw, gpaw_data; print('GPAW', gpaw.__version__, 'setups in', gpaw.setup_paths[0])"
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

# Refresh the lock on purpose: resolve pyproject.toml afresh in a new environment (torch pinned
# by TORCH_SPEC, never locked), write every resolved version to $(LOCK), then rebuild .venv from
# it and run the tests. Commit $(LOCK) only if they pass.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install --quiet -e ".[dev]"
	GPAW_CONFIG=$(abspath tools/gpaw_siteconfig.py) .lock-venv/bin/python -m pip install --quiet -e ".[labels]"
	.lock-venv/bin/python tools/write_lock.py .lock-venv/bin/python $(LOCK)
	rm -rf .lock-venv $(VENV)
	$(MAKE) test

clean:
	rm -rf $(VENV) .lock-venv .pytest_cache .ruff_cache *.egg-info
