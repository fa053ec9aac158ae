# ditlab — every target creates .venv and installs ditlab (editable) on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-full test-slow test-cluster lint format bench gpu-check clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip resolves torch to a CUDA build on Linux (~6 GB installed): say so up front when the disk is short.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@$(BIN)/python -c "import shutil; free = shutil.disk_usage('$(VENV)').free / 2**30; \
	free < 7 and print(f'warning: {free:.1f} GiB free for $(VENV); the install needs about 6 GiB (torch with its CUDA libraries)')"
	$(BIN)/python -m pip install --progress-bar off -e ".[test]"
	@touch $@

install: $(VENV)/.installed  ## create .venv and install ditlab with its test extras

train: install  ## run the default experiment (bundled digits, CPU); extra overrides via ARGS="..."
	$(BIN)/ditlab-train $(ARGS)

test: install lint  ## lint, then run the test suite (slow tests excluded)
	$(BIN)/python -m pytest -m "not slow and not cluster" $(ARGS)

test-full: install  ## run every test, slow ones included (not the Slurm cluster tests)
	$(BIN)/python -m pytest -m "not cluster" $(ARGS)

test-slow: install  ## only the slow end-to-end tests (what test-full adds to test; CI runs it after make test)
	$(BIN)/python -m pytest -m "slow and not cluster" $(ARGS)

# Root: installs Debian's slurm + munge packages if missing and adds "127.0.0.1 n1 n2" to /etc/hosts.
test-cluster: install  ## as root: start a throwaway 2-node Slurm cluster, run the tests marked cluster, stop it
	tools/slurm_cluster.sh start || { tools/slurm_cluster.sh stop; exit 1; }
	DITLAB_REQUIRE_CLUSTER=1 $(BIN)/python -m pytest -m cluster tests/test_cluster.py $(ARGS); \
	status=$$?; tools/slurm_cluster.sh stop; exit $$status

lint: install  ## ruff: lint and format check (settings in pyproject.toml)
	$(BIN)/ruff check src tests experiments
	$(BIN)/ruff format --check src tests experiments

format: install  ## ruff: fix what can be fixed and reformat
	$(BIN)/ruff check --fix src tests experiments
	$(BIN)/ruff format src tests experiments

bench: install  ## step overhead vs a plain PyTorch loop -> experiments/bench/step_overhead.json (ARGS="--overwrite")
	$(BIN)/python -m ditlab.tools.bench --only step_overhead $(ARGS)

gpu-check: install  ## GPU throughput/MFU/bf16/compile/DDP/FSDP check -> experiments/gpu_check/<device>.json
	$(BIN)/python -m ditlab.tools.gpu_check $(ARGS)

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf runs outputs multirun .pytest_cache
