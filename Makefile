# Two commands on a fresh machine: `make demo` and `make test`. Every set-up step is
# idempotent and quick when already done.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export BROWSER_SESSIONS_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/browser_sessions
export BROWSER_SESSIONS_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/%2F

.PHONY: help venv chromium services promtool db test lint demo bench bench-crypto bench-liveview faults bench-writeback clean

help:
	@echo "make demo   - set everything up and run the end-to-end demo"
	@echo "make test   - set everything up and run the test suite"
	@echo "make bench  - benchmarks (browse throughput, crypto, live view)"
	@echo "make lint   - ruff and mypy"
	@echo "make faults - fault injection against private Postgres and RabbitMQ servers"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is needed (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install -q -e . --group dev
	@touch $(STAMP)

chromium:
	@bash deploy/dev/ensure-chromium.sh

services:
	@bash deploy/dev/ensure-services.sh

db: venv services
	@$(BIN)/browser-sessions migrate --create-database >/dev/null && echo "database ready: migrated"

promtool:
	@bash deploy/dev/ensure-promtool.sh

test: venv chromium services promtool
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: venv chromium db
	$(BIN)/browser-sessions demo

bench: venv chromium db bench-crypto bench-liveview
	$(BIN)/python -m workers.dev.bench.browse

# Its own Postgres and RabbitMQ (started on free ports, stopped at the end): needs the local
# server packages, which `services` installs when missing; never stops the shared servers.
faults: venv chromium services
	$(BIN)/python -m workers.dev.faults

bench-crypto: venv
	$(BIN)/python -m workers.dev.bench.crypto

bench-writeback: venv chromium db
	$(BIN)/python -m workers.dev.bench.writeback

bench-liveview: venv chromium
	$(BIN)/python -m workers.dev.bench.liveview

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
