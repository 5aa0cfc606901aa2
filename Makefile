# SAGA: `make run` and `make test` do everything on a fresh machine (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.saga-installed
# The checkout has a top-level operator/ folder (the package saga.operator). Never let the
# current directory onto sys.path, or it would shadow the standard library's `operator`.
export PYTHONSAFEPATH := 1

.PHONY: run test lint typecheck importlint unit integration e2e proto bench clean system-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Generated gRPC/protobuf code (saga/service/proto_gen) is built from protos/ by the package's build step.
proto: $(STAMP)
	@if [ -f scripts/gen_proto.py ]; then $(PY) scripts/gen_proto.py; fi

system-deps:
	@bash scripts/ensure-system-deps.sh

run: $(STAMP) proto
	$(VENV)/bin/saga run

lint: $(STAMP) proto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP) proto
	$(VENV)/bin/mypy -p saga
	$(VENV)/bin/mypy tests bench

importlint: $(STAMP) proto
	$(VENV)/bin/lint-imports

test: $(STAMP) system-deps proto lint typecheck importlint
	$(PY) -m pytest -q -p no:cacheprovider

unit: $(STAMP) proto
	$(PY) -m pytest -q -m unit

bench: $(STAMP) proto
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
