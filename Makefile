# Two entry points (see README): `make figures` (the main job) and `make test`.
# Both create or reuse a local virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# headless Chromium for the report's browser test (tests/test_report.py reads CHROMIUM)
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM

.PHONY: install strip-outputs browser figures robustness test test-fast bench gpu-check lab clean

# a torch build from another index before the rest, e.g. CPU only (without the 4.1 GB of CUDA libraries that
# PyPI's Linux torch pulls in):
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu     (or .../whl/cu126 for CUDA 12.6)
TORCH_INDEX ?=
TORCH_PINS  := $(shell sed -n 's/^ *"\(torch[a-z]*==[^"]*\)",*$$/\1/p' pyproject.toml)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet --index-url $(TORCH_INDEX) $(TORCH_PINS))
	$(PY) -m pip install --quiet -e '.[test]'
	$(MAKE) --no-print-directory strip-outputs
	touch $(STAMP)

## nbstripout as this clone's git filter (.gitattributes): notebooks saved with outputs are committed without
## them; --keep-id keeps the cell ids (nb02-03, ...) that the notebooks' cells are known by
strip-outputs:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  $(VENV)/bin/nbstripout --install --attributes .gitattributes && \
	  git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id' && \
	  git config diff.ipynb.textconv '"$(abspath $(PY))" -m nbstripout --keep-id -t' && \
	  echo "nbstripout: notebooks are stripped of outputs when staged (git config filter.nbstripout)"; \
	else echo "note: not a git clone, nbstripout filter not installed"; fi

install: $(STAMP)

## Debian's chromium for the report's browser test: installed when missing and run as root, else a note
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report's browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else \
	  echo "note: no Chromium at $(CHROMIUM): the report's browser test will be skipped" \
	       "(install it with 'sudo apt-get install chromium', or set CHROMIUM=/path/to/chromium)"; \
	fi

## the main job: every notebook on the default profile; figures copied to figures/
figures: $(STAMP)
	$(PY) -m histo_utils.run --profile default --publish figures

## the robustness study (not part of figures; ~40 min on 2 cores): the default profile once per seed in
## runs/robustness/seed_<n>/ (a rerun resumes), every headline per seed and its spread in figures/robustness/;
## REUSE="0=runs/default" takes the figures run as seed 0 instead of running it again
SEEDS ?= 0 1 2
REUSE ?=
robustness: $(STAMP)
	$(PY) -m histo_utils.robustness --profile default --seeds $(SEEDS) --out runs/robustness --publish figures \
	  $(if $(REUSE),--reuse $(REUSE))

## the tests: unit tests, then notebooks 00.. through papermill on the tiny profile
test: $(STAMP) browser
	$(PY) -m pytest

test-fast: $(STAMP) browser
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_tiling.py
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_correlation.py
	$(PY) benchmarks/bench_confounders.py
	$(PY) benchmarks/bench_gsea.py

## GPU readiness (<= 5 min on one GPU): 02's feature extraction (the gtex profile's first network at its
## input size) and 03's torch correlation engine against NumPy, in tiles/s and seconds; without CUDA it
## says so and exits 0 (benchmarks/gpu_check.py --device cpu --small checks the script on a CPU)
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
