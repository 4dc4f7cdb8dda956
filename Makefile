# Every target creates or refreshes .venv first, so each works from a fresh clone.
# The demo needs the package and its `demo` extra (plots); tests, lint and benchmarks add
# the dev tools. The production image installs requirements.lock only (see docs/security.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN    := $(VENV)/.installed-run
DEV    := $(VENV)/.installed-dev
LOCKT  := $(VENV)/.installed-lock
LOCK   := requirements.lock

.PHONY: install run test test-fast lint format demo bench bench-soak docs lock audit clean promtool

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $(RUN)

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV) $(RUN)

install: $(DEV)

# promtool checks and unit-tests config/alerts.yml (tests/unit/test_alert_rules.py). When it
# cannot be fetched the rule tests skip, or fail under CI=true.
$(BIN)/promtool: | $(BIN)/python
	-sh scripts/get_promtool.sh $(BIN)

promtool: $(BIN)/promtool

# Two test processes (pytest-xdist; each makes its own database and claims its own Redis
# db), a whole file to one process, so a file's tests keep their order and fixtures.
# TEST_PROCESSES=0 runs everything in this process.
TEST_PROCESSES ?= 2

test: $(DEV) promtool
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile --cov --cov-report=term $(PYTEST_ARGS)

test-fast: $(DEV) promtool
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

# lint-imports checks the layers ([tool.importlinter] in pyproject.toml).
lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(DEV)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The pipeline in the foreground (worker, beat, simulator); Ctrl-C stops it.
run: $(RUN)
	$(BIN)/sms-pipeline up

demo: $(RUN)
	$(BIN)/sms-pipeline demo

bench: $(DEV)
	$(BIN)/python -m bench

# Worker/beat RSS growth per message at a steady production mix (SOAK_MINUTES, default 30).
SOAK_MINUTES ?= 30
bench-soak: $(DEV)
	$(BIN)/python -m bench soak --minutes $(SOAK_MINUTES)

docs: $(RUN)
	$(BIN)/python scripts/gen_config_docs.py

$(LOCKT): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[lock]'
	touch $(LOCKT)

# The production lock (hashed), from pyproject.toml's base dependencies only: run after
# any dependency change. Existing pins are kept when still allowed (minimal churn); add
# PIP_COMPILE_ARGS=--upgrade to move everything to the newest allowed versions.
lock: $(LOCKT)
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-trusted-host --no-emit-find-links \
		--output-file $(LOCK) $(PIP_COMPILE_ARGS) pyproject.toml

# Known vulnerabilities in the locked versions. Needs the advisory database (network):
# a make target to run by hand or on a schedule, not a CI step. Fails (one line) when the
# database is not reachable or any package could not be audited (pip-audit --strict).
audit: $(LOCKT)
	$(BIN)/python scripts/audit.py $(BIN)/pip-audit $(LOCK)

clean:
	rm -rf $(VENV) .sms_pipeline .pytest_cache .mypy_cache .ruff_cache
