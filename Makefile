# The single source of truth for every gate. `make ci` runs them all.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(abspath $(VENV))/bin:$(HOME)/.cargo/bin:$(PATH)
PYTEST_ARGS ?=
# Python paths ruff checks; benches/ only once it exists.
RUFF_PATHS := python tests examples $(wildcard benches)

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.deps: requirements-dev.txt | setup
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.deps ## create the virtualenv with the dev tools

.PHONY: build-dev
build-dev: venv ## build the extension (debug) into the virtualenv
	$(BIN)/maturin develop -q

.PHONY: build-release
build-release: venv ## build the extension (release) into the virtualenv, for benchmarks
	$(BIN)/maturin develop -q --release

.PHONY: format
format: venv ## format Rust and Python
	cargo fmt
	$(BIN)/ruff format $(RUFF_PATHS)
	$(BIN)/ruff check --fix $(RUFF_PATHS)

.PHONY: lint
lint: venv ## ruff, cargo fmt --check, clippy
	$(BIN)/ruff check $(RUFF_PATHS)
	$(BIN)/ruff format --check $(RUFF_PATHS)
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

.PHONY: typecheck
typecheck: build-dev ## mypy --strict and stubtest
	$(BIN)/mypy --strict python/asyncq
	$(BIN)/python -m mypy.stubtest asyncq._core --allowlist .mypy-stubtest-allowlist

.PHONY: test-rust
test-rust: ## cargo test (starts its own redis-server)
	cargo test

.PHONY: test-python
test-python: build-dev ## pytest (starts its own redis-server processes)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test
test: test-rust test-python ## all tests

.PHONY: ci
ci: lint typecheck test ## every gate CI runs

.PHONY: setup
setup: ## install missing system packages (python3-venv, gcc, redis-server, Rust); needs root or sudo
	@bash .ci/setup

.PHONY: chaos
chaos: build-dev ## the full chaos suite (real Redis, killed workers, fault proxy); prints the table
	$(PY) -m tests.chaos.run --scale full --json chaos-results.json

.PHONY: chaos-smoke
chaos-smoke: build-dev ## the CI tier of the chaos suite: cases 1, 2, 4, 6 at small scale
	$(BIN)/pytest tests/chaos -m chaos -q $(PYTEST_ARGS)

.PHONY: demo
demo: build-dev ## enqueue and process thousands of example jobs
	$(BIN)/python -m examples.demo

.PHONY: bench
bench: build-release ## quick asyncq-only benchmark
	$(BIN)/python -m benches.run --quick
