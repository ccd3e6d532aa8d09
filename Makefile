# Every target sets up what it needs: a fresh clone with Python 3.11+, git and make is enough.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint demo bench soak check clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

PORT ?= 8000

# Web + worker (with scheduler) + embedded Redis under ./var/ when REDIS_URL is unset.
run: $(STAMP)
	$(BIN)/lifecycle check rules.yaml
	@PORT=$(PORT) $(BIN)/lifecycle info
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -p $(PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/lifecycle check rules.yaml

# Plays the seed's story for six people against `make run`'s service (start it first, in
# another terminal), then prints what happened to each.
demo: $(STAMP)
	PORT=$(PORT) $(BIN)/lifecycle demo --url http://127.0.0.1:$(PORT)

bench: $(STAMP)
	$(BIN)/python -m bench

# The long variants: 10,000 generated payloads per source against the running server, and the
# fault suite (process kills, Redis outages, CRM storms) again, longer and with more kills.
# FAULT_SEED=<n> replays a fault run (each test prints its seed).
soak: $(STAMP)
	FUZZ_SERVER_COUNT=10000 FAULT_SOAK=1 $(BIN)/python -m pytest -q -s tests/test_server_fuzz.py \
		tests/test_faults.py tests/test_fault_storms.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
