# The README's two commands: `make repro` and `make test`. Nothing else is needed beforehand but
# Python 3.11; the virtual environment is built from requirements.lock and rebuilt when it changes.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sgsr-installed
PROFILE ?= default
# default profile = the root DVC project; any other profile is a DVC project of its own (a DVC
# subrepo, `dvc init --subdir`) in profiles/<name>/, sharing the root's cache and remote.
PIPELINE_DIR := $(if $(filter default,$(PROFILE)),.,profiles/$(PROFILE))
PYTEST_ARGS ?=

.PHONY: setup repro dry pull publish test lint bench lock clean-venv

$(STAMP): requirements.lock pyproject.toml setup.py src/sgsr/_cstencil.c src/sgsr/_cstencil_impl.h
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $@

setup: $(STAMP)

# `sgsr runs --write` first brings params.yaml's runs: block (the stage names dvc.yaml expands)
# in line with an edited experiment: matrix; it prints nothing when the block is current.
# `sgsr pull --absent` then fetches from published/ the weights of every run in dvc.lock whose
# folder is missing (a fresh clone), so published runs are not retrained (another machine's
# floats would change their hashes in dvc.lock); one line when it fetches or when a run in the
# lock is not published, nothing otherwise. Its DVC output goes to repro.log too.
# The terminal shows one line per stage (from sgsr), progress bars, warnings and errors; DVC's
# own per-stage chatter (stdout) goes to repro.log beside dvc.yaml. Every stage records the
# warnings it showed in one file, so each distinct warning appears once per `make repro`.
repro: setup
	@echo '$(PROFILE)' | grep -Eqx '[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}' || { echo "PROFILE '$(PROFILE)' is not a plain name (letters, digits and _ . + -; it names a folder in profiles/)"; exit 2; }
	@test -f $(PIPELINE_DIR)/dvc.yaml || { echo "no profile '$(PROFILE)': $(PIPELINE_DIR)/dvc.yaml not found"; exit 2; }
	@echo "dvc repro in $(PIPELINE_DIR) (profile $(PROFILE); DVC's log: $(PIPELINE_DIR)/repro.log)"
	@seen=$$(mktemp) && trap 'rm -f "$$seen"' EXIT && cd $(PIPELINE_DIR) && \
	PATH="$(CURDIR)/$(BIN):$$PATH" sgsr runs --write > /dev/null && \
	{ PATH="$(CURDIR)/$(BIN):$$PATH" sgsr pull --absent && \
	  SGSR_SEEN_WARNINGS=$$seen PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro; } > repro.log; \
	status=$$?; \
	if [ $$status -ne 0 ]; then echo "dvc repro failed (exit $$status); DVC's log: $(PIPELINE_DIR)/repro.log"; exit $$status; fi; \
	echo "$$(grep -c '^Running stage' repro.log) stage(s) ran, the others were up to date"; echo; \
	PATH="$(CURDIR)/$(BIN):$$PATH" sgsr results

# Trained weights carried in git (published/, a DVC remote): `dvc pull -r published` of every
# train stage's model folder, then `dvc repro prepare`; no network. Fails, naming the runs, when
# the profile's dvc.lock records weights that were never published.
pull: setup
	@test -f $(PIPELINE_DIR)/dvc.yaml || { echo "no profile '$(PROFILE)': $(PIPELINE_DIR)/dvc.yaml not found"; exit 2; }
	cd $(PIPELINE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" sgsr pull

# What `dvc repro` would run, stage by stage (`dvc repro --dry`), also on a fresh clone: there
# DVC 3.67's own dry run stops at the first stage whose input an earlier stage creates.
dry: setup
	@test -f $(PIPELINE_DIR)/dvc.yaml || { echo "no profile '$(PROFILE)': $(PIPELINE_DIR)/dvc.yaml not found"; exit 2; }
	cd $(PIPELINE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" sgsr dry

# After `make repro`: copy the profile's trained weights into published/ (`dvc push -r
# published`), to be committed with dvc.lock.
publish: setup
	@test -f $(PIPELINE_DIR)/dvc.lock || { echo "no $(PIPELINE_DIR)/dvc.lock: run make repro PROFILE=$(PROFILE) first"; exit 2; }
	cd $(PIPELINE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" sgsr publish

# --durations: the log lists the slowest tests (the whole suite's budget is 20 min on 2 cores).
# -n: test files run in TEST_WORKERS processes (pytest-xdist; a file's tests stay together, so
# module fixtures are built once); a single test averages about one core, so two workers keep
# both cores busy. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile \
	  --durations=25 $(PYTEST_ARGS)

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
