# paysaga — a menu of what you can do. `make help` lists it.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)
export PYTHONPATH := $(CURDIR):$(CURDIR)/gen

include mk/prereqs.mk
include mk/contract.mk
include mk/helm.mk
include mk/kafka.mk
include mk/postgres.mk
include mk/security.mk
include mk/services.mk
include mk/console.mk
include mk/faults.mk
include mk/bench.mk

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml | check-python
	@echo "==> creating $(VENV) and installing paysaga with its dev tools"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## create .venv and install the project (+ dev tools)

.PHONY: lint
lint: venv ## ruff lint + format check, mypy, the import contract (.importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

.PHONY: fmt
fmt: venv ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: test-unit
test-unit: venv ## unit tests (no external processes; store tests on SQLite)
	$(PY) -m pytest tests/unit -q -m 'not postgres'

.PHONY: test-integration
test-integration: venv check-java check-postgres ## integration tests: private Kafka broker/cluster, PostgreSQL and SQLite; store tests on PostgreSQL
	$(PY) -m pytest tests/integration -q
	$(PY) -m pytest tests/unit -q -m postgres

.PHONY: test-e2e
test-e2e: venv tools check-java check-postgres check-chromium ## end-to-end tests: real services called with grpcurl
	$(PY) -m pytest tests/e2e -q

.PHONY: test
test: check-prereqs check-postgres venv tools kafka-jars lint contract helm-check test-unit test-integration test-e2e test-faults ## everything CI runs
	@echo "==> all tests passed"
