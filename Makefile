# The README's two commands: `make repro` and `make test`. Nothing else is needed beforehand but
# Python 3.11; the virtual environment is built from requirements.lock and rebuilt when it changes.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sgsr-installed
PROFILE ?= default
# default profile = the root dvc.yaml; any other profile is a folder under profiles/.
PIPELINE := $(if $(filter default,$(PROFILE)),dvc.yaml,profiles/$(PROFILE)/dvc.yaml)
PYTEST_ARGS ?=

.PHONY: setup repro test lint bench lock clean-venv

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

setup: $(STAMP)

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $(PIPELINE)
	@echo "Results: $(dir $(PIPELINE))results/summary.csv, report: $(dir $(PIPELINE))reports/report.html"

test: setup
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check src tests benchmarks

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run.py

# Refresh the lock after editing pyproject.toml's dependencies.
lock: setup
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	( echo "# Every package, transitive ones included, pinned. Regenerate: make lock (see README)."; \
	  $(BIN)/python -m pip freeze --exclude-editable ) > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

clean-venv:
	rm -rf $(VENV)
