# The README's two commands are `make train` and `make test`. Each one sets up a fresh machine first
# (a virtual environment with the pinned, verified package set) and is a no-op set-up when it exists.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK=1
export RAY_USAGE_STATS_ENABLED=0
export MLFLOW_DISABLE_TELEMETRY=true
export DO_NOT_TRACK=true
export HF_HUB_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1
export TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export TOKENIZERS_PARALLELISM=false
export TORCH_EXTENSIONS_DIR=$(CURDIR)/.cache/torch_extensions

.PHONY: setup train smoke test test-fast clean

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip==26.3
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	$(VENV)/bin/pip check
	$(PY) -m pipeline.worker_env  # DeepSpeed's CPU collective op, compiled once here, not in the first job
	touch $@

setup: $(VENV)/.installed

# The main job on the embedded default: StepPrune on the committed SynthVQA backbone, local Ray, CPU.
train: setup
	$(PY) jobs/train.py

# Every registered method end to end on a tiny backbone built offline (kept tokens, tokens per layer, parity).
smoke: setup
	$(PY) -c "from pipeline.smoke import main; main()"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache
