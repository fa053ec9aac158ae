# ditlab — every target creates .venv and installs ditlab (editable) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-full bench gpu-check clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --progress-bar off -e ".[test]"
	@touch $@

install: $(VENV)/.installed  ## create .venv and install ditlab with its test extras

train: install  ## run the default experiment (bundled digits, CPU); extra overrides via ARGS="..."
	$(BIN)/ditlab-train $(ARGS)

test: install  ## run the test suite (slow tests excluded)
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

test-full: install  ## run every test, slow ones included
	$(BIN)/python -m pytest $(ARGS)

bench: install  ## step overhead vs a plain PyTorch loop -> experiments/bench/step_overhead.json (ARGS="--overwrite")
	$(BIN)/python -m ditlab.tools.bench --only step_overhead $(ARGS)

gpu-check: install  ## GPU throughput/MFU/bf16/compile/DDP/FSDP check -> experiments/gpu_check/<device>.json
	$(BIN)/python -m ditlab.tools.gpu_check $(ARGS)

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf runs outputs multirun .pytest_cache
