# opentela: the two commands a new machine needs are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1

.PHONY: install test unit integration lint bench demo clean

$(BIN)/opentela-node: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/opentela-node

test: install lint
	$(BIN)/pytest -q tests

unit: install
	$(BIN)/pytest -q tests/unit

integration: install
	$(BIN)/pytest -q tests/integration

lint: install
	$(BIN)/ruff check opentela tests scripts

bench: install
	$(BIN)/python scripts/bench_overhead.py

demo: install
	$(BIN)/python scripts/demo_pool.py --host $(HOST)

clean:
	rm -rf $(VENV) .bench build *.egg-info
