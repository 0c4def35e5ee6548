# minseg: `make demo` and `make test` work on a fresh machine with Python >= 3.10.
# Inside an active virtualenv or conda env they use it; otherwise they create ./.venv.
PYTHON ?= python3
ifdef VIRTUAL_ENV
  ENV := $(VIRTUAL_ENV)
else ifdef CONDA_PREFIX
  ENV := $(CONDA_PREFIX)
else
  ENV := .venv
endif
BIN := $(ENV)/bin
STAMP := $(ENV)/.minseg-installed

.PHONY: install demo test test-fast lab book bench release clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(ENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: install            ## train a small model on the built-in data and save a figure
	$(BIN)/python -m minseg demo

test: install            ## unit tests, parity tests and every notebook (smoke profile)
	MINSEG_PROFILE=smoke $(BIN)/python -m pytest

test-fast: install       ## unit tests only
	MINSEG_PROFILE=smoke $(BIN)/python -m pytest tests

lab: install             ## open the lessons in JupyterLab
	$(BIN)/python -m jupyter lab notebooks/

book: install            ## execute the 20 lessons (cpu profile, reusing runs/cpu) and render book/_build/html
	$(BIN)/python tools/build_book.py --profile $(or $(PROFILE),cpu)

bench: install           ## benchmarks against named peers (minutes; prints tables)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf .pytest_cache build dist *.egg-info runs book/_build
