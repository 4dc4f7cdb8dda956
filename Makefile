# Every target creates or refreshes .venv first, so each works from a fresh clone.
# The demo needs only the package; tests and lint add the dev tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    := $(VENV)/.installed-run
DEV    := $(VENV)/.installed-dev

.PHONY: install run test test-fast lint format demo bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $(RUN)

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV) $(RUN)

install: $(DEV)

test: $(DEV)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: $(DEV)
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The pipeline in the foreground (worker, beat, simulator); Ctrl-C stops it.
run: $(RUN)
	$(BIN)/sms-pipeline up

demo: $(RUN)
	$(BIN)/sms-pipeline demo

bench: $(RUN)
	$(BIN)/python -m bench

docs: $(RUN)
	$(BIN)/python scripts/gen_config_docs.py

clean:
	rm -rf $(VENV) .sms_pipeline .pytest_cache .mypy_cache .ruff_cache
