# The two README commands: `make quickstart` (set up, then run the main job) and `make test` (set up, then test).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmops-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# llama-cpp-python builds from source: a portable build (AVX2, no -march=native), since some VMs report AMX that
# the hypervisor does not enable and a native build then dies on its first token.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export VENV

.PHONY: setup quickstart test sync bench clean

# torch is installed first and pinned: its CPU build; an unpinned resolve pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/llmops quickstart

# The test command: sync check, notebook tests, pytest, lint (the package included).
# Notebooks and tests write their scratch files under a private TMPDIR, removed when the run ends (pass or fail).
test: setup
	bash .ci/check_sync.sh
	scratch=$$(mktemp -d -t llmops-test.XXXXXX) && trap 'rm -rf "$$scratch"' EXIT && export TMPDIR=$$scratch && \
	$(BIN)/nbdev-test --flags slow && $(BIN)/pytest tests
	$(BIN)/ruff check llmops_kit tests benchmarks
	$(BIN)/ruff format --check llmops_kit tests benchmarks

# After editing notebooks: format them, export and format the modules, clean, rebuild the README.
sync: setup
	$(BIN)/ruff format -q nbs
	$(BIN)/nbdev-export
	$(BIN)/ruff format -q llmops_kit
	$(BIN)/nbdev-clean
	$(BIN)/jupyter nbconvert --log-level=ERROR --to markdown --output-dir . --output README nbs/index.ipynb

# Benchmarks: each writes benchmarks/results/NAME.json (peers install into benchmarks/.venv-*).
BENCHMARKS := embeddings drift guardrails router serving
bench: $(addprefix bench-,$(BENCHMARKS))
bench-%: setup
	$(BIN)/python benchmarks/$*.py

clean:
	rm -rf $(VENV) .llmops
