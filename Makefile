# spanflow task runner. `make demo` and `make test` work from a fresh clone: each sets up what it
# needs (virtualenv, packages, services) and cleans up what it started.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Installs that outlive a checkout (the Phoenix OTLP receiver) are cached per machine.
CACHE ?= $(HOME)/.cache/spanflow
PHOENIX_VENV := $(CACHE)/phoenix-20.26.1
PHOENIX := $(PHOENIX_VENV)/bin/phoenix
CHROMIUM ?= /usr/bin/chromium
DEMO_DB := .spanflow/demo.db

.PHONY: help venv demo test lint typecheck pytest services bench profile clean

help:
	@echo "make demo   - run the example support pipeline: it fails, replays after the fix, then forks with an edit"
	@echo "make test   - lint, type-check and run the whole test suite (installs what it needs)"
	@echo "make bench  - run the benchmarks in bench/ and print the figures"
	@echo "make profile - pyinstrument call trees of a step in a workflow and of a one-step run"
	@echo "               (PROFILE=step or PROFILE=run for one of them)"

# The demo needs spanflow alone; the tests add their extras (Ray, Dask, Playwright, ...).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e . --config-settings editable_mode=strict
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=strict
	touch $@

venv: $(VENV)/.installed-test

demo: $(VENV)/.installed
	@rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	SPANFLOW_DB=$(DEMO_DB) $(PY) examples/demo.py

$(PHOENIX):
	mkdir -p $(CACHE)
	rm -rf $(PHOENIX_VENV)
	$(PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install -q --disable-pip-version-check arize-phoenix==20.26.1

$(CHROMIUM):
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

services: $(PHOENIX) $(CHROMIUM)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy

# The suite starts Phoenix (and the browser) itself and stops them when it ends; the variables
# below make a missing service a failure rather than a skip.
pytest: venv services
	SPANFLOW_PHOENIX=$(PHOENIX) SPANFLOW_CHROMIUM=$(CHROMIUM) SPANFLOW_REQUIRE_SERVICES=1 \
		$(PY) -m pytest -q

test: lint typecheck pytest

# Peers run in a virtualenv of their own (they pin their own dependencies), with spanflow beside
# them so every framework is measured in the same process as the same bare OpenTelemetry span.
PEERS_VENV := $(CACHE)/bench-peers
PEERS := llama-index-workflows==2.26.1 langgraph==1.2.22 logfire==5.2.0

$(PEERS_VENV)/.installed: pyproject.toml
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --disable-pip-version-check $(PEERS)
	$(PEERS_VENV)/bin/pip install -q --disable-pip-version-check -e .
	touch $@

bench: venv $(PEERS_VENV)/.installed
	cd bench && ../$(PY) bench_core.py
	cd bench && ../$(PY) bench_store.py
	cd bench && ../$(PY) bench_serve.py
	cd bench && ../$(PY) bench_cli.py
	cd bench && ../$(PY) bench_executors.py
	cd bench && $(PEERS_VENV)/bin/python bench_peers.py

# PROFILE=step (a step inside a workflow), run (a one-step run) or both.
PROFILE ?= both
profile: venv
	cd bench && ../$(PY) profile_step.py --case $(PROFILE)

clean:
	rm -rf $(VENV) .spanflow .pytest_cache .mypy_cache .ruff_cache build *.egg-info
