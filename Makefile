# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The oldest Python that pyproject.toml allows (requires-python), tried by `make test-py310`.
PYTHON310 ?= python3.10

.PHONY: demo test test-fast test-py310 install install-test lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/simclr demo

# Lint, types (mypy, configured in pyproject.toml), the import contracts (lint-imports), then
# every test.
test: install-test
	$(BIN)/ruff check simclr_cli tests examples benchmarks
	$(BIN)/ruff format --check simclr_cli tests examples benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# The tests without the `slow` marker: the quick loop while working.
test-fast: install-test
	$(BIN)/python -m pytest -q -m "not slow"

# The quick tests on Python 3.10, in their own virtual environment.
test-py310:
	$(MAKE) test-fast PYTHON=$(PYTHON310) VENV=.venv310

lint: install-test
	$(BIN)/ruff check --fix simclr_cli tests examples benchmarks
	$(BIN)/ruff format simclr_cli tests examples benchmarks

clean:
	rm -rf $(VENV) .venv310 build *.egg-info .pytest_cache .ruff_cache .mypy_cache \
		.import_linter_cache
