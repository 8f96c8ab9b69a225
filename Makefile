# The two commands a new user runs are `make up` and `make test`; both set up .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data

.PHONY: up test check fmt bench screenshots clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## up: start the whole system on this machine (data kept in $(DATA_DIR)/)
up: $(STAMP)
	$(BIN)/bookstore up --data-dir $(DATA_DIR)

## test: every test: unit, contract, integration, system
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

## check: format, lint and types
check: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## bench: run the benchmarks and write their figures into docs/performance.md
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench

## screenshots: the storefront's main pages and the operator page into docs/screenshots/
screenshots: $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m tests.browser.screenshots

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
