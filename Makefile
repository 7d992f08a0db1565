# Two commands for a new user: `make demo` and `make test`. Everything lands in $(LLMOPS_HOME).
SHELL := /bin/bash
export LLMOPS_HOME ?= $(CURDIR)/.llmops
ENVS := airflow worker serving standins

.PHONY: help envs demo ui test validate lint lock bench clean gpu-check gpu-wheels

help:
	@echo "make demo      prepare the environments and run every pipeline end to end on the local runtime"
	@echo "make ui        the Airflow UI with a real scheduler and the local stand-ins (Ctrl-C stops it)"
	@echo "make test      the whole test suite (starts and stops the local servers it needs)"
	@echo "make validate  check include/config/*.yaml"
	@echo "make lock      re-pin requirements*.txt from the .in files"
	@echo "make bench     run the benchmarks in bench/"
	@echo "make gpu-check the GPU acceptance kit on an NVIDIA GPU (ARGS=--dry-run: the same steps on the CPU)"
	@echo "make gpu-wheels download the wheels the kit carries to a bare CUDA image (into .gpu-wheels)"
	@echo "make clean     remove $(LLMOPS_HOME) (environments, artefacts, Milvus data, logs)"

envs:
	scripts/envs.sh $(ENVS)

demo: envs
	scripts/demo.sh

ui: envs
	scripts/ui.sh

test: envs
	scripts/test.sh

validate:
	scripts/envs.sh airflow
	source scripts/env.sh && python -m llmops validate

lint:
	scripts/envs.sh airflow
	source scripts/env.sh && ruff check . && lint-imports

bench: envs
	scripts/envs.sh bench
	source scripts/env.sh && for b in bench/*.py; do echo "== $$b"; python $$b || exit 1; done

gpu-check:
	scripts/gpu_check.sh $(ARGS)

gpu-wheels:
	scripts/gpu_wheels.sh

lock:
	scripts/lock.sh

clean:
	rm -rf $(LLMOPS_HOME)
