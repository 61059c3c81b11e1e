# Baton: the targets a newcomer can guess. Everything runs from a local .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BATON := $(VENV)/bin/baton
PYTEST_ARGS ?=
# What make test leaves to the deeper targets (each runs its own share).
DEEP := not chaos and not fidelity and not bench
TEST_WORKERS ?= 3  # pytest-xdist processes for make test (many tests wait on processes); 0: one
FIDELITY_EXAMPLES ?= 60

.PHONY: install demo up test test-fast fidelity lint format typecheck bench bench-throughput chaos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install  ## migrate a generated legacy DB through a rolling restart; verify it
	$(BATON) demo

up: install  ## embedded Redis, SQLite state DB, API on :8080 and two workers
	$(BATON) up

test: install  ## the suite (real Redis, PostgreSQL and worker processes), under 10 minutes
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal -m "$(DEEP)" $(PYTEST_ARGS)

test-fast: install  ## unit tests only: no services, seconds
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

fidelity: install  ## ~10 minutes: many generated tables of every type, each dialect into each
	BATON_TEST_FIDELITY_EXAMPLES=$(FIDELITY_EXAMPLES) $(PY) -m pytest tests/fidelity --timeout 1800 $(PYTEST_ARGS)
	$(PY) -m pytest -n $(TEST_WORKERS) -m fidelity --ignore=tests/fidelity $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check etl_tasks api worker ops tests
	$(VENV)/bin/ruff format --check etl_tasks api worker ops tests

format: install
	$(VENV)/bin/ruff format etl_tasks api worker ops tests
	$(VENV)/bin/ruff check --fix etl_tasks api worker ops tests

typecheck: install
	$(VENV)/bin/mypy

bench: install  ## deploy latency, rolling-deploy cost, recovery, throughput; against their goals
	$(PY) -m pytest -m bench $(PYTEST_ARGS)
	$(BATON) bench all

bench-throughput: install  ## 1M rows beside the COPY pipe and the scripts Baton replaces; ratios
	$(BATON) bench throughput

chaos: install  ## migrations under 50+ injected faults (kills, restarts, deploys); nothing lost
	$(PY) -m pytest -n $(TEST_WORKERS) -m chaos $(PYTEST_ARGS)
	$(BATON) chaos --tier long

clean:
	rm -rf $(VENV) .baton .baton-demo .pytest_cache .mypy_cache .ruff_cache *.egg-info
