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

FORCE:
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

# Re-installs only when pyproject.toml changes or package files are added or removed (the strict
# editable install links each file, so a new module needs a re-install to be importable).
PACKAGE_DIRS := $(shell sed -n 's/^"agritrace[a-z.]*" = "\(.*\)"$$/\1/p' pyproject.toml)
venv: $(VENV)/.installed
$(VENV)/.sources: FORCE
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@find $(PACKAGE_DIRS) -type f \( -name '*.py' -o -name '*.sql' -o -name '*.html' -o -name '*.css' \
		-o -name '*.js' -o -name '*.json' -o -name '*.yaml' -o -name '*.typed' \) | sort > $@.new
	@cmp -s $@.new $@ && rm -f $@.new || mv $@.new $@
$(VENV)/.installed: pyproject.toml $(VENV)/.sources
	@echo "venv: installing the package and its dependencies into $(VENV)/"
	@$(BIN)/python -m pip install -q --disable-pip-version-check -U pip >$(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@$(BIN)/python -m pip install -q --disable-pip-version-check \
		--config-settings editable_mode=strict -e '.[dev]' >>$(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log; exit 1; }
	@touch $@

services: install
	@bash deploy/local/stack.sh start

migrate: services
	@$(BIN)/agritrace db migrate
	@$(BIN)/agritrace broker setup
	@$(BIN)/agritrace audit keygen >/dev/null
	@$(BIN)/agritrace trace demo >/dev/null

up: migrate
	@bash deploy/local/apps.sh start
	@echo
	@echo "AgriTrace is up:"
	@echo "  API        http://127.0.0.1:$${AGRITRACE_API_PORT:-8000}/docs   (health: /healthz)"
	@echo "  MQTT       127.0.0.1:$${AGRITRACE_MQTT_PORT:-18830} (services); gateways: TLS on port $${AGRITRACE_MQTT_TLS_PORT:-$$(( $${AGRITRACE_MQTT_PORT:-18830} + 1 ))}   (credentials and CA: .venv/bin/agritrace gateways create)"
	@echo "  PostgreSQL 127.0.0.1:$${AGRITRACE_PG_PORT:-55432}/agritrace   (settings in $(AGRITRACE_ENV_FILE))"
	@echo "  Logs       $(STATE)/log/    stop with: make down"
	@# The demo again, now that the simulator has provisioned its cold room: a lot stored there shows live readings.
	@$(BIN)/agritrace trace demo --json $(if $(filter 0,$(AGRITRACE_SIMULATOR)),,--simulator) 2>/dev/null \
		| $(BIN)/python -c 'import json, sys; c = json.load(sys.stdin)["codes"]; live = [x for x in c if x.get("live")]; \
		print("  Demo page  " + (live or c)[0]["url"] + ("   (a mango lot in the simulator cold room, live)" if live else ""))' \
		2>/dev/null || true

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
	@$(BIN)/python deploy/local/typecheck.py

pytest: migrate
	@$(BIN)/pytest $(PYTEST_ARGS)

test: services lint typecheck pytest
