# Thin aliases. `make demo` and `make test` set up .venv themselves on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 5000
STUDY  ?= lineage_lee
STUDIES = $(basename $(notdir $(wildcard conf/experiment/*.yaml)))
ARGS   ?=
STORE  := sqlite:///$(CURDIR)/mlruns/mlflow.db

.PHONY: install demo sweep tables test test-full lint ui bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to one release in pyproject.toml (an open range could pull a newer multi-GB
# CUDA build); on a CPU-only machine install the CPU build first (README.md).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# The demo's tables go to runs/demo/ (git-ignored): the checked-in experiments/ stay as they are.
demo: $(STAMP)  ## train every family on the embedded Lee corpus and print the table
	$(BIN)/lineage-train experiment=$(STUDY)
	$(BIN)/lineage-report experiment=$(STUDY) out_dir=$(CURDIR)/runs/demo/$(STUDY)
	@echo "Dashboard: make ui   (runs $(BIN)/mlflow ui --backend-store-uri $(STORE) --port $(PORT) --workers 1)"

sweep: $(STAMP)  ## a study's sweep (resumable), then its tables: make sweep STUDY=lineage_ptb ARGS='…'
	$(BIN)/lineage-train experiment=$(STUDY) $(ARGS)
	$(BIN)/lineage-report experiment=$(STUDY)

tables: $(STAMP)  ## every study's tables and runs.csv, from the store merged into runs.csv
	@failed=; for study in $(STUDIES); do $(BIN)/lineage-report experiment=$$study || failed="$$failed $$study"; done; \
	if [ -n "$$failed" ]; then echo "make tables: no tables for:$$failed (see above)" >&2; exit 1; fi

test: $(STAMP)  ## the default suite (slow tests excluded)
	$(BIN)/pytest

test-full: $(STAMP)  ## everything, including the slow reproductions
	$(BIN)/pytest -m ''

lint: $(STAMP)
	$(BIN)/ruff check lineage tests benchmarks
	$(BIN)/ruff format --check lineage tests benchmarks

ui: $(STAMP)  ## the MLflow dashboard on this project's store, at the study's runs table
	@echo "MLflow UI: $$($(BIN)/lineage-report experiment=$(STUDY) action=url ui.port=$(PORT))"
	$(BIN)/mlflow ui --backend-store-uri $(STORE) --port $(PORT) --workers 1

bench: $(STAMP)  ## n-gram benchmark on PTB: make bench PTB=/path/to/ptb
	@test -n "$(PTB)" || { echo "usage: make bench PTB=/path/to/ptb (the directory of ptb.train.txt)"; exit 2; }
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/ngram_ptb.py --data-dir $(PTB)

clean:
	rm -rf runs outputs .pytest_cache
