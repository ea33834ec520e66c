# Set-up and checks. `make install && make test` is all a new user (and CI) runs.
PYTHON ?= python
TORCH_VERSION ?= 2.13.0

.PHONY: help install test test-full lint format bench gpu-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## torch 2.13.0 when none is installed (pip's default build: CUDA on Linux), then the project with all extras
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)"
	# transformers 4.37.2 pins huggingface_hub<1.0, which constrains datasets: resolve them in one command
	$(PYTHON) -m pip install -e ".[dev,sweep]"

test:  ## fast test suite (CPU, no network), what CI runs
	WANDB_MODE=offline $(PYTHON) -m pytest -m "not slow" -q

test-full:  ## every test, slow ones included
	WANDB_MODE=offline $(PYTHON) -m pytest -q

lint:  ## ruff: lint rules and the one code style (`make format` applies it)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:  ## ruff format + import sorting
	$(PYTHON) -m ruff check --fix --select I .
	$(PYTHON) -m ruff format .

bench:  ## MEGA vs Hugging Face speed and memory (writes the table printed for BENCHMARKS.md)
	$(PYTHON) -m experiments.bench_mega

gpu-check:  ## on a GPU: parity with CPU, bf16 vs fp32 demo, efficiency table, each recipe's step (sized for ≤ 8 min; BENCHMARKS.md)
	WANDB_MODE=offline $(PYTHON) -m experiments.gpu_check

clean:  ## remove run outputs and caches (keeps data/)
	rm -rf outputs multirun lightning_logs wandb .pytest_cache
