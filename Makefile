# The two commands a new user runs are `make up` and `make test`; both set up .venv on first use.
# `make up` installs only the runtime packages; `make test`, `make check` and the rest add the development
# extras. Both install the exact versions of requirements.lock (pip constraints).
# The virtualenv's interpreter: the distribution's /usr/bin/python3 when it is the lock's 3.11 and can make
# a virtualenv, else the first python3 on the PATH; `make PY=...` chooses another. Debian builds its
# CPython with PGO and LTO; a source build without them (pyenv's) spent 2-30 % more CPU per request in
# the edge and a region's API (docs/performance.md, "The edge against nginx after fewer calls ...").
PY ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' \
	2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
DATA_DIR ?= data

.PHONY: up test check fmt bench screenshots lambda lock clean

$(RUNTIME): pyproject.toml $(LOCK)
	@echo "installing the runtime packages into $(VENV) (about a minute the first time)..." >&2
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e .
	touch $(RUNTIME)

$(DEV): pyproject.toml $(LOCK)
	@echo "installing the runtime and development packages into $(VENV) (a few minutes the first time)..." >&2
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev]'
	touch $(RUNTIME) $(DEV)

## up: start the whole system on this machine (data kept in $(DATA_DIR)/)
up: $(RUNTIME)
	$(BIN)/bookstore up --data-dir $(DATA_DIR)

## test: every test: unit, contract, integration, system
test: $(DEV)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

## check: format, lint, types and the import contracts (pyproject [tool.importlinter])
check: $(DEV)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: $(DEV)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## bench: run the benchmarks and write their figures into docs/performance.md
bench: $(DEV)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx-light)
	$(BIN)/python -m bench

## lambda: the AWS Lambda package (build/lambda.zip: the project and its runtime dependencies) and its size
lambda: $(DEV)
	$(BIN)/python -m bookstore.cloud.package build/lambda.zip

## screenshots: the storefront's main pages and the operator page into docs/screenshots/
screenshots: $(DEV)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m tests.browser.screenshots

## lock: re-resolve requirements.lock after a change of pyproject.toml's dependencies (keeps what still fits)
lock:
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" --annotation-style line -o $(LOCK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
