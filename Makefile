# Two entry points (see README): `make figures` (the main job) and `make test`.
# Both create or reuse a local virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install figures test test-fast bench lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## the main job: every notebook on the default profile; figures copied to figures/
figures: $(STAMP)
	$(PY) -m histo_utils.run --profile default --publish figures

## the tests: unit tests, then notebooks 00.. through papermill on the tiny profile
test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_tiling.py
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_correlation.py
	$(PY) benchmarks/bench_confounders.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
