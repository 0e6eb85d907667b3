# The README's commands. `make up` brings the local stack up in the background; `make test`
# runs lint, types and the test suite against real services, starting what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
BIN    := $(VENV)/bin
STATE  ?= $(CURDIR)/.local
export AGRITRACE_STATE_DIR := $(STATE)
export AGRITRACE_ENV_FILE  := $(STATE)/agritrace.env
PYTEST_ARGS ?=

.PHONY: help up down test lint typecheck pytest install system venv services migrate status reset bench

help:
	@echo "make up      start the whole local stack with demo data, in the background"
	@echo "make down    stop what make up started"
	@echo "make test    lint, type-check and run the tests (starts what they need)"
	@echo "make status  show what is running"
	@echo "make reset   stop and delete all local data (.local/)"

install: system venv

system:
	@bash deploy/local/install.sh

# Re-installs only when pyproject.toml changes.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check \
		--config-settings editable_mode=strict -e '.[dev]'
	@touch $@

services: install
	@bash deploy/local/stack.sh start

migrate: services
	@$(BIN)/agritrace db migrate

up: migrate
	@bash deploy/local/apps.sh start
	@echo
	@echo "AgriTrace is up:"
	@echo "  API        http://127.0.0.1:$${AGRITRACE_API_PORT:-8000}/docs   (health: /healthz)"
	@echo "  MQTT       127.0.0.1:$${AGRITRACE_MQTT_PORT:-18830}   (per-gateway credentials: .venv/bin/agritrace gateways create)"
	@echo "  PostgreSQL 127.0.0.1:$${AGRITRACE_PG_PORT:-55432}/agritrace   (settings in $(AGRITRACE_ENV_FILE))"
	@echo "  Logs       $(STATE)/log/    stop with: make down"

down:
	@bash deploy/local/apps.sh stop
	@bash deploy/local/stack.sh stop

status:
	@bash deploy/local/stack.sh status
	@bash deploy/local/apps.sh status

reset: down
	@rm -rf "$$(bash deploy/local/stack.sh data-root)" $(STATE)
	@echo "local data removed"

lint: venv
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

typecheck: venv
	@$(BIN)/mypy core api devices ingest trace dashboards tests $(wildcard bench/*.py)

pytest: services
	@$(BIN)/pytest $(PYTEST_ARGS)

test: services lint typecheck pytest
